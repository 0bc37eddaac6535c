"""benchmarks/collect_call.py: a device call's queue folder filed under a new results folder."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("collect_call", ROOT / "benchmarks" / "collect_call.py")
collect_call = importlib.util.module_from_spec(spec)
spec.loader.exec_module(collect_call)


def test_collect_files_parts_logs_teachers_and_reports_cut_jobs(tmp_path: Path) -> None:
    w = tmp_path / "w"
    (w / "teachers").mkdir(parents=True)
    (w / "part_6.json").write_text(json.dumps({"runs": [{"label": "madl", "seed": 0, "test_accuracy": 0.70025},
                                                         {"label": "kdcrowd(madl)", "seed": 0, "test_accuracy": 0.7695}]}))
    (w / "proba").mkdir()
    (w / "part_11.json").write_text(json.dumps({"runs": [{"label": "madl", "seed": 1, "test_accuracy": 0.7}]}))
    (w / "part_6.log").write_text('[  1.0s] seed 0 madl\n{"out": "w/part_6.json", "runs": 2}\n')
    (w / "part_11.log").write_text("[  1.0s] seed 1 madl\nTerminated\n")  # the deadline stopped it after its teacher
    for name in ("part_10.log", "merged.json", "stray.txt", "teachers/madl_seed0.json", "teachers/madl_seed0.npz", "teachers/notes.txt",
                 "proba/madl_seed0.npz", "proba/notes.txt"):
        (w / name).write_text("x")
    archive = tmp_path / "w.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(w, arcname="w")
    dest = tmp_path / "results" / "call"
    lines = collect_call.collect(archive, dest)
    # jobs in line order (6 before 10), the cut ones named: one without a part, one cut after a run
    assert lines == ["part_6: madl seed 0 70.03, kdcrowd(madl) seed 0 76.95",
                     "part_10: no part (cut at the deadline or failed; see part_10.log)",
                     "part_11: madl seed 1 70.00 (cut after these runs: part_11.log lacks protocol.py's closing line)"]
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "merged.json", "part_10.log", "part_11.json", "part_11.log", "part_6.json", "part_6.log",
        "proba/madl_seed0.npz", "teachers/madl_seed0.json", "teachers/madl_seed0.npz"]
    with pytest.raises(SystemExit, match="exists"):  # an earlier call's folder is never overwritten
        collect_call.collect(archive, dest)
    with pytest.raises(SystemExit, match="no part_"):
        collect_call.collect(tmp_path / "results", tmp_path / "other")
