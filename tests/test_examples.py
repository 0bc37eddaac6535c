"""The examples in examples/ run and do what they say."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _load(name: str):
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_own_training_loop_beats_majority_vote() -> None:
    out = _load("own_training_loop").main(steps=150)
    # 2 reliable workers among 4 random ones: majority vote is near 0.58 (measured), the
    # crowd model and the distilled student recover the truth.
    assert out["majority_vote"] < 0.7
    assert out["teacher"] > out["majority_vote"] + 0.25
    assert out["student"] > out["majority_vote"] + 0.25
    assert out["teacher_matrix_mae"] < 0.06
