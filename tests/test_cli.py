"""The command line: run, demo, aggregate, datasets, plot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kdcrowd.cli import app

runner = CliRunner()


def test_run_writes_metrics_and_transitions_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "crowdlayer-mw", "--epochs", "3", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    for key in ("method", "dataset", "seed", "config", "versions", "device", "seconds", "test_accuracy", "test_accuracy_val_selected", "train_label_accuracy", "history", "expertise_error", "test_ece"):
        assert key in m, key
    assert m["config"]["workers"] == "symmetric" and m["config"]["train"]["epochs"] == 3
    assert len(m["history"]) == 3 and "memorization_mean" in m["history"][0]
    t = m["timings"]  # where the time went; `other` takes up what no part counted
    assert set(t) >= {"startup", "data_preparation", "training", "evaluation", "writing", "wall"} and all(v >= 0 for v in t.values())
    assert sum(v for k, v in t.items() if k not in ("wall", "other")) <= t["wall"] + 1e-9, t  # no part counted twice
    assert t["training"] > 0 and t["evaluation"] > 0 and t["data_preparation"] > 0 and t["training"] <= m["train_seconds"]
    progress = (out / "progress.jsonl").read_text().splitlines()
    assert len(progress) == 3 and json.loads(progress[-1])["epoch"] == 3
    z = np.load(out / "transitions.npz")
    assert z["estimated"].shape == z["true"].shape == (20, 10, 10)

    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "maxmig", "--model-option", "mig_f=js", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "mig")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "mig" / "metrics.json").read_text())["config"]["options"]["mig_f"] == "js"

    fig = tmp_path / "fig" / "mem"
    r = runner.invoke(app, ["plot", "memorization", str(out), str(tmp_path / "mig"), "--out", str(fig)])
    assert r.exit_code == 0, r.output
    assert fig.with_suffix(".png").stat().st_size > 1000 and fig.with_suffix(".svg").exists()
    r = runner.invoke(app, ["plot", "workers", str(out), "--out", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "w.png").exists()

    # a second run into the same OUT, of a method without worker matrices: the first run's
    # matrices go aside with its metrics (plot workers drew them as this run's)
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert not (out / "transitions.npz").exists() and json.loads((out / "metrics.json").read_text())["method"] == "mv"
    assert json.loads((out / ".previous-run" / "metrics.json").read_text())["method"] == "crowdlayer-mw" and (out / ".previous-run" / "transitions.npz").exists()


def _labelme_like_root(root: Path, n: int = 60, k: int = 3, d: int = 5, seed: int = 0) -> Path:
    """A data root holding small files in the layout of the ``labelme`` data set (bag-of-words
    features): a registered data set that loads without scikit-learn (``digits`` needs it)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    ys = {s: rng.integers(0, k, m) for s, m in (("train", n), ("valid", n // 2), ("test", n // 2))}
    answers = np.where(rng.random((n, 6)) < 0.8, ys["train"][:, None], rng.integers(0, k, (n, 6)))
    answers[rng.random((n, 6)) < 0.3] = -1
    answers[:, 0] = ys["train"]  # every item labelled at least once
    folder = root / "labelme"
    folder.mkdir(parents=True)
    np.savez(folder / "labelme_annotations.npz", answers=answers, worker_columns_nonempty=np.arange(6), labels_train=ys["train"], class_names=np.array([f"c{c}" for c in range(k)]))
    np.savez(folder / "labelme_bovw_features.npz", **{f"X_{s}": (centres[y] + rng.normal(0, 1, (len(y), d))).astype(np.float32) for s, y in ys.items()}, **{f"y_{s}": y for s, y in ys.items()})
    return root


def test_run_imports_neither_scikit_learn_nor_scipy_nor_matplotlib(tmp_path: Path, heavy_imports) -> None:
    """`kdcrowd run`, as a process of its own, trains and evaluates a majority-vote network, a
    crowd model and KD-Crowd without importing scikit-learn, scipy or matplotlib."""
    root = _labelme_like_root(tmp_path / "data")
    code = (
        "import sys\n"
        "from kdcrowd.cli import main\n"
        "for method in ('mv', 'maxmig', 'kdcrowd'):\n"
        f"    sys.argv = ['kdcrowd', 'run', '--dataset', 'labelme', '--dataset-option', 'features=bovw', '--dataset-option', 'verify=false', '--data-root', {str(root)!r},\n"
        f"                '--method', method, '--epochs', '1', '--device', 'cpu', '--out', {str(tmp_path)!r} + '/' + method]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
    )
    assert heavy_imports(code, timeout=600) == []
    for method in ("mv", "maxmig", "kdcrowd"):
        m = json.loads((tmp_path / method / "metrics.json").read_text())
        assert m["dataset"] == "labelme" and m["train_label_accuracy"] is not None


def test_the_command_imports_with_the_collector_off_and_runs_with_it_on(monkeypatch) -> None:
    """`python -m kdcrowd` and the console script (both kdcrowd.__main__.run) import the
    libraries with the cyclic garbage collector off; main() freezes them and turns it on."""
    import gc
    import tomllib

    import kdcrowd.__main__ as entry
    import kdcrowd.cli

    scripts = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kdcrowd"] == "kdcrowd.__main__:run"
    seen: list[str] = []
    disable = gc.disable
    monkeypatch.setattr(gc, "disable", lambda: (seen.append("collector off"), disable()))
    monkeypatch.setattr(kdcrowd.cli, "app", lambda prog_name, **kw: seen.append(f"app, collector on: {gc.isenabled()}") or 3)  # the app's status: 3
    try:
        with pytest.raises(SystemExit) as done:  # main() exits with the app's status
            entry.run()
    finally:
        gc.unfreeze()
        gc.enable()
    assert seen == ["collector off", "app, collector on: True"] and done.value.code == 3


def test_run_kdcrowd_records_stages(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "hammer-spammer", "--method", "kdcrowd", "--teacher", "maxmig", "--student", "gce", "--kd", "kl", "--stages", "2", "--lambda1", "0.5", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["stages"]) == {"teacher", "student", "stage2", "ensemble", "ensemble-all"}
    assert m["config"]["options"]["lambda1"] == 0.5


def test_run_passes_stage2_init_to_kdcrowd(tmp_path: Path) -> None:
    # an invalid value reaches KD-Crowd's validation (which fails before any training), so
    # the flag is passed through rather than dropped in favour of the default; the error
    # names the command-line option
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "kdcrowd", "--teacher", "maxmig", "--stage2-init", "bogus", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "--stage2-init" in r.output and "bogus" in r.output


def test_run_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", "--dataset", "nope", "--method", "mv", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "nope" in r.output
    r = runner.invoke(app, ["run", "--dataset", "digits", "--method", "mv", "--device", "cpu", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--workers" in r.output  # digits has no crowd labels of its own


def test_aggregate_writes_labels_and_posteriors(tmp_path: Path) -> None:
    src = tmp_path / "answers.csv"
    pd.DataFrame({"task": ["a", "a", "a", "b", "b", "c"], "worker": ["x", "y", "z", "x", "y", "z"], "label": ["cat", "cat", "dog", "dog", "dog", "cat"]}).to_csv(src, index=False)
    out = tmp_path / "labels.csv"
    for method in ("mv", "ds"):
        r = runner.invoke(app, ["aggregate", "--annotations", str(src), "--method", method, "--out", str(out)])
        assert r.exit_code == 0, r.output
        df = pd.read_csv(out)
        assert list(df.columns) == ["item", "label", "p_cat", "p_dog"]
        assert df.set_index("item").loc["a", "label"] == "cat" and df.set_index("item").loc["b", "label"] == "dog"
        np.testing.assert_allclose(df[["p_cat", "p_dog"]].sum(axis=1), 1, atol=1e-6)
    from kdcrowd.aggregation import METHODS

    for method in (*METHODS, "Dawid_Skene"):  # every method and an alias spelling: the command takes each (--ds-prior only DS's)
        r = runner.invoke(app, ["aggregate", "--annotations", str(src), "--method", method, "--out", str(out)])
        assert r.exit_code == 0, (method, r.output)
        assert list(pd.read_csv(out).columns) == ["item", "label", "p_cat", "p_dog"]
    # the summary names the file written, as written: a long path is not wrapped and [b] is no markup
    odd = tmp_path / ("a_folder_with_a_fairly_long_name_" * 3) / "labels[b].csv"
    r = runner.invoke(app, ["aggregate", "--annotations", str(src), "--out", str(odd)])
    assert r.exit_code == 0 and odd.exists() and f"wrote {odd}\n" in r.output, r.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"item": [1, 1], "worker": [1, 1], "label": [0, 1]}).to_csv(bad, index=False)
    r = runner.invoke(app, ["aggregate", "--annotations", str(bad), "--out", str(out)])
    assert r.exit_code == 2 and "duplicate" in r.output.lower()


def test_datasets_lists_sets_and_worker_cases() -> None:
    r = runner.invoke(app, ["datasets"])
    assert r.exit_code == 0
    for name in ("labelme", "cifar10n", "cifar10", "digits", "maxmig-low-2", "hammer-spammer", "sparse", "instance"):
        assert re.search(rf"^\W*{re.escape(name)}\s", r.output, re.M), name  # a row of its own, not a prefix of another name


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    r = runner.invoke(app, ["demo", "--epochs", "2", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    acc = {m: json.loads((tmp_path / m / "metrics.json").read_text())["test_accuracy_val_selected"] for m in ("mv", "ds", "crowdlayer-mw", "maxmig", "kdcrowd")}
    # the always-class-0 juniors sink majority vote; the crowd model and KD-Crowd recover (measured at 2 epochs: 0.11 / 0.76 / 0.69)
    assert acc["mv"] < 0.2
    assert acc["maxmig"] > acc["mv"] + 0.4 and acc["kdcrowd"] > acc["mv"] + 0.4
    assert "maxmig" in r.output and "kdcrowd" in r.output  # the results table is printed


def test_a_stopped_run_keeps_the_finished_runs_outputs_set_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped before its outputs, run again, leaves the last finished run's outputs in
    OUT/.previous-run (the second start had replaced them by the stopped run's progress); and
    `run` refuses OUT holding an interrupted `kdcrowd fit` (it had deleted the outputs that
    fit keeps set aside)."""
    import kdcrowd.training as T

    out = tmp_path / "r"
    base = ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu", "--out", str(out)]
    assert runner.invoke(app, [*base, "--seed", "1"]).exit_code == 0
    real = T._fit

    def stop(*a: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "_fit", lambda mod, data, config, callbacks=(), desc="train": real(mod, data, config, [*callbacks, stop], desc))
    r = runner.invoke(app, [*base, "--seed", "2"])
    assert r.exit_code == 130 and "the earlier run's outputs wait in" in " ".join(r.output.split())
    r = runner.invoke(app, [*base, "--seed", "2"])  # stopped again
    assert r.exit_code == 130 and "the earlier run's outputs wait in" in " ".join(r.output.split())
    monkeypatch.setattr(T, "_fit", real)
    assert runner.invoke(app, [*base, "--seed", "2"]).exit_code == 0
    assert json.loads((out / ".previous-run" / "metrics.json").read_text())["config"]["seed"] == 1
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 2

    fit = tmp_path / "f"  # the folder of an interrupted fit, its earlier finished run aside
    (fit / "checkpoints").mkdir(parents=True)
    (fit / "run.json").write_text("{}")
    (fit / ".previous-run").mkdir()
    (fit / ".previous-run" / "report.html").write_text("the earlier fit")
    for extra in ([], ["--resume"]):
        r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu", "--out", str(fit), *extra])
        assert r.exit_code == 2 and f"continue it with `kdcrowd fit --resume {fit}`" in " ".join(r.output.split()), r.output
    assert sorted(p.name for p in fit.iterdir()) == [".previous-run", "checkpoints", "run.json"] and (fit / ".previous-run" / "report.html").exists()
    # a finished fit (its report in OUT) is no interrupted one: run --resume continues there
    (fit / "report.html").write_text("the finished fit")
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu", "--out", str(fit), "--resume"])
    assert r.exit_code == 0, r.output


def test_set_aside_removes_only_a_stopped_runs_leftovers(tmp_path: Path) -> None:
    """Only progress (and a fit's run.json without checkpoints) counts as a stopped run's
    leftovers, removed with the earlier outputs kept aside; anything else found, e.g. a
    fit's outputs without metrics.json, goes aside as before (it had been deleted)."""
    from kdcrowd.cli import PREVIOUS_RUN, RUN_FILE, RUN_OUTPUTS, _set_aside
    from kdcrowd.report.practitioner import FILES

    out = tmp_path / "o"
    (out / PREVIOUS_RUN).mkdir(parents=True)
    (out / PREVIOUS_RUN / "metrics.json").write_text("the finished run")
    (out / "progress.jsonl").write_text("")
    _set_aside(out, RUN_OUTPUTS)
    assert not (out / "progress.jsonl").exists() and (out / PREVIOUS_RUN / "metrics.json").read_text() == "the finished run"
    _set_aside(out, (*FILES, RUN_FILE))  # nothing to set aside: the earlier outputs stay
    assert (out / PREVIOUS_RUN / "metrics.json").exists()
    for name in ("model.pt", "labels.csv", RUN_FILE):
        (out / name).write_text(name)
    _set_aside(out, (*FILES, RUN_FILE))
    assert sorted(p.name for p in (out / PREVIOUS_RUN).iterdir()) == ["labels.csv", "model.pt", RUN_FILE]


def test_run_reports_a_diverging_loss_as_one_error_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--lr", "1e9", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2, r.output
    assert "lower the learning rate" in r.output and "Traceback" not in r.output
    assert ".previous-run" not in r.output  # nothing earlier in OUT
    # into a folder holding a finished run: its outputs are aside, and the error says where
    (tmp_path / "r" / "metrics.json").write_text("{}")
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--lr", "1e9", "--epochs", "2", "--device", "cpu", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "the earlier run's outputs wait in" in r.output and (tmp_path / "r" / ".previous-run" / "metrics.json").exists()
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_plot_workers_without_true_matrices(tmp_path: Path) -> None:
    """A run on data without training truth saves no true matrices; the plot shows the estimates alone."""
    from kdcrowd.report.plots import plot_workers

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"method": "ds"}))
    est = np.full((3, 4, 4), 0.25)
    np.savez(run / "transitions.npz", estimated=est, labels_per_worker=np.array([5, 9, 1]))
    paths = plot_workers(run, tmp_path / "w", n_workers=2)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    svg = paths[1].read_text()
    assert len(re.findall(r'<g id="axes_\d+"', svg)) == 2  # one row of two workers: estimates only
    # a dot in the name is part of it: two figures of lr 0.01 and 0.05 do not overwrite each other
    names = [p.name for lr in ("0.01", "0.05") for p in plot_workers(run, tmp_path / f"w_lr{lr}", n_workers=2)]
    assert names == ["w_lr0.01.png", "w_lr0.01.svg", "w_lr0.05.png", "w_lr0.05.svg"]
    assert [p.name for p in plot_workers(run, tmp_path / "x.svg", n_workers=2)] == ["x.png", "x.svg"]
    # a figure is written whole or not at all: an interrupt while saving keeps the earlier file
    import matplotlib.figure

    before = paths[0].read_bytes()
    real = matplotlib.figure.Figure.savefig

    def half_then_interrupt(self, fname, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        fname.write(b"\x89PNG half")
        raise KeyboardInterrupt

    matplotlib.figure.Figure.savefig = half_then_interrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            plot_workers(run, tmp_path / "w", n_workers=2)
    finally:
        matplotlib.figure.Figure.savefig = real
    assert paths[0].read_bytes() == before and not list(tmp_path.glob(".w.png.*"))


def test_aggregate_keeps_item_ids_as_written(tmp_path: Path) -> None:
    """Ids are text, as `kdcrowd fit` reads them: "0017" must not come back as 17."""
    src = tmp_path / "answers.csv"
    src.write_text("item,worker,label\n0017,w1,cat\n0017,w2,cat\n0018,w1,dog\n")
    out = tmp_path / "labels.csv"
    r = runner.invoke(app, ["aggregate", "--annotations", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines()[1].startswith("0017,cat,")


def test_aggregate_ds_prior_option(tmp_path):
    """--ds-prior reaches Dawid–Skene: 0 gives aggregate(prior=0) (crowd-kit's algorithm); a negative value is one error."""
    import numpy as np
    import pandas as pd

    from kdcrowd.aggregation import aggregate
    from kdcrowd.data.annotations import Annotations

    rng = np.random.default_rng(0)
    rows = [(i, f"w{w}", int(rng.integers(3)) if w % 3 else i % 3) for i in range(60) for w in rng.choice(12, 3, replace=False)]
    src = tmp_path / "a.csv"
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(src, index=False)
    ann = Annotations.read(src)
    for prior in (0.0, 1.0):
        out = tmp_path / f"ds{prior}.csv"
        res = CliRunner().invoke(app, ["aggregate", "--annotations", str(src), "--method", "ds", "--ds-prior", str(prior), "--out", str(out)])
        assert res.exit_code == 0, res.output
        _, post = aggregate(ann, "ds", prior=prior)
        got = pd.read_csv(out, dtype={"item": str}).set_index("item")
        want = pd.DataFrame(post, index=[str(i) for i in ann.item_ids], columns=[f"p_{c}" for c in ann.classes])
        np.testing.assert_allclose(got.loc[want.index, want.columns].to_numpy(), want.to_numpy(), atol=1e-5)
    for bad in ("-1", "inf"):  # inf passed the command's own check, and the library's error named its parameter first
        res = CliRunner().invoke(app, ["aggregate", "--annotations", str(src), "--method", "ds", "--ds-prior", bad, "--out", str(tmp_path / "x.csv")])
        assert res.exit_code == 2 and "error: --ds-prior must be a finite number >= 0" in res.output, res.output


def test_version_answers_before_the_heavy_imports_and_as_the_app_does() -> None:
    """`kdcrowd --version` prints the same line as the app's own --version option, from a
    process that never imports torch (the app's options are built from torch-importing configurations)."""
    import subprocess
    import sys

    from kdcrowd import __version__

    code = "import sys\nfrom kdcrowd.__main__ import run\nsys.argv = ['kdcrowd', '--version']\nrun()\nprint('torch' in sys.modules)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.splitlines() == [f"kdcrowd {__version__}", "False"], (r.stdout, r.stderr)
    assert runner.invoke(app, ["--version"]).output.strip() == f"kdcrowd {__version__}"


def test_aggregate_ties_go_to_the_lowest_class_and_ds_prior_is_dawid_skenes(tmp_path: Path) -> None:
    """Item b is a perfect tie (w1 says no, w2 yes, each worker's other item mirrors the
    other's): every method labels it with the lowest class, yes (one-coin DS broke it by a
    rounding of 1e-14); --ds-prior given with another method is named as unused."""
    src = tmp_path / "a.csv"
    src.write_text("item,worker,label\na,w1,yes\nb,w1,no\nb,w2,yes\nc,w2,no\n")
    for method in ("ds", "glad", "one-coin-ds", "zbs", "wawa"):  # not MACE: its random start breaks the symmetry
        out = tmp_path / f"{method}.csv"
        r = runner.invoke(app, ["aggregate", "--annotations", str(src), "--classes", "yes,no,maybe", "--method", method, "--out", str(out)])
        assert r.exit_code == 0, r.output
        labels = dict(pd.read_csv(out)[["item", "label"]].values)
        assert labels["b"] == "yes", (method, labels)
    r = runner.invoke(app, ["aggregate", "--annotations", str(src), "--method", "glad", "--ds-prior", "5", "--out", str(tmp_path / "g.csv")])
    assert r.exit_code == 0 and "--ds-prior is Dawid–Skene's" in r.output
    r = runner.invoke(app, ["aggregate", "--annotations", str(src), "--method", "ds", "--ds-prior", "5", "--out", str(tmp_path / "d.csv")])
    assert r.exit_code == 0 and "--ds-prior" not in r.output


def test_label_case_fold_reaches_gold_answers_and_platform_exports(tmp_path: Path) -> None:
    """--label-case fold merges Cat into cat in a --gold file too (it was refused as no class)
    and in a platform export, whose labels pandas 3 reads as its string dtype (folding left
    them apart: p_Cat beside p_cat)."""
    ann = tmp_path / "ann.csv"
    ann.write_text("item,worker,label\na,w1,cat\na,w2,cat\na,w3,Cat\nb,w1,dog\nb,w2,dog\nb,w3,dog\nc,w1,dog\nc,w2,cat\nc,w3,dog\n")
    gold = tmp_path / "gold.csv"
    gold.write_text("item,label\nc,CAT\n")
    out = tmp_path / "o.csv"
    r = runner.invoke(app, ["aggregate", "--annotations", str(ann), "--label-case", "fold", "--gold", str(gold), "--out", str(out)])
    assert r.exit_code == 0, r.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["item", "label", "p_cat", "p_dog"] and dict(frame[["item", "label"]].values)["c"] == "cat"
    r = runner.invoke(app, ["aggregate", "--annotations", str(ann), "--gold", str(gold), "--out", str(out)])
    assert r.exit_code == 2 and "--label-case fold matches them ignoring letter case" in r.output
    export = tmp_path / "toloka.tsv"
    rows = ["INPUT:text\tOUTPUT:result\tASSIGNMENT:task_id\tASSIGNMENT:worker_id\tASSIGNMENT:status"]
    rows += [f"t {i}\t{lab}\t{i}\t{w}\tAPPROVED" for i, w, lab in (("a", "w1", "cat"), ("a", "w2", "cat"), ("a", "w3", "Cat"), ("b", "w1", "dog"), ("b", "w2", "dog"))]
    export.write_text("\n".join(rows) + "\n")
    r = runner.invoke(app, ["aggregate", "--annotations", str(export), "--label-case", "fold", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert list(pd.read_csv(out).columns) == ["item", "label", "p_cat", "p_dog"]
    r = runner.invoke(app, ["aggregate", "--annotations", str(export), "--label-case", "fold", "--classes", "Cat,Dog", "--out", str(out)])
    assert r.exit_code == 0, r.output  # the declared spelling, though 'cat' is more frequent
    assert list(pd.read_csv(out).columns) == ["item", "label", "p_Cat", "p_Dog"]


def test_run_checks_its_data_and_device_before_out_is_touched(tmp_path: Path) -> None:
    """A bad data-set option value or an unusable device: one error, OUT not created (it held
    an empty progress.jsonl), and a finished run in OUT untouched (its outputs were moved
    aside and its progress emptied by the failing one)."""
    import torch

    out = tmp_path / "new"
    r = runner.invoke(app, ["run", "--dataset", "labelme", "--dataset-option", "features=bovv", "--method", "mv", "--out", str(out), "--data-root", str(tmp_path)])
    assert r.exit_code == 2 and "features must be 'images' or 'bovw'" in r.output and not out.exists(), r.output
    done = tmp_path / "done"
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu", "--out", str(done)])
    assert r.exit_code == 0, r.output
    before = {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()}
    if not torch.cuda.is_available():
        r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--device", "cuda", "--out", str(done)])
        assert r.exit_code == 2 and "--device" in r.output
    r = runner.invoke(app, ["run", "--dataset", "labelme", "--dataset-option", "features=bovv", "--method", "mv", "--out", str(done), "--data-root", str(tmp_path)])
    assert r.exit_code == 2
    assert {p.name: p.read_bytes() for p in done.iterdir() if p.is_file()} == before and not (done / ".previous-run").exists()


def test_help_shows_the_extras_names_with_their_brackets() -> None:
    """Help is rich markup: `kdcrowd[pretrained]` showed as `kdcrowd` (its brackets read as a tag)."""
    r = runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "400"})
    assert "kdcrowd[pretrained]" in r.output and "kdcrowd[pretrained-lite]" in r.output
    r = runner.invoke(app, ["aggregate", "--help"], env={"COLUMNS": "400"})
    assert "[default: 1]" in r.output


def test_help_speaks_of_options_not_python() -> None:
    """fit's and run's help had Python-only alternatives (a Student subclass, a key of
    CROWD_MODELS), None and field names where the options are meant."""
    for command in ("fit", "run"):
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "400"}).output
        for python in ("CROWD_MODELS", "crowd-model module", "subclass", "(None)", "cuda_graphs", "(head_recipe)"):
            assert python not in text, (command, python)
        assert "(--head-recipe)" in text and "unset: on for CUDA" in text


def test_aggregate_max_iter_bounds_the_iterative_methods(tmp_path: Path) -> None:
    """--max-iter reaches an iterative method as its n_iter (M-MSR's default is crowd-kit's
    10 000, without a limit on the command line before); a vote-counting method refuses it."""
    from kdcrowd.aggregation import aggregate
    from kdcrowd.data.annotations import Annotations

    rng = np.random.default_rng(1)
    rows = [(i, f"w{w}", int(rng.integers(3)) if w % 4 else i % 3) for i in range(50) for w in rng.choice(10, 3, replace=False)]
    src = tmp_path / "a.csv"
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(src, index=False)
    ann = Annotations.read(src)
    for method in ("mmsr", "glad", "ds"):
        out = tmp_path / f"{method}.csv"
        res = runner.invoke(app, ["aggregate", "--annotations", str(src), "--method", method, "--max-iter", "1", "--out", str(out)])
        assert res.exit_code == 0, res.output
        _, post = aggregate(ann, method, n_iter=1)
        assert not np.allclose(post, aggregate(ann, method)[1])  # one iteration is not the default run: the bound shows
        got = pd.read_csv(out, dtype={"item": str}).set_index("item")
        np.testing.assert_allclose(got.loc[[str(i) for i in ann.item_ids], [f"p_{c}" for c in ann.classes]].to_numpy(), post, atol=1e-5)
    for args, needle in ((["--method", "wawa", "--max-iter", "5"], "--max-iter bounds an iterative method"), (["--method", "ds", "--max-iter", "0"], "--max-iter must be at least 1")):
        res = runner.invoke(app, ["aggregate", "--annotations", str(src), "--out", str(tmp_path / "x.csv"), *args])
        assert res.exit_code == 2 and needle in " ".join(res.output.split()), res.output


def test_demo_and_plot_errors_are_one_line(tmp_path: Path) -> None:
    """demo and plot had no error handling: a bad value printed a traceback and exited 1 (demo
    with --out a file trained its first method before failing); --n-workers -1 dropped a
    worker silently; predict's messages name a folder as a folder and quote no unsafe advice;
    a bad --duplicates lists the policies as words."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "a.csv").write_text("item,worker,label\ni,w,x\n")
    for args, message in ((["demo", "--epochs", "0"], "--epochs must be at least 1"),
                          (["demo", "--workers", "bogus"], "bogus"),
                          (["demo", "--device", "bogus"], "--device"),
                          (["demo", "--seed", "-1"], "--seed must be at least 0"),
                          (["demo", "--out", str(tmp_path / "file"), "--epochs", "1"], "is a file, not a folder"),
                          (["plot", "memorization", str(tmp_path / "missing")], "no metrics.json"),
                          (["plot", "memorization", str(tmp_path / "file")], "is not a metrics.json written by kdcrowd"),
                          (["plot", "workers", str(tmp_path / "missing")], "transitions.npz"),
                          (["plot", "workers", str(tmp_path), "--n-workers", "-1"], "--n-workers must be at least 1"),
                          (["plot", "workers", str(tmp_path), "--out", str(tmp_path / "file" / "fig")], "is a file, not a folder"),
                          (["predict", "--model", str(tmp_path), "--features", str(tmp_path / "file"), "--out", str(tmp_path / "p.csv")], f"is a folder; give the model file in it, e.g. {tmp_path / 'model.pt'}"),
                          (["predict", "--model", str(tmp_path / "file"), "--features", str(tmp_path / "file"), "--out", str(tmp_path / "p.csv")], "is not a model file written by `kdcrowd fit`"),
                          (["aggregate", "--annotations", str(tmp_path / "a.csv"), "--duplicates", "bogus", "--out", str(tmp_path / "b.csv")], "use one of error, first, last, keep")):
        r = runner.invoke(app, args)
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and message in text and "Traceback" not in text and "weights_only" not in text, (args, r.output)
    assert not (tmp_path / "file.png").exists()


def test_run_and_fit_into_each_others_folder_set_every_output_aside(tmp_path: Path) -> None:
    # a run into a fit's folder left the fit's report.html, labels.csv and model.pt beside its metrics.json
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(30)]
    pd.DataFrame({"item": ids, **{f"f{j}": rng.normal(size=30) for j in range(3)}}).to_csv(tmp_path / "x.csv", index=False)
    pd.DataFrame([(i, w, rng.choice(["a", "b"])) for i in ids for w in ("u", "v")], columns=["item", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    fit = ["fit", "--annotations", str(tmp_path / "ann.csv"), "--features", str(tmp_path / "x.csv"), "--method", "mv", "--epochs", "1", "--quiet"]
    run = ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu"]
    out = tmp_path / "a"
    assert runner.invoke(app, [*fit, "--out", str(out)]).exit_code == 0
    r = runner.invoke(app, [*run, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [".previous-run", "metrics.json", "progress.jsonl"]
    assert {"report.html", "labels.csv", "model.pt", "run.json"} <= {p.name for p in (out / ".previous-run").iterdir()}
    # a fit into a run's folder: the run's progress and matrices do not stay beside the fit's outputs
    out = tmp_path / "b"
    assert runner.invoke(app, [*run, "--method", "maxmig", "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, [*fit, "--out", str(out)]).exit_code == 0
    assert not (out / "transitions.npz").exists() and not (out / "progress.jsonl").exists()


def test_a_finished_run_with_resume_leaves_no_checkpoints(tmp_path: Path) -> None:
    # they made a later run there with other settings refused as "another run's", and fit refuse OUT
    out = tmp_path / "r"
    args = ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "maxmig", "--device", "cpu", "--resume", "--out", str(out)]
    assert runner.invoke(app, [*args, "--epochs", "1"]).exit_code == 0
    assert not (out / "checkpoints").exists()
    r = runner.invoke(app, [*args, "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["config"]["train"]["epochs"] == 2


def test_a_resume_with_other_settings_names_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # it named them by their JSON paths (run.train.lr: ... ; framework.student and run.options.student both)
    import kdcrowd.evaluate as evaluate

    def stop_after_the_first_epoch(path: str, stage: str) -> Any:
        def cb(epoch: int, module: Any, record: dict) -> None:
            if epoch >= 1:
                raise KeyboardInterrupt
        return cb

    out = tmp_path / "r"
    args = ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "kdcrowd", "--device", "cpu", "--epochs", "3", "--resume", "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(evaluate, "progress_callback", stop_after_the_first_epoch)
        assert runner.invoke(app, args).exit_code == 130
    r = runner.invoke(app, [*args, "--lr", "0.01", "--student", "gce"])
    text = " ".join(r.output.split())
    assert r.exit_code == 2 and "--lr: 0.001 → 0.01" in text and "--student: 'elr' → 'gce'" in text and "run.options.student" not in text, r.output


def test_run_refuses_a_backbone_for_other_items_before_it_touches_out(tmp_path: Path) -> None:
    # it set the earlier run's outputs aside first, leaving OUT with an empty progress.jsonl
    out = tmp_path / "r"
    args = ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    before = (out / "metrics.json").read_text()
    r = runner.invoke(app, [*args, "--backbone", "torchvision:resnet18"])
    assert r.exit_code == 2 and "needs RGB images" in r.output, r.output
    assert (out / "metrics.json").read_text() == before and not (out / ".previous-run").exists()


def test_plot_workers_draws_a_fit_folders_matrices(tmp_path: Path) -> None:
    # it refused a fit's folder: "the run's method estimates no worker matrices", though transition_matrices.npz held them
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(30)]
    pd.DataFrame({"item": ids, **{f"f{j}": rng.normal(size=30) for j in range(3)}}).to_csv(tmp_path / "x.csv", index=False)
    rows = [(i, w, rng.choice(["a", "b"])) for i in ids for w in ("u", "v")] + [(i, "busy", rng.choice(["a", "b"])) for i in ids]
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    out = tmp_path / "fit"
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "ann.csv"), "--features", str(tmp_path / "x.csv"), "--method", "maxmig", "--epochs", "1", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "fitted in " in html and "kdcrowd predict --model OUT/model.pt --features FILE" in html
    r = runner.invoke(app, ["plot", "workers", str(out), "--out", str(tmp_path / "w"), "--n-workers", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "w.png").stat().st_size > 1000 and "worker u" in (tmp_path / "w.svg").read_text()
    assert "estimated" in (tmp_path / "w.svg").read_text()
    # a method without worker matrices: its matrices count the labels against the final labels, and say so
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "ann.csv"), "--features", str(tmp_path / "x.csv"), "--method", "mv", "--epochs", "1", "--quiet", "--out", str(tmp_path / "mv")])
    assert r.exit_code == 0, r.output
    assert not bool(np.load(tmp_path / "mv" / "transition_matrices.npz")["estimated"])
    r = runner.invoke(app, ["plot", "workers", str(tmp_path / "mv"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "m.svg").read_text()
    assert "vs final labels" in svg and "estimated" not in svg


def test_input_warnings_pass_other_warnings_on_once_and_end() -> None:
    # a warning passed on inside the recording was recorded again, without end (a fit ran out of memory)
    import resource
    import subprocess
    import sys

    code = ("import warnings\nfrom kdcrowd.cli import _input_warnings\nfrom kdcrowd.data.readers import InputWarning\n"
            "with _input_warnings():\n    warnings.warn('plain one', UserWarning)\n    warnings.warn('an input one', InputWarning)\nprint('done')\n")
    limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # noqa: E731  (fail fast, not the machine)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, preexec_fn=limit,
                       env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    assert r.returncode == 0 and r.stdout.strip() == "done", r.stderr[-500:]
    assert r.stderr.count("plain one") == 1 and "warning: an input one" in r.stderr


def test_plot_workers_takes_ids_that_read_as_missing_or_hold_dollars(tmp_path: Path) -> None:
    # workers.csv read "NA" as missing (a crash on two such ids, or the busiest worker left out),
    # and a "$" in an id went to matplotlib as mathtext (a crash on "a$\x$")
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(30)]
    pd.DataFrame({"item": ids, **{f"f{j}": rng.normal(size=30) for j in range(3)}}).to_csv(tmp_path / "x.csv", index=False)
    rows = [(i, w, rng.choice(["a", "b"])) for i in ids for w in ("NA", "null", r"a$\x$")] + [(i, "w", rng.choice(["a", "b"])) for i in ids[:5]]
    pd.DataFrame(rows, columns=["item", "worker", "label"]).to_csv(tmp_path / "ann.csv", index=False)
    out = tmp_path / "fit"
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "ann.csv"), "--features", str(tmp_path / "x.csv"), "--epochs", "1", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["plot", "workers", str(out), "--out", str(tmp_path / "w"), "--n-workers", "3"])
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "w.svg").read_text()
    assert "worker NA" in svg and "worker null" in svg and "worker a" in svg and "worker w" not in svg


def test_plot_memorization_tells_runs_of_one_method_apart(tmp_path: Path) -> None:
    # two runs of one method had the same legend entries ("kdcrowd: student" twice)
    hist = [{"epoch": e, "memorization_mean": 0.1 * e, "memorization_std": 0.01} for e in (1, 2)]
    for name in ("elr", "gce$"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"method": "kdcrowd", "stages": {"student": {"history": hist}}}))
    (tmp_path / "mv").mkdir()
    (tmp_path / "mv" / "metrics.json").write_text(json.dumps({"method": "mv", "history": hist}))
    r = runner.invoke(app, ["plot", "memorization", str(tmp_path / "elr"), str(tmp_path / "gce$" / "metrics.json"), str(tmp_path / "mv"), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "m.svg").read_text()
    assert f"{tmp_path / 'elr'} (kdcrowd): student" in svg and "(kdcrowd): student" in svg.replace(f"{tmp_path / 'elr'} (kdcrowd): student", "")
    assert "<!-- mv -->" in svg and "(mv)" not in svg  # a method run once keeps its plain name
    # folders whose names start with "_": matplotlib leaves such labels out of a legend it collects
    for name in ("_a", "_b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"method": "mv", "history": hist}))
    import os

    here = os.getcwd()
    os.chdir(tmp_path)  # the folders as a user in that folder names them
    try:
        r = runner.invoke(app, ["plot", "memorization", "_a", "_b", "--out", "u"])
    finally:
        os.chdir(here)
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "u.svg").read_text()
    assert "_a (mv)" in svg and "_b (mv)" in svg


def test_input_warnings_are_printed_when_they_are_raised_and_once(capsys) -> None:
    # they were recorded and printed when the block ended: a warning about the data (the padded
    # layout's size) came after the training it was about, or never where memory ran out first
    import sys
    import warnings

    from kdcrowd.cli import _input_warnings
    from kdcrowd.data.readers import InputWarning

    with _input_warnings():
        warnings.warn("about the data", InputWarning)
        print("the long part", file=sys.stderr)
        warnings.warn("about the data", InputWarning)
    err = capsys.readouterr().err
    assert err.index("warning: about the data") < err.index("the long part") and err.count("about the data") == 1
