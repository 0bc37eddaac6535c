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
    for name in ("part_6.log", "part_10.log", "merged.json", "stray.txt", "teachers/madl_seed0.json", "teachers/madl_seed0.npz", "teachers/notes.txt"):
        (w / name).write_text("x")
    archive = tmp_path / "w.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(w, arcname="w")
    dest = tmp_path / "results" / "call"
    lines = collect_call.collect(archive, dest)
    # jobs in line order (6 before 10), the cut one named
    assert lines == ["part_6: madl seed 0 70.03, kdcrowd(madl) seed 0 76.95",
                     "part_10: no part (cut at the deadline or failed; see part_10.log)"]
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) == [
        "merged.json", "part_10.log", "part_6.json", "part_6.log", "teachers/madl_seed0.json", "teachers/madl_seed0.npz"]
    with pytest.raises(SystemExit, match="exists"):  # an earlier call's folder is never overwritten
        collect_call.collect(archive, dest)
    with pytest.raises(SystemExit, match="no part_"):
        collect_call.collect(tmp_path / "results", tmp_path / "other")
