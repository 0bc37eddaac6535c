"""The examples in examples/ run and do what they say."""

from __future__ import annotations



def test_own_training_loop_beats_majority_vote(load_script) -> None:
    out = load_script("examples/own_training_loop").main(steps=150)
    # 2 reliable workers among 4 random ones: majority vote is near 0.58 (measured), the
    # crowd model and the distilled student recover the truth.
    assert out["majority_vote"] < 0.7
    assert out["teacher"] > out["majority_vote"] + 0.25
    assert out["student"] > out["majority_vote"] + 0.25
    assert out["teacher_matrix_mae"] < 0.06
