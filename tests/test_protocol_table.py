"""benchmarks/protocol_table.py: the §7g table rows and KD-Crowd gains, with exact half-up rounding."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("protocol_table", ROOT / "benchmarks" / "protocol_table.py")
protocol_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(protocol_table)


def run(label: str, seed: int, test: float, selected: float, epoch: int, teacher: str | None = None) -> dict:
    return {"label": label, "seed": seed, "test_accuracy": test, "test_accuracy_val_selected": selected, "best_epoch": epoch, "teacher": teacher}


MERGED = {"runs": [
    run("mv", 0, 0.55, 0.7, 22), run("mv", 1, 0.5485, 0.71, 28),
    # gains over MV of exactly 5.25 points on both seeds, which read +5.3; in binary floats
    # 60.25 − 55.0 is 5.2499…, which would read +5.2
    run("crowdlayer-vw", 0, 0.6025, 0.5955, 70), run("crowdlayer-vw", 1, 0.601, 0.6125, 90),
    run("kdcrowd(crowdlayer-vw)", 0, 0.6455, 0.64, 60, "crowdlayer-vw"), run("kdcrowd(crowdlayer-vw)", 1, 0.5985, 0.6, 61, "crowdlayer-vw"),
    run("tracereg", 0, 0.549, 0.7, 22),
]}


def test_rows_sorted_rounded_and_paired() -> None:
    rows = protocol_table.rows(MERGED)
    assert [r.split(" | ")[0] for r in rows] == ["| kdcrowd(crowdlayer-vw)", "| crowdlayer-vw", "| mv", "| tracereg"]
    assert 0.6025 * 100 - 0.55 * 100 < 5.25  # the float difference falls below the exact half
    assert rows[1] == "| crowdlayer-vw | 0–1 | 60.2 ± 0.1 | 60.4 ± 1.2 | 70–90 | +5.3 |"
    assert rows[2] == "| mv | 0–1 | 54.9 ± 0.1 | 70.5 ± 0.7 | 22–28 | – |"
    assert rows[3] == "| tracereg | 0 | 54.9 | 70.0 | 22 | −0.1 |"  # seed 0 only, paired with MV's seed 0


def test_kd_gain_per_seed_over_the_teacher() -> None:
    (line,) = protocol_table.kd_lines(MERGED)
    # seed 0: 64.55 − 60.25 = +4.3 (over the best-validation epoch 64.55 − 59.55 = +5.0);
    # seed 1: 59.85 − 60.1 = −0.25 → −0.3 (59.85 − 61.25 = −1.4)
    assert line.startswith("kdcrowd(crowdlayer-vw) over crowdlayer-vw, seeds 0–1: +2.0 ± 3.2 (+4.3, −0.3: 1 of 2)")
    assert line.endswith("over the teacher's best-validation epoch +5.0, −1.4")


def test_main_prints_the_table(tmp_path: Path, capsys) -> None:
    f = tmp_path / "merged.json"
    f.write_text(json.dumps(MERGED))
    protocol_table.main([str(f)])
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| method | seeds |") and "| crowdlayer-vw | 0–1 |" in out and "1 of 2" in out


def test_validation_lines_pair_each_label_with_the_baseline() -> None:
    """--validation: a variant's last-epoch validation accuracy and its paired differences
    from the baseline on validation and on test, exact half-up (0.8505 − 0.8480 = +0.25 → +0.3)."""
    merged = {"runs": [
        {**run("kd", 0, 0.8800, 0.88, 10), "val_last": 0.8480}, {**run("kd", 1, 0.8900, 0.89, 10), "val_last": 0.8600},
        {**run("kd mixup", 0, 0.8790, 0.88, 10), "val_last": 0.8505}, {**run("kd mixup", 1, 0.8900, 0.89, 10), "val_last": 0.8640},
        {**run("other", 3, 0.5, 0.5, 1), "val_last": 0.5},  # no seed in common with the baseline: no line
    ]}
    (line,) = protocol_table.validation_lines(merged, "kd")
    assert line == ("kd mixup, seeds 0–1: validation 85.7 ± 1.0; minus kd: validation +0.3 ± 0.1 (higher on 2, equal on 0 of 2), "
                    "test −0.1 ± 0.1 (higher on 0, equal on 1 of 2)")


def test_stage_lines_pair_a_stage_with_the_final_predictor() -> None:
    kd = lambda seed, test, val, e_test, e_val: {**run("kdcrowd(x)", seed, test, test, 30, "x"), "val_last": val, "final_stage": "stage2",  # noqa: E731
                                                  "stages": {"ensemble": {"test_accuracy": e_test, "val_last": e_val}, "student": {"test_accuracy": 0.5}}}
    merged = {"runs": [kd(0, 0.6025, 0.7, 0.6, 0.71), kd(1, 0.5, 0.6, 0.51, 0.6), run("x", 0, 0.5, 0.5, 3)]}
    (line,) = protocol_table.stage_lines(merged, "ensemble")
    # seed 0: test 60.0 − 60.25 = −0.25 (reads −0.3), validation +1.0; seed 1: test +1.0, validation 0
    assert line == ("kdcrowd(x), its ensemble, seeds 0–1: test 55.5 ± 6.4, validation 65.5 ± 7.8; minus the final predictor (stage2): "
                    "validation +0.5 ± 0.7 (higher on 1, equal on 1 of 2), test +0.4 ± 0.9 (higher on 1, equal on 0 of 2)")
    assert protocol_table.stage_lines(merged, "student") == []  # no validation accuracy recorded: nothing to pair
