"""benchmarks/protocol.py in two calls: the teachers with --save-teacher-outputs, then
KD-Crowd over their files with --teacher-outputs, merged: the rows and the paired gain of
one call over the teacher in the same process (digits, a suite added for the test)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUITE = {"dataset": "digits", "dataset_options": {"workers": "maxmig-low-1"}, "backbone": "mlp", "train": {"epochs": 2, "batch_size": 128}}
COMMON = ["--suite", "protocol-digits-test", "--seeds", "0", "--no-clean", "--device", "cpu"]
#: What differs between two runs giving the same numbers: wall times, devices, and where the teacher came from.
VARYING = {"seconds", "train_seconds", "device", "from_file", "teacher_outputs"}


@pytest.fixture
def protocol(load_script: Any, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    mod = load_script("benchmarks/protocol")
    monkeypatch.setitem(mod.SUITES, "protocol-digits-test", SUITE)
    return mod


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    """The rows by label, without what varies and without the ensemble of every network,
    which needs the teacher's module (a run over saved teacher outputs has none)."""
    rows = {r["label"]: {k: v for k, v in r.items() if k not in VARYING} for r in json.loads(path.read_text())["runs"]}
    for r in rows.values():
        r["stages"] = {k: v for k, v in r["stages"].items() if k != "ensemble-all"}
    return rows


def test_teachers_then_kdcrowd_over_their_files_gives_the_one_call_rows(protocol: ModuleType, tmp_path: Path) -> None:
    one_call, call1, call2, merged = (tmp_path / f"{n}.json" for n in ("one_call", "call1", "call2", "merged"))
    protocol.main([*COMMON, "--methods", "annot-mix", "--kd-teachers", "annot-mix", "--out", str(one_call)])
    teachers = tmp_path / "teachers"
    protocol.main([*COMMON, "--methods", "annot-mix", "--kd-teachers", "--out", str(call1), "--save-teacher-outputs", str(teachers)])
    assert sorted(p.name for p in teachers.iterdir()) == ["annot-mix_seed0.json", "annot-mix_seed0.npz"]
    protocol.main([*COMMON, "--methods", "annot-mix", "--kd-teachers", "annot-mix", "--out", str(call2), "--teacher-outputs", str(teachers)])

    second = json.loads(call2.read_text())
    teacher_row = next(r for r in second["runs"] if r["label"] == "annot-mix")
    assert teacher_row["from_file"] == str(teachers / "annot-mix_seed0.json")  # not trained again
    kd_row = next(r for r in second["runs"] if r["label"] == "kdcrowd(annot-mix)")
    assert kd_row["teacher_outputs"] == str(teachers / "annot-mix_seed0.npz") and list(kd_row["stages"]) == ["teacher", "student", "stage2", "ensemble"]
    assert "ensemble-all" in next(r for r in json.loads(one_call.read_text())["runs"] if r["label"] == "kdcrowd(annot-mix)")["stages"]
    assert _rows(call2) == _rows(one_call)  # the teacher's row and KD-Crowd's, every stage, to the bit
    assert second["summary"] == json.loads(one_call.read_text())["summary"]  # the paired gain included
    assert second["summary"]["kd_gain"]["kdcrowd(annot-mix)"]["n"] == 1

    # merged: the teacher's row once, the trained one; the file's where only it is there
    protocol.main(["--suite", "protocol-digits-test", "--out", str(merged), "--merge", str(call1), str(call2)])
    both = json.loads(merged.read_text())
    assert [r["label"] for r in both["runs"]] == ["annot-mix", "kdcrowd(annot-mix)"] and "from_file" not in both["runs"][0]
    assert both["summary"] == second["summary"] and "teacher_rows_from_files" not in both
    acc = both["runs"][0]["test_accuracy"]  # the saved row, compared with the run it was saved from
    assert both["repeated_runs"] == [f"annot-mix seed 0: {acc}, {acc} (from {teachers / 'annot-mix_seed0.json'}) (same)"]
    protocol.main(["--suite", "protocol-digits-test", "--out", str(merged), "--merge", str(call2)])
    alone = json.loads(merged.read_text())
    assert alone["teacher_rows_from_files"] == [f"annot-mix seed 0: {teachers / 'annot-mix_seed0.json'}"]
    assert alone["summary"] == second["summary"]


