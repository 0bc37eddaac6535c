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
    # per seed, exactly: the stage, the row's final predictor, the baseline of the same seed and the difference
    assert protocol_table.stage_seed_lines(merged, "ensemble", "x") == [
        "kdcrowd(x), its ensemble, test per seed: seed 0: 60 (final 60.25, x 50: +10); seed 1: 51 (final 50); minus x: +10.0 (higher on 1, equal on 0 of 1); exactly: 60 against 50, difference +10.000"]


def test_a_kd_row_pairs_with_the_teacher_run_it_distilled() -> None:
    """A KD-Crowd row that trained its own teacher (``stages.teacher``) pairs with that run,
    not with the teacher's row of the same seed, which CUDA may have made one image apart."""
    kd = {**run("kdcrowd(x)", 0, 0.6455, 0.64, 60, "x"), "stages": {"teacher": {"test_accuracy": 0.6, "test_accuracy_val_selected": 0.61}}}
    merged = {"runs": [run("x", 0, 0.6025, 0.5955, 70), kd]}
    (line,) = protocol_table.kd_lines(merged)
    assert line == "kdcrowd(x) over x, seeds 0: +4.6 (+4.6: 1 of 1); over the teacher's best-validation epoch +3.6"


def test_validation_differences_round_from_the_counts() -> None:
    """Validation accuracies are float32 counts (608/1000 is 0.6080000400543213): their
    difference 60.85 − 60.0 = +0.85 reads +0.9, where the binary floats gave +0.8."""
    import numpy as np

    f32 = lambda k: float(np.float32(k / 1000))  # noqa: E731
    a = {**run("a", 0, 0.5, 0.5, 1), "val_last": f32(609)}
    b = {**run("a", 1, 0.5, 0.5, 1), "val_last": f32(608)}
    base = [{**run("mv", 0, 0.5, 0.5, 1), "val_last": f32(600)}, {**run("mv", 1, 0.5, 0.5, 1), "val_last": f32(600)}]
    (line,) = protocol_table.validation_lines({"runs": [a, b, *base]}, "mv")
    assert "minus mv: validation +0.9 ± 0.1" in line  # (0.9 + 0.8) / 2 = 0.85 exactly


def test_report_tables_round_half_up_from_the_exact_values(load_script) -> None:
    """benchmarks/report.py: 76.35 reads 76.4 (the binary mean 76.349999... read 76.3), a
    float32 validation accuracy counts as its count (0.6080000400543213 is 60.8), and a paired
    difference of exactly +0.45 points reads +0.5."""
    import numpy as np

    report = load_script("benchmarks/report")
    assert report._cell([0.7625, 0.7645]) == "76.4 ± 0.1"
    assert report._cell([0.8255]) == "82.6"
    assert report._cell([float(np.float32(0.608))]) == "60.8"
    d = {"runs": [{"label": "a", "seed": s, "x": a} for s, a in enumerate((0.6045, 0.6045))]
         + [{"label": "b", "seed": s, "x": b} for s, b in enumerate((0.6, 0.6))]}
    assert report.paired(d, "a", "b", key="x")["points"] == "+0.5"


def test_rows_without_an_epoch_of_their_own_show_none() -> None:
    # KD-Crowd's ensemble trains no epochs: its rows' best epoch is None, shown as "–" (was 0)
    merged = {"runs": [run("kd final=ensemble", s, 0.9, 0.9, None) for s in (0, 1)] + [run("kd", s, 0.9, 0.9, 7) for s in (0, 1)]}
    rows = protocol_table.rows(merged, "kd")
    assert any(r.startswith("| kd final=ensemble | 0–1 |") and "| – |" in r for r in rows)
    assert any(r.startswith("| kd | 0–1 |") and "| 7 |" in r for r in rows)


def test_r1_signs_by_the_value_not_its_rounding() -> None:
    # −0.04 read "+0.0": the sign came from the rounded value, and Decimal('-0.0') >= 0
    from decimal import Decimal

    assert [protocol_table.r1(Decimal(v), sign=True) for v in ("-0.04", "0", "0.04", "-0.05", "1.25")] == ["−0.0", "+0.0", "+0.0", "−0.1", "+1.3"]
    assert protocol_table.r1(Decimal("-0.04")) == "−0.0" and protocol_table.r1(Decimal("2.35")) == "2.4"


def test_paired_summary_by_hand() -> None:
    # differences 1 and 2: mean 1.5, std 0.7071; t(0.975, 1 df) = 12.706, so 1.5 ± 6.353; t against +1: 0.5 / 0.5
    from decimal import Decimal

    text = protocol_table.paired_summary([Decimal(90), Decimal(91)], [Decimal(89), Decimal(89)], target=1.0)
    assert text == "exactly: 90.5 against 89, difference +1.500 (std 0.707); 95 % interval of the mean difference −4.85 to 7.85; t against +1: 1.00"
    assert protocol_table.paired_summary([Decimal("88.5")], [Decimal(89)]) == "exactly: 88.5 against 89, difference −0.500"
