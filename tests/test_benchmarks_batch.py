"""benchmarks/batch.py without running any suite: job parsing, merging of parts and suite
files (plain JSON, gzip JSON and the tar.gz that ``pack`` writes) and the completeness check.

The script is loaded like the other benchmark scripts in test_benchmarks_smoke.py (it puts
``benchmarks/`` on ``sys.path`` itself, for ``suite`` and ``report``).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest

@pytest.fixture(scope="module")
def batch(load_script):
    return load_script("benchmarks/batch")


def _run(label: str, seed: int, acc: float, **extra: Any) -> dict[str, Any]:
    return {"label": label, "seed": seed, "test_accuracy": acc, **extra}


def _doc(suite: str, runs: list[dict[str, Any]], wall: float, command: str, device: str | None = "cpu (test)") -> dict[str, Any]:
    return {"suite": suite, "command": command, "versions": {"torch": "x.y"}, "device": device, "wall_seconds": wall, "runs": runs}


def _merge(batch, monkeypatch, tmp_path: Path, inputs: list[Path], *options: str) -> Path:
    into = tmp_path / "merged"
    argv = ["batch.py", "merge", *map(str, inputs), "--into", str(into), "--prefix", "t_", *options]
    monkeypatch.setattr(sys, "argv", argv)
    batch.main()
    return into


# --------------------------------------------------------------------------------------
# parse_job
# --------------------------------------------------------------------------------------
def test_parse_job(batch) -> None:
    assert batch.parse_job("smoke:0-2") == [("smoke", 0), ("smoke", 1), ("smoke", 2)]
    assert batch.parse_job("smoke:1,3") == [("smoke", 1), ("smoke", 3)]
    assert batch.parse_job("smoke") == [("smoke", 0)]
    assert batch.parse_job("smoke:4") == [("smoke", 4)]
    assert batch.parse_job("table2-cifar10n:0-1,4") == [("table2-cifar10n", s) for s in (0, 1, 4)]
    with pytest.raises(SystemExit, match="no-such-suite"):
        batch.parse_job("no-such-suite:0-4")


# --------------------------------------------------------------------------------------
# merge
# --------------------------------------------------------------------------------------
def test_merge_deduplicates_first_wins_and_sums_wall_time(batch, monkeypatch, tmp_path: Path) -> None:
    # a plain suite file...
    plain = tmp_path / "earlier_smoke_suite.json"
    plain.write_text(json.dumps(_doc("smoke", [_run("mv", 0, 0.10), _run("maxmig", 0, 0.20), _run("mv", 1, 0.30)], 10.0, "cmd-a")))
    # ...and the parts of a batch run as pack() writes them (JSON parts and logs at the root)
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "smoke.seed0.json").write_text(json.dumps(_doc("smoke", [_run("mv", 0, 0.99), _run("kdcrowd(maxmig) mig-kl", 0, 0.40)], 5.0, "cmd-b", device=None)))
    (parts / "smoke.seed1.json").write_text(json.dumps(_doc("smoke", [_run("maxmig", 1, 0.50), _run("mv", 1, 0.98)], 2.5, "cmd-c")))
    (parts / "smoke.seed0.log").write_text("a log, not a part\n")
    (parts / "table2-cifar10n.seed0.json").write_text(json.dumps(_doc("table2-cifar10n", [_run("clean", 0, 0.9)], 1.0, "cmd-d")))
    tar = tmp_path / "parts.tar.gz"
    batch.pack(parts, tar)

    into = _merge(batch, monkeypatch, tmp_path, [plain, tar])
    assert sorted(p.name for p in into.iterdir()) == ["t_smoke_suite.json", "t_table2-cifar10n_suite.json"]
    out = json.loads((into / "t_smoke_suite.json").read_text())
    assert out["suite"] == "smoke"
    # one run per (label, seed), the first input's copy kept, sorted by seed and suite order
    got = [(r["label"], r["seed"], r["test_accuracy"]) for r in out["runs"]]
    assert got == [("mv", 0, 0.10), ("maxmig", 0, 0.20), ("kdcrowd(maxmig) mig-kl", 0, 0.40), ("mv", 1, 0.30), ("maxmig", 1, 0.50)]
    assert out["wall_seconds"] == pytest.approx(10.0 + 5.0 + 2.5)
    assert out["command"] == "cmd-a ; cmd-b ; cmd-c"
    assert out["device"] == "cpu (test)" and out["versions"] == {"torch": "x.y"}
    assert out["composed"] == [] and "merge" in out["merged_by"]
    other = json.loads((into / "t_table2-cifar10n_suite.json").read_text())
    assert [(r["label"], r["seed"]) for r in other["runs"]] == [("clean", 0)] and other["wall_seconds"] == 1.0

    # the other input order: now the parts' copies win
    into2 = _merge(batch, monkeypatch, tmp_path / "rev", [tar, plain], "--suites", "smoke")
    assert [p.name for p in into2.iterdir()] == ["t_smoke_suite.json"]  # --suites filters
    out2 = json.loads((into2 / "t_smoke_suite.json").read_text())
    assert {(r["label"], r["seed"]): r["test_accuracy"] for r in out2["runs"]}[("mv", 0)] == 0.99
    assert {(r["label"], r["seed"]): r["test_accuracy"] for r in out2["runs"]}[("mv", 1)] == 0.98


def test_merge_renames_a_suite_and_keeps_its_labels(batch, monkeypatch, tmp_path: Path) -> None:
    table = "table2-cifar10n"
    suite_mod = sys.modules["suite"]  # the module batch.py imported
    defined = [r["label"] for r in suite_mod.SUITES[table]["runs"]]
    assert defined == ["clean", "mv", "ds", "crowdlayer-mw", "maxmig", "conal", "kdcrowd(crowdlayer-mw)", "kdcrowd(maxmig)"]
    # five-seed runs of another suite (gzip JSON, as the committed results are)...
    claim = tmp_path / "claim_suite.json.gz"
    claim_runs = [_run("mv", 1, 0.61), _run("kdcrowd(maxmig) mig-kl", 1, 0.71), _run("kdcrowd(maxmig) kl", 1, 0.72), _run("clean", 0, 0.55)]
    with gzip.open(claim, "wt") as f:
        json.dump(_doc("claim-cifar10n", claim_runs, 7.0, "cmd-claim"), f)
    # ...fill the table next to its own runs (listed first: they win on (clean, 0))
    own = tmp_path / "table_suite.json"
    own.write_text(json.dumps(_doc(table, [_run("clean", 0, 0.95), _run("kdcrowd(maxmig)", 0, 0.80)], 3.0, "cmd-table")))
    relabel = "kdcrowd(maxmig) mig-kl=kdcrowd(maxmig)"
    into = _merge(batch, monkeypatch, tmp_path, [own, claim], "--rename-suite", f"claim-cifar10n={table}", "--relabel", relabel, "--keep-suite-labels")
    assert [p.name for p in into.iterdir()] == [f"t_{table}_suite.json"]  # nothing under the old name
    out = json.loads((into / f"t_{table}_suite.json").read_text())
    runs = {(r["label"], r["seed"]): r for r in out["runs"]}
    # "kdcrowd(maxmig) kl" is not a row of the table: dropped; the relabelled run keeps its old label
    assert list(runs) == [("clean", 0), ("kdcrowd(maxmig)", 0), ("mv", 1), ("kdcrowd(maxmig)", 1)]
    assert runs[("clean", 0)]["test_accuracy"] == 0.95
    assert runs[("kdcrowd(maxmig)", 1)]["test_accuracy"] == 0.71
    assert runs[("kdcrowd(maxmig)", 1)]["original_label"] == "kdcrowd(maxmig) mig-kl"
    assert runs[("mv", 1)]["original_label"] == "mv"
    assert "original_label" not in runs[("clean", 0)]
    assert out["composed"] == [{"from_suite": "claim-cifar10n", "relabel": {"kdcrowd(maxmig) mig-kl": "kdcrowd(maxmig)"}}]
    assert out["wall_seconds"] == pytest.approx(10.0)
    assert out["command"] == "cmd-claim ; cmd-table"

    # without --keep-suite-labels the extra label stays
    into2 = _merge(batch, monkeypatch, tmp_path / "all", [own, claim], "--rename-suite", f"claim-cifar10n={table}", "--relabel", relabel)
    labels = {r["label"] for r in json.loads((into2 / f"t_{table}_suite.json").read_text())["runs"]}
    assert "kdcrowd(maxmig) kl" in labels


# --------------------------------------------------------------------------------------
# _complete
# --------------------------------------------------------------------------------------
def test_complete_needs_every_label_of_the_suite(batch, tmp_path: Path) -> None:
    labels = [r["label"] for r in sys.modules["suite"].SUITES["smoke"]["runs"]]
    assert len(labels) == 3
    part = tmp_path / "smoke.seed0.json"
    assert not batch._complete(part, "smoke", None)  # no part yet
    part.write_text(json.dumps(_doc("smoke", [_run(lab, 0, 0.5) for lab in labels], 1.0, "c")))
    assert batch._complete(part, "smoke", None)
    part.write_text(json.dumps(_doc("smoke", [_run(lab, 0, 0.5) for lab in labels[:-1]], 1.0, "c")))
    assert not batch._complete(part, "smoke", None)
    assert batch._complete(part, "smoke", labels[:-1])  # --only: just the labels asked for
    assert not batch._complete(part, "smoke", labels[-1:])
    part.write_text('{"suite": "smoke", "runs": [')  # a part cut off mid-write
    assert not batch._complete(part, "smoke", None)
    assert batch._part(tmp_path, "smoke", 3) == tmp_path / "smoke.seed3.json"