def test_files_of_other_settings_or_missing_files_are_refused(protocol: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teachers, out = tmp_path / "teachers", tmp_path / "call2.json"
    protocol.main([*COMMON, "--methods", "annot-mix", "--kd-teachers", "--out", str(tmp_path / "call1.json"), "--save-teacher-outputs", str(teachers)])
    # KD-Crowd's ensemble of every network needs the teacher module: refused before --methods train
    with pytest.raises(SystemExit):
        protocol.main([*COMMON, "--methods", "mv", "--kd-teachers", "annot-mix", "--kd-options", "student=mixup,final=ensemble-all", "--out", str(out), "--teacher-outputs", str(teachers)])
    assert "final=ensemble-all averages the teacher's network" in capsys.readouterr().err and not out.exists()
    # other training settings: refused naming them, before any run (mv would run first)
    with pytest.raises(ValueError, match=r"another teacher than this run's \(train\.epochs: 2 → 3"):
        protocol.main([*COMMON, "--epochs", "3", "--methods", "mv", "--kd-teachers", "annot-mix", "--out", str(out), "--teacher-outputs", str(teachers)])
    assert not out.exists()
    with pytest.raises(SystemExit):
        protocol.main([*COMMON, "--methods", "--kd-teachers", "maxmig", "--out", str(out), "--teacher-outputs", str(teachers)])
    assert f"no {teachers / 'maxmig_seed0.npz'}, {teachers / 'maxmig_seed0.json'}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        protocol.main([*COMMON, "--methods", "--out", str(out), "--teacher-outputs", str(teachers)])
    assert "name them" in capsys.readouterr().err


def test_merge_refuses_a_part_of_another_suite(protocol: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    part, other, merged = tmp_path / "part.json", tmp_path / "other.json", tmp_path / "merged.json"
    protocol.main([*COMMON, "--methods", "mv", "--kd-teachers", "--out", str(part)])
    other.write_text(json.dumps({**json.loads(part.read_text()), "suite": "protocol-cifar10n"}))
    with pytest.raises(SystemExit):
        protocol.main(["--suite", "protocol-digits-test", "--out", str(merged), "--merge", str(part), str(other)])
    assert f"not --suite protocol-digits-test: {other} (protocol-cifar10n)" in capsys.readouterr().err and not merged.exists()
    # the same run in two parts: counted once (the last part's), and listed with both accuracies
    protocol.main(["--suite", "protocol-digits-test", "--out", str(merged), "--merge", str(part), str(part)])
    out = json.loads(merged.read_text())
    acc = out["runs"][0]["test_accuracy"]
    assert out["repeated_runs"] == [f"mv seed 0: {acc}, {acc} (same)"] and out["summary"]["methods"]["mv"]["test_last"]["n"] == 1


def test_queue_merges_each_suite_apart(tmp_path: Path) -> None:
    """benchmarks/protocol_queue.sh, two jobs at a time on the CPU, one of them naming its own
    --suite: merged.json holds the queue's suite, merged_<suite>.json the other's."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    # the queue runs "$PYTHON protocol.py ..." (and "$PYTHON -c CODE ..."): this wrapper adds the two test suites first
    wrapper = tmp_path / "py.py"
    wrapper.write_text(
        "import importlib.util, sys\n"
        "if sys.argv[1] == '-c':\n    sys.argv = sys.argv[2:]; exec(sys.argv[0]); sys.exit()\n"
        "spec = importlib.util.spec_from_file_location('protocol', sys.argv[1]); mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"mod.SUITES['protocol-digits-test'] = mod.SUITES['protocol-digits-test2'] = {SUITE!r}\n"
        "mod.main(sys.argv[2:])\n"
    )
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("# a comment\n--seeds 0 --methods mv --kd-teachers\n--suite protocol-digits-test2 --seeds 1 --methods mv --kd-teachers\n")
    env = {**os.environ, "SUITE": "protocol-digits-test", "P": "2", "DEADLINE": "500", "PYTHON": f"{sys.executable} {wrapper}",
           "PYTHONPATH": str(root / "src")}
    r = subprocess.run(["bash", str(root / "benchmarks/protocol_queue.sh"), str(tmp_path / "out"), str(jobs), "--device", "cpu"],
                       capture_output=True, text=True, timeout=500, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    mine, other = (json.loads((tmp_path / "out" / n).read_text()) for n in ("merged.json", "merged_protocol-digits-test2.json"))
    assert (mine["suite"], [(x["label"], x["seed"]) for x in mine["runs"]]) == ("protocol-digits-test", [("mv", 0)])
    assert (other["suite"], [(x["label"], x["seed"]) for x in other["runs"]]) == ("protocol-digits-test2", [("mv", 1)])


def test_queue_starts_no_job_with_less_than_min_left(tmp_path: Path) -> None:
    """benchmarks/protocol_queue.sh: with MIN_LEFT above DEADLINE no job starts (each is
    reported skipped), no part is written and the queue still exits 0."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("--seeds 0 --methods mv --kd-teachers\n--seeds 1 --methods mv --kd-teachers\n")
    env = {**os.environ, "SUITE": "protocol-digits-test", "P": "2", "DEADLINE": "100", "MIN_LEFT": "200", "PYTHON": "false"}
    r = subprocess.run(["bash", str(root / "benchmarks/protocol_queue.sh"), str(tmp_path / "out"), str(jobs)],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(line.split(" skipped")[0] for line in r.stdout.splitlines() if "skipped" in line) == ["job 1", "job 2"], r.stdout
    assert "MIN_LEFT=200" in r.stdout and not list((tmp_path / "out").glob("part_*"))


@pytest.mark.parametrize("gpus, p, expected", [("5 7", 4, {"5": 2, "7": 2}), ("5,7", 4, {"5": 2, "7": 2}), ("3", 2, {"-": 2}), ("", 2, {"-": 2})])
def test_queue_spreads_the_jobs_over_the_gpus(tmp_path: Path, gpus: str, p: int, expected: dict[str, int]) -> None:
    """benchmarks/protocol_queue.sh with several GPUs: each job starts on the GPU running the
    fewest of the queue's jobs (its own CUDA_VISIBLE_DEVICES); with one GPU or none the
    jobs' environment is left alone. A stand-in for python records each job's GPU."""
    import os
    import subprocess
    from collections import Counter

    root = Path(__file__).resolve().parents[1]
    seen = tmp_path / "seen"
    fake = tmp_path / "fake.sh"
    fake.write_text(f'echo "${{CUDA_VISIBLE_DEVICES:--}}" >> {seen}; sleep 2\n')  # four jobs overlap: each GPU is counted busy
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f"--seeds {s} --methods mv --kd-teachers\n" for s in range(sum(expected.values()))))
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(SUITE="protocol-digits-test", P=str(p), DEADLINE="100", PYTHON=f"bash {fake}", GPUS=gpus)
    r = subprocess.run(["bash", str(root / "benchmarks/protocol_queue.sh"), str(tmp_path / "out"), str(jobs)], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert Counter(seen.read_text().split()) == Counter(expected)
    assert all(("on GPU" in line) == (len(gpus.replace(",", " ").split()) > 1) for line in r.stdout.splitlines() if line.startswith("job "))


def test_kd_options_set_and_name_every_kdcrowd_row(protocol: ModuleType, tmp_path: Path) -> None:
    """--kd-options: the KD-Crowd rows over the teacher's saved outputs run with those
    KDCrowd options (here the mixup student) and are labelled by them, paired with the
    teacher's row; the teacher file of the default options is accepted."""
    teachers, out = tmp_path / "teachers", tmp_path / "kd.json"
    protocol.main([*COMMON, "--methods", "annot-mix", "--kd-teachers", "--out", str(tmp_path / "t.json"), "--save-teacher-outputs", str(teachers)])
    protocol.main([*COMMON, "--methods", "--kd-teachers", "annot-mix", "--kd-options", "student=mixup,lambda1=0.5", "--out", str(out), "--teacher-outputs", str(teachers)])
    res = json.loads(out.read_text())
    assert [r["label"] for r in res["runs"]] == ["annot-mix", "kdcrowd(annot-mix) student=mixup lambda1=0.5"]
    assert res["runs"][1]["options"] == {"teacher": "annot-mix", "student": "mixup", "lambda1": 0.5}
    assert res["summary"]["kd_gain"]["kdcrowd(annot-mix) student=mixup lambda1=0.5"]["teacher"] == "annot-mix"


def test_teachers_ranked_by_their_rows_and_variants_read_as_json(protocol: ModuleType, tmp_path: Path) -> None:
    """KD-Crowd's teachers left to the ranking find a crowd model run with --options by its
    row's label (it raised KeyError after every run had trained), and a --kd-variants value
    is read as JSON like --kd-options' (stages=1 was the text '1', refused)."""
    out = tmp_path / "r.json"
    protocol.main([*COMMON, "--methods", "annot-mix", "--options", "annot-mix:joint_pass=true", "--n-teachers", "1",
                   "--kd-variants", "stages=1", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["kd_teachers"] == ["annot-mix"] and res["runs"][0]["label"] == "annot-mix joint_pass=true"
    variant = res["runs"][-1]
    assert variant["label"] == "kdcrowd(annot-mix) stages=1" and variant["teacher"] == "annot-mix joint_pass=true"
    assert variant["options"]["stages"] == 1 and variant["options"]["joint_pass"] is True and set(variant["stages"]) == {"teacher", "student"}


def test_queue_merges_the_parts_in_job_order(tmp_path: Path) -> None:
    """Parts merge as jobs 1, 2, ..., 9, 10 (the last row of a label and seed wins, so the
    order picks the row a KD-Crowd row pairs with); the glob's text order put part_10 before
    part_9. And --save-teacher-outputs is refused with a job naming its own --suite: the
    teacher files (by method and seed) of the two suites would overwrite each other."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    out.mkdir()
    row = lambda acc: {"label": "mv", "seed": 0, "test_accuracy": acc, "test_accuracy_val_selected": acc, "val_last": 0.5, "teacher": None}  # noqa: E731
    for n, acc in ((9, 0.61), (10, 0.62)):
        (out / f"part_{n}.json").write_text(json.dumps({"suite": "protocol-labelme", "command": f"job {n}", "runs": [row(acc)], "wall_seconds": 1.0}))
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("--seeds 0 --methods mv --kd-teachers\n")
    env = {**os.environ, "SUITE": "protocol-labelme", "DEADLINE": "100", "MIN_LEFT": "200", "PYTHON": sys.executable, "PYTHONPATH": str(root / "src")}
    r = subprocess.run(["bash", str(root / "benchmarks/protocol_queue.sh"), str(out), str(jobs)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    merged = json.loads((out / "merged.json").read_text())
    assert merged["parts"] == ["job 9", "job 10"] and merged["summary"]["methods"]["mv"]["test_last"]["mean"] == 0.62
    jobs.write_text("--seeds 0 --methods mv --kd-teachers\n--suite protocol-cifar10n --seeds 0 --methods annot-mix --kd-teachers\n")
    r = subprocess.run(["bash", str(root / "benchmarks/protocol_queue.sh"), str(tmp_path / "out2"), str(jobs), "--save-teacher-outputs", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "separate queues" in r.stderr and not (tmp_path / "out2").exists()
    # the = form too; a job naming the queue's own suite overwrites nothing
    r = subprocess.run(["bash", str(root / "benchmarks/protocol_queue.sh"), str(tmp_path / "out3"), str(jobs), f"--save-teacher-outputs={tmp_path / 't'}"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "--suite protocol-cifar10n" in r.stderr
    jobs.write_text("--suite protocol-labelme --seeds 0 --methods mv --kd-teachers\n")
    r = subprocess.run(["bash", str(root / "benchmarks/protocol_queue.sh"), str(tmp_path / "out4"), str(jobs), "--save-teacher-outputs", str(tmp_path / "t")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and "skipped" in r.stdout, r.stdout + r.stderr


def test_save_proba_writes_each_runs_last_epoch_probabilities_and_changes_no_row(protocol: ModuleType, tmp_path: Path) -> None:
    import numpy as np

    plain, saved, folder = tmp_path / "plain.json", tmp_path / "saved.json", tmp_path / "proba"
    args = [*COMMON, "--methods", "annot-mix", "--kd-teachers", "annot-mix", "--kd-options", "final=ensemble-all"]
    protocol.main([*args, "--out", str(plain)])
    protocol.main([*args, "--out", str(saved), "--save-proba", str(folder)])
    assert _rows(saved) == _rows(plain)  # predicting the splits once more leaves every run as it was
    assert sorted(p.name for p in folder.iterdir()) == ["annot-mix_seed0.npz", "kdcrowd(annot-mix)_final_ensemble-all_seed0.npz"]
    for row in json.loads(saved.read_text())["runs"]:
        z = np.load(protocol.proba_file(folder, row["label"], 0))
        assert z["test"].dtype == np.float32 and z["test"].shape == (len(z["y_test"]), 10) and z["val"].shape == (len(z["y_val"]), 10)
        # the last epoch's predictions: the row's last-epoch test accuracy, and its validation accuracy
        assert float(np.mean(z["test"].argmax(1) == z["y_test"])) == row["test_accuracy"]
        assert float(np.mean(z["val"].argmax(1) == z["y_val"])) == pytest.approx(row["val_last"])
