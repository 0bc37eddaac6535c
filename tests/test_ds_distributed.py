"""Dawid–Skene sharded over ``torch.distributed`` ranks (CPU, gloo, 2 processes).

Each rank takes its share of the annotations by item (:func:`shard_by_item`) and runs
``dawid_skene(..., distributed=True)``; the M-step's counts are all-reduced, so the two
ranks together must give what one process gives on all the annotations.
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from kdcrowd import distributed as D
from kdcrowd.aggregation import dawid_skene, shard_by_item

WORLD = 2
# (criterion, prior): crowd-kit's stopping rule and proper EM, with and without the prior
CASES = [("crowdkit", 1.0), ("crowdkit", 0.0), ("loglik", 1.0)]


def _crowd(seed: int = 0, n: int = 1500, m: int = 40, k: int = 4, per_item: int = 4) -> tuple[SimpleNamespace, np.ndarray]:
    """Workers of varied skill; 30 items nobody labelled; items in a shuffled order."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    item = np.repeat(rng.permutation(n)[: n - 30], per_item)
    worker = rng.integers(0, m, len(item))
    skill = rng.uniform(0.35, 0.95, m)[worker]
    label = np.where(rng.random(len(item)) < skill, truth[item], rng.integers(0, k, len(item)))
    order = rng.permutation(len(item))
    ann = SimpleNamespace(item=item[order], worker=worker[order], label=label[order], n_items=n, n_workers=m, n_classes=k)
    return ann, truth


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    D.init_from_env(backend="gloo", timeout=datetime.timedelta(seconds=60))
    try:
        ann, _ = _crowd()
        shard = shard_by_item(ann, rank, world)
        results = {}
        for criterion, prior in CASES:
            res = dawid_skene(shard, criterion=criterion, prior=prior, distributed=True)
            results[(criterion, prior)] = res
        torch.save({"items": shard.items, "n_annotations": len(shard.item), "results": results}, Path(out) / f"rank{rank}.pt")
    finally:
        D.cleanup()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ds_dist")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_shard_by_item_partitions_items_and_annotations() -> None:
    ann, _ = _crowd()
    shards = [shard_by_item(ann, r, 3) for r in range(3)]
    items = np.concatenate([s.items for s in shards])
    np.testing.assert_array_equal(np.sort(items), np.arange(ann.n_items))  # every item once
    sizes = [len(s.item) for s in shards]
    assert sum(sizes) == len(ann.item) and max(sizes) - min(sizes) <= 4 * 2  # balanced by annotations
    # each shard's rows are the original annotations of its items, indices mapped back
    for s in shards:
        got = sorted(zip(s.items[s.item], s.worker, s.label))
        sel = np.isin(ann.item, s.items)
        assert got == sorted(zip(ann.item[sel], ann.worker[sel], ann.label[sel]))
        assert s.n_workers == ann.n_workers and s.n_classes == ann.n_classes
    one = shard_by_item(ann, 0, 1)
    np.testing.assert_array_equal(one.items, np.arange(ann.n_items))
    with pytest.raises(ValueError, match="rank"):
        shard_by_item(ann, 2, 2)


def test_two_ranks_give_the_one_rank_result(ranks: list[dict]) -> None:
    ann, truth = _crowd()
    assert sum(r["n_annotations"] for r in ranks) == len(ann.item)
    assert len(ranks[0]["items"]) and len(ranks[1]["items"])
    for criterion, prior in CASES:
        ref = dawid_skene(ann, criterion=criterion, prior=prior)
        assert (ref.labels[ref.labels >= 0] == truth[ref.labels >= 0]).mean() > 0.8
        parts = [r["results"][(criterion, prior)] for r in ranks]
        # same iterations, same stopping decision, same global parameters on both ranks
        for res in parts:
            assert res.n_iter == ref.n_iter and res.converged == ref.converged, (criterion, prior)
            np.testing.assert_allclose(res.transitions, ref.transitions, rtol=0, atol=1e-10)
            np.testing.assert_allclose(res.priors, ref.priors, rtol=0, atol=1e-12)
            np.testing.assert_allclose(res.log_likelihood, ref.log_likelihood, rtol=1e-12)
            np.testing.assert_allclose(res.objective, ref.objective, rtol=1e-12)
        # each rank's items: the one-process labels and posteriors
        labels = np.full(ann.n_items, -2)
        post = np.zeros((ann.n_items, ann.n_classes))
        for r, res in zip(ranks, parts):
            labels[r["items"]] = res.labels
            post[r["items"]] = res.posteriors
        np.testing.assert_array_equal(labels, ref.labels)
        np.testing.assert_allclose(post, ref.posteriors, rtol=0, atol=1e-10)


def test_distributed_flag_without_a_process_group_is_one_process() -> None:
    ann, _ = _crowd(n=300)
    a = dawid_skene(ann, distributed=True)
    b = dawid_skene(ann)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.posteriors, b.posteriors, rtol=0, atol=0)
