"""Models are built from generators derived from the seed: the same seed gives the same
numbers on the CPU, and building a model leaves the caller's random state alone."""

from __future__ import annotations

import torch

from kdcrowd.methods import RunConfig, run_on_dataset
from kdcrowd.training import TrainConfig, seeded
from test_methods import tiny_dataset


def test_seeded_builds_the_same_module_and_restores_the_callers_state() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    with seeded(7):
        a = torch.nn.Linear(5, 3)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded(7):
        b = torch.nn.Linear(5, 3)
    with seeded(8):
        c = torch.nn.Linear(5, 3)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_the_same_seed_gives_the_same_run_on_the_cpu() -> None:
    ds = tiny_dataset()
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(999 + len(runs))  # whatever the caller's state, the run depends on its seed only
        cfg = RunConfig(dataset="tiny", method="kdcrowd", seed=seed, train=TrainConfig(epochs=2, batch_size=32, lr=3e-3, progress=False, device="cpu"), options={"stages": 1})
        metrics, _ = run_on_dataset(ds, cfg)
        runs.append([r["loss"] for r in metrics["history"]] + [metrics["test_accuracy"]])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_fit_leaves_the_callers_random_state_alone() -> None:
    """Training draws from generators seeded by its config inside a fork of the global
    ones: the caller's torch and numpy states are the same afterwards."""
    import numpy as np

    torch.manual_seed(5)
    np.random.seed(5)
    before_t, before_n = torch.get_rng_state(), np.random.get_state()[1].copy()
    cfg = RunConfig(dataset="tiny", method="mv", seed=1, train=TrainConfig(epochs=2, batch_size=32, lr=3e-3, progress=False, device="cpu"))
    run_on_dataset(tiny_dataset(), cfg)
    assert torch.equal(torch.get_rng_state(), before_t)
    assert np.array_equal(np.random.get_state()[1], before_n)
