"""The ``kdcrowd`` command line.

    kdcrowd demo                                   # a complete run on generated data, CPU, < 2 min
    kdcrowd fit --annotations answers.csv --images imgs/ --out result/   # your own data: labels, workers, report
    kdcrowd run --dataset labelme --method mv --out runs/mv
    kdcrowd run --dataset digits --workers maxmig-low-2 --method maxmig --out runs/maxmig
    kdcrowd aggregate --annotations answers.csv --method ds --out labels.csv
    kdcrowd datasets                               # data sets and simulated-worker cases
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .io import atomic_file, process_start, write_csv, write_json

#: Ctrl-C anywhere exits with status 130 (typer); the statuses are listed in kdcrowd.cli_checks.EXIT_CODES.
app = typer.Typer(add_completion=False, no_args_is_help=True, help="Learning from crowds with transition-matrix crowd models and KD-Crowd distillation.")
#: Results and summaries go to stdout; errors, warnings and notes to stderr. Both honour NO_COLOR.
console = Console()
#: Errors that mean bad input, settings or files (missing, unreadable, not writable): printed as
#: one line, no traceback (AnnotationError and ConfigError are ValueErrors). Anything else --
#: a RuntimeError such as CUDA running out of memory, an internal error -- keeps its traceback.
USER_ERRORS = (ValueError, OSError, FloatingPointError)
err_console = Console(stderr=True)


#: `kdcrowd fit` writes its settings here; `--resume OUT` reads them back.
RUN_FILE = "run.json"
#: The folder of OUT where `fit` keeps an earlier finished run's outputs until its own are written.
PREVIOUS_RUN = ".previous-run"
#: `kdcrowd fit`'s --image-size and --text-column when not given (refused without --images / --texts).
DEFAULT_IMAGE_SIZE, DEFAULT_TEXT_COLUMN = 32, "text"

#: The folder of OUT where `fit` and `run --resume` keep their checkpoints (--checkpoint-interval).
CHECKPOINTS = "checkpoints"


def _print_error(message: str) -> None:
    """Print one ``error:`` line (markup-escaped, never wrapped, the library's keywords as options)."""
    from .cli_checks import cli_message

    err_console.print(f"[red]error:[/red] {escape(cli_message(message))}", soft_wrap=True, highlight=False)


def _fail(message: str) -> NoReturn:
    """Print one ``error:`` line and exit with status 2."""
    _print_error(message)
    raise typer.Exit(2)


def _warn_unused_classes(ann: Any, method: Optional[str] = None) -> None:
    """Warn where integer labels read as class indices leave classes unused
    (:func:`kdcrowd.data.annotations.unused_classes_message`); with an aggregation
    ``method`` whose results such classes change, say so."""
    from .aggregators import canonical_aggregator
    from .data.annotations import unused_classes_message

    message = unused_classes_message(ann, "--classes {classes}")
    if message:
        if method is not None and canonical_aggregator(method) in SPREAD_OVER_CLASSES:
            message += f" ({method} spreads each worker's errors over every class, so the unused ones change its labels too)"
        _warn(message)


#: Aggregators whose worker models spread errors over all K classes: a class nobody chose changes their results.
SPREAD_OVER_CLASSES = ("glad", "mace", "one-coin-ds", "mmsr")


def _class_list(classes: Optional[str]) -> Optional[list[str]]:
    """The names of ``--classes`` (comma-separated, distinct, non-empty), or ``None``."""
    if classes is None:
        return None
    names = [c.strip() for c in str(classes).split(",")]
    if any(not c for c in names) or len(set(names)) != len(names):
        _fail(f"--classes must be distinct, non-empty names separated by commas, got {classes!r}")
    return names


def _warn(message: str) -> None:
    """Print one ``warning:`` line on stderr."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)


@contextlib.contextmanager
def _input_warnings() -> Iterator[None]:
    """Print the :class:`kdcrowd.data.readers.InputWarning` s raised inside (rows skipped, an
    id column recognised, labels differing by case, image files skipped) and the
    :class:`kdcrowd.config.SettingWarning` s (a setting without effect) and
    :class:`kdcrowd.aggregation.SparseWorkersWarning` s (workers too sparse for Dawid–Skene's
    matrices) as ``warning:`` lines on stderr, when they are raised; other warnings are shown
    as they would be without it."""
    import warnings

    from .aggregation import SparseWorkersWarning
    from .config import SettingWarning
    from .data.readers import InputWarning

    ours = (InputWarning, SettingWarning, SparseWorkersWarning)
    said: set[str] = set()
    with warnings.catch_warnings():  # (restores the filters and the display below on the way out)
        for category in ours:
            warnings.simplefilter("always", category)
        shown = warnings.showwarning

        def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
            # displayed as they come (a warning about the data, printed before a long training,
            # not after it), each once (fit's Dawid-Skene runs twice: the reference labels and the
            # method); the others as they would be shown without this
            if issubclass(category, ours):
                if str(message) not in said:
                    said.add(str(message))
                    _warn(str(message))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


#: ``--format`` values: the platform exports of :mod:`kdcrowd.data.platforms`, and ``table``
#: (a long or wide table, or a peerannot answers.json: :func:`kdcrowd.data.readers.read_annotation_frame`).
TABLE_FORMAT = "table"


def _export_summary(path: Path, summary: dict[str, Any]) -> str:
    """One line: what a platform export held, and what was skipped and why."""
    field = f", field {escape(repr(summary['field']))}" if summary.get("field") else ""
    skipped = summary.get("skipped") or {}
    skip = f"; skipped {sum(skipped.values())} ({escape(', '.join(f'{n} {r}' for r, n in skipped.items()))})" if skipped else ""
    multi = f"; several choices per answer: {summary['multi']}" if summary.get("multi") else ""
    return (f"read {summary['format']} export {escape(str(path))}{field}: {summary['n_read']} answers, {summary['n_annotations']} annotations "
            f"of {summary['n_items']} items by {summary['n_workers']} workers{skip}{multi}")


def _read_crowd_input(
    path: Path, label_case: Optional[str] = None, item_column: Optional[str] = None, fmt: Optional[str] = None,
    field: Optional[str] = None, multi_label: Optional[str] = None, include_rejected: bool = False, gold_given: bool = False,
    classes: Optional[list[str]] = None,
) -> tuple[Any, Any]:
    """The crowd labels of ``--annotations`` as ``(long frame item, worker, label, gold)``.

    A platform export (recognised from its content, or ``fmt``: ``--format``) is read by
    :func:`kdcrowd.data.platforms.read_export` (``--field``, ``--multi-label``,
    ``--include-rejected``); its summary is printed on stdout, and ``gold`` is its gold
    answers (DataFrame ``item, label``) or None -- with a note on stderr when the export
    holds gold and ``gold_given`` (``--gold``, which replaces them) is True; otherwise
    :func:`_gold_questions` makes them the gold questions. Anything else (or ``--format table``) is
    :func:`kdcrowd.data.readers.read_annotation_frame` (gold None), which keeps a label ``NA``
    as a class only where ``classes`` (``--classes``) declares it. Warnings go to stderr."""
    from .data.platforms import FORMATS, looks_like_platform_export, read_export
    from .data.readers import read_annotation_frame

    if fmt is not None and fmt != TABLE_FORMAT and fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)} or {TABLE_FORMAT} (a long/wide table or answers.json), not {fmt!r}")
    export = fmt in FORMATS if fmt is not None else looks_like_platform_export(path)
    if not export:
        given = [o for o, v in (("--field", field), ("--multi-label", multi_label), ("--include-rejected", include_rejected or None)) if v is not None]
        if given:
            raise ValueError(f"{given[0]} applies to annotation-platform exports, and {path} is read as a table (item, worker, label); drop {given[0]}, or pass --format with the platform that wrote the file")
        with _input_warnings():
            return read_annotation_frame(path, label_case=label_case, item_column=item_column, classes=classes), None
    from .data.readers import fold_label_case

    with _input_warnings():
        ex = read_export(path, format=fmt, field=field, multi=multi_label, include_rejected=include_rejected, item_column=item_column)
        frame = ex.long_frame()  # integer ids and labels as the table reader reads them
        frame["label"] = fold_label_case(frame["label"], label_case, f"annotation file {path}", classes)
    console.print(_export_summary(path, ex.summary), soft_wrap=True, highlight=False)
    gold = ex.gold_frame()
    if gold is not None and len(gold) and gold_given:
        err_console.print(f"note: {escape(str(path))} holds {len(gold)} gold answers (the platform's control questions); --gold replaces them", soft_wrap=True, highlight=False)
    return frame, gold


def _gold_questions(gold: Optional[Path], path: Path, export_gold: Any, item_ids: Any, classes: Any, label_case: Optional[str] = None,
                    items_are: str = "features/images") -> Any:
    """The gold questions as a :func:`~kdcrowd.data.gold.gold_vector` over ``item_ids``
    (class index, -1 elsewhere), or None: the file ``--gold`` when given, else the gold
    answers of the platform export ``path`` (Toloka ``GOLDEN:``, Label Studio
    ``ground_truth``), with a note on stderr saying how many are used. Export answers that
    are not one class (multi-choice) or whose item is not among ``item_ids`` are left out,
    and counted."""
    from .data.gold import gold_vector
    from .data.items import read_item_labels

    if gold is not None:
        return gold_vector(len(item_ids), *read_item_labels(gold, item_ids, classes, items_are=items_are, fold_case=label_case == "fold"))
    if export_gold is None or not len(export_gold):
        return None

    from .data.items import item_labels_from_frame
    from .data.readers import fold_label_case

    g = export_gold[export_gold["label"].map(lambda v: not isinstance(v, (list, tuple, set)))].copy()
    multi = len(export_gold) - len(g)
    g["label"] = fold_label_case(g["label"].astype(object), label_case, f"the gold answers of {path}")
    known = set(map(str, item_ids))
    on_items = g["item"].astype(str).isin(known)
    missing = int((~on_items).sum())
    g = g[on_items]
    left = (f"; left out {multi} with several classes" if multi else "") + (f"; left out {missing} whose items are not among the training items" if missing else "")
    if not len(g):
        err_console.print(f"note: {escape(str(path))} holds {len(export_gold)} gold answers, none usable as gold questions{left}", soft_wrap=True, highlight=False)
        return None
    try:
        items, labels = item_labels_from_frame(g, path, item_ids, classes, items_are="crowd labels or features/images", fold_case=label_case == "fold")
    except ValueError as e:  # the message tells to edit a label file: here it is the platform's export
        _fail(f"{e}. These are the export's gold answers (the platform's control questions): a class no worker chose is a class "
              f"once --classes lists it; or replace them with --gold FILE")
    err_console.print(f"note: using the {len(items)} gold answers of {escape(str(path))} (the platform's control questions) as gold questions{left}; --gold FILE replaces them", soft_wrap=True, highlight=False)
    return gold_vector(len(item_ids), items, labels)


def _platform_options(fmt: Optional[str], field: Optional[str], multi_label: Optional[str], include_rejected: bool) -> dict[str, Any]:
    return {"fmt": fmt, "field": field, "multi_label": multi_label, "include_rejected": include_rejected}


_FORMAT_HELP = ("The platform that wrote --annotations: labelstudio, labelbox, argilla, doccano, toloka, mturk, sagemaker, cvat, "
                "or table (a long/wide table or answers.json). Default: recognised from the file's content.")
_FIELD_HELP = "The question of a platform export to read, when it has several (Label Studio control from_name, Labelbox/Argilla question, Toloka OUTPUT name ...)."
_MULTI_HELP = "Answers of a platform export holding several classes: first (keep the first) or explode (one annotation per class, read with --duplicates keep). Default: an error."
_REJECTED_HELP = "Keep the assignments the requester rejected (MTurk, Toloka exports)."
_DUPLICATES_HELP = "Repeated (item, worker) pairs: error, first, last or keep."
_LABEL_CASE_HELP = "Labels that differ only by letter case (cat, Cat): fold (merge them, into the spelling --classes gives if given) or keep (separate classes); by default kept, with a warning."


def _version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"kdcrowd {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """Learning from crowds with transition-matrix crowd models and KD-Crowd distillation.

    Exit status: 0 success, 1 internal error (with a traceback), 2 bad input or usage (one
    'error:' line on stderr), 130 interrupted."""


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def results_table(rows: list[dict[str, Any]], title: str) -> Table:
    """A rich table of the headline numbers of several runs."""
    table = Table(title=title)
    for col in ("method", "test acc", "test acc (val-sel.)", "train-label acc", "E_m rel.", "E_m MAE", "s"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for m in rows:
        e = m.get("expertise_error") or {}
        table.add_row(
            m.get("label", m["method"]),
            _fmt(m.get("test_accuracy")),
            _fmt(m.get("test_accuracy_val_selected")),
            _fmt(m.get("train_label_accuracy")),
            _fmt(e.get("relative_mean")),
            _fmt(e.get("mae_mean")),
            f"{m['seconds']:.1f}",
        )
    return table


def parse_key_values(pairs: list[str], flag: str = "--dataset-option") -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}`` (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise typer.BadParameter(f"{flag}: '{p}' is not KEY=VALUE (e.g. {'features=bovw' if flag == '--dataset-option' else 'mig_f=js'})")
        k, v = p.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _run_config(
    dataset: str, method: str, workers: Optional[str], epochs: int, batch_size: int, lr: float, seed: int, device: str, backbone: str, options: dict[str, Any], progress: bool = True
) -> Any:
    from .methods import RunConfig
    from .training import TrainConfig

    train = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, progress=progress)
    return RunConfig(dataset=dataset, method=method, workers=workers, backbone=backbone, seed=seed, train=train, options=options)


def with_door_options(func: Any) -> Any:
    """Add every option of :func:`kdcrowd.doors.door_options` to a command: ``--NAME`` with
    the configuration's default and field docstring as help (``model_options`` becomes the
    repeatable ``--model-option KEY=VALUE``; a boolean ``--NAME/--no-NAME``). The command
    receives them in ``**options``; :func:`_door_settings` turns them into configurations."""
    from .doors import door_options

    return _with_options(func, door_options())


def with_spreading_options(func: Any) -> Any:
    """Add the label-spreading options (:func:`kdcrowd.doors.spreading_options`) to a command, as :func:`with_door_options` does."""
    from .doors import spreading_options

    return _with_options(func, spreading_options())


#: Phrases of the configurations' docstrings that speak of Python objects (the estimator and
#: the torch modules take them), left out of the command-line help.
_PYTHON_ONLY = (" (a key of CROWD_MODELS) or a crowd-model module", " or a Student subclass", " (cuda_graphs)")


def _cli_help(text: str, names: Any) -> str:
    """A configuration field's docstring as command-line help: Python-only alternatives left
    out, ``unset (None)`` as ``unset``, and a field named in parentheses as its option."""
    import re

    for phrase in _PYTHON_ONLY:
        text = text.replace(phrase, "")
    text = text.replace("unset (None)", "unset")
    return re.sub(r"\(([a-z][a-z0-9_]*)\)", lambda m: f"(--{m.group(1).replace('_', '-')})" if m.group(1) in names else m.group(0), text)


def _with_options(func: Any, options: list[Any]) -> Any:
    import inspect
    import typing

    names = {o.name for o in options}  # a field a help names in parentheses is one of its own group's
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func)
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    added, annotations = [], dict(getattr(func, "__annotations__", {}))
    for o in options:
        if o.name == "model_options":
            name, tp, default = "model_option", list[str], typer.Option([], "--model-option", help=escape(f"KEY=VALUE (repeatable). {o.help}"))
        else:
            name, tp = o.name, o.type
            flag = "--" + o.name.replace("_", "-")
            decls = [f"{flag}/--no-{o.name.replace('_', '-')}"] if o.type in (bool, Optional[bool]) else [flag]
            default = typer.Option(o.default, *decls, help=escape(_cli_help(o.help, names)))  # help is rich markup: kdcrowd[pretrained] would lose its brackets
        added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=tp))
        annotations[name] = tp
    # typer reads the parameters from the signature and their types from __annotations__
    annotations.update({p.name: p.annotation for p in own})
    func.__signature__ = sig.replace(parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else p for p in own] + added)
    func.__annotations__ = annotations
    return func


def _given_options(ctx: typer.Context) -> frozenset[str]:
    """The parameters of the command that the user gave (on the command line or through their
    environment variable), whatever their values: an option typed at its default is given."""
    return frozenset(k for k in ctx.params if getattr(ctx.get_parameter_source(k), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP"))


def _door_settings(options: dict[str, Any], seed: int, progress: bool, given: frozenset[str], **train_extra: Any) -> tuple[str, str, Any, dict[str, Any]]:
    """The generated options of a command as (method, backbone, TrainConfig, run options);
    a bad value fails with one line naming the command-line option. ``given``: the options
    the user gave (:func:`_given_options`), for the checks of an option that goes with another."""
    from .config import ConfigError, cli_style, option_style
    from .doors import settings_from_options

    values = {k: v for k, v in options.items() if k != "model_option"}
    try:
        values["model_options"] = parse_key_values(options.get("model_option") or [], flag="--model-option")
        with option_style(cli_style):
            return settings_from_options(values, seed=seed, progress=progress, given=given, **train_extra)
    except (ConfigError, typer.BadParameter) as e:
        _fail(str(e))


@app.command()
@with_door_options
def run(
    ctx: typer.Context,
    dataset: str = typer.Option(..., help="Data set name (see `kdcrowd datasets`)."),
    out: Path = typer.Option(..., help="Output directory; metrics.json is written there."),
    workers: Optional[str] = typer.Option(None, help="Simulated-worker case replacing the data set's own annotations."),
    seed: int = typer.Option(0, help="Seed of simulation, initialisation and batch order."),
    data_root: Optional[Path] = typer.Option(None, envvar="KDCROWD_DATA", help="Directory holding the data sets (env KDCROWD_DATA)."),
    dataset_option: list[str] = typer.Option([], "--dataset-option", help="KEY=VALUE passed to load_dataset, e.g. features=bovw for labelme (repeatable)."),
    distributed: bool = typer.Option(False, "--distributed", help="Data-parallel over the processes torchrun starts (one per GPU): `torchrun --nproc_per_node N -m kdcrowd run --distributed ...`; --batch-size is per GPU; rank 0 writes the files."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="With --distributed: synchronised BatchNorm (statistics of the global batch; CUDA only) instead of each GPU's own batch statistics."),
    resume: bool = typer.Option(False, "--resume", help="Checkpoint into OUT/checkpoints (after finished epochs, at most every --checkpoint-interval seconds, and when stopped), and continue from the last finished epoch when the same command runs again after an interruption (same results as an uninterrupted run)."),
    track_memorization: bool = typer.Option(True, "--track-memorization/--no-track-memorization", help="Record each epoch's memorization of the workers' wrong labels (one prediction pass over the training items per epoch; needs their ground truth); --no-track-memorization leaves it out."),
    **options: Any,
) -> None:
    """Train and evaluate one method; writes OUT/metrics.json (and OUT/progress.jsonl, one line per finished epoch).

    The method and training options are those of `kdcrowd fit` and of KDCrowdClassifier,
    with the same names and defaults."""
    from .methods import RunConfig
    from .methods import run_on_dataset

    started = time.perf_counter()  # the imports are done: what came before is startup
    given = _given_options(ctx)
    method, backbone, train, run_options = _door_settings(options, seed=seed, progress=True, given=given, distributed=distributed, sync_bn=sync_bn)
    if not resume and "checkpoint_interval" in given:
        _fail("--checkpoint-interval sets how often --resume checkpoints into OUT/checkpoints; it goes with --resume (a run without it writes no checkpoints)")
    try:
        dataset_options = parse_key_values(dataset_option)
    except typer.BadParameter as e:
        _fail(str(e))
    cfg = RunConfig(dataset=dataset, method=method, workers=workers, backbone=backbone, seed=seed, train=train, options=run_options, dataset_options=dataset_options, track_memorization=track_memorization)
    # Every finished epoch is appended here, so an interrupted run keeps its history.
    from .data.datasets import check_dataset_request
    from .outdir import prepare_out_dir

    try:
        check_dataset_request(dataset, workers, **dataset_options)  # before OUT is touched
    except TypeError as e:  # an option the data set's loader does not take
        _fail(f"--dataset-option: {e}")
    except USER_ERRORS as e:
        _fail(str(e))
    if (out / CHECKPOINTS).exists() and (out / RUN_FILE).exists() and not (out / "report.html").exists():
        # an interrupted fit (a finished one has its report): run's --resume would take its checkpoints, a fresh run its set-aside outputs
        _fail(f"{out} holds an interrupted `kdcrowd fit`; continue it with `kdcrowd fit --resume {out}`, or choose another --out (or delete {out / CHECKPOINTS})")
    ds, data_seconds = None, 0.0
    if not distributed:  # the data set and the device, before OUT is touched (under torchrun rank 0 loads it first, below)
        from .config import cli_style, option_style
        from .data.datasets import load_dataset
        from .training import resolve_device

        t_data = time.perf_counter()
        try:
            with option_style(cli_style):
                resolve_device(cfg.train.device)
            ds = load_dataset(cfg.dataset, root=str(data_root) if data_root else None, workers=cfg.workers, seed=cfg.seed, **cfg.dataset_options)
        except USER_ERRORS as e:  # the option names were checked above (check_dataset_request)
            _fail(str(e))
        data_seconds = time.perf_counter() - t_data
        from .models.backbones import check_backbone_items

        try:
            with option_style(cli_style):  # what the run would find only once it builds its networks: before OUT is touched
                check_backbone_items(cfg.backbone, ds.x_train.shape[1:])
        except USER_ERRORS as e:
            _fail(str(e))
    try:
        prepare_out_dir(out, lock=not distributed)  # ranks of one torchrun share OUT
    except USER_ERRORS as e:
        _fail(str(e))
    cfg.progress_file = str(out / "progress.jsonl")
    if resume:
        cfg.checkpoint_dir = str(out / CHECKPOINTS)
    # a resumed run appends to progress.jsonl (a repeated epoch: keep the last line per stage and epoch)
    resuming = resume and (out / CHECKPOINTS).exists()
    if distributed:
        _run_distributed(cfg, data_root, out, resuming)
        return
    kept = "" if resuming else _start_fresh_run(out, cfg.progress_file)
    try:
        with option_style(cli_style), _input_warnings():  # an error or warning about a setting (a resume's other settings) names it as --option
            metrics, output = run_on_dataset(ds, cfg)
        metrics["timings"]["data_preparation"] += data_seconds  # the files read (and workers simulated)
    except KeyboardInterrupt:
        hint = "run the same command again to continue from the last finished epoch" if resume else "add --resume to checkpoint the finished epochs next time"
        err_console.print(f"[yellow]interrupted.[/yellow] The finished epochs are in {escape(str(out / 'progress.jsonl'))}; {hint}{escape(kept)}", soft_wrap=True)
        raise typer.Exit(130) from None
    except USER_ERRORS as e:
        _fail(f"{e}{kept}")
    t_write = time.perf_counter()
    save_transitions(out, output)
    from .methods import close_timings

    since = _command_start(started)
    metrics["timings"] = close_timings({**metrics["timings"], "startup": started - since, "writing": time.perf_counter() - t_write}, since, resumed=float(metrics.get("resumed_seconds") or 0.0))
    write_json(out / "metrics.json", metrics)
    if resume:  # the run is complete: its checkpoints would make a later run in OUT resume it (or refuse other settings)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    console.print(results_table([metrics], f"{dataset}" + (f" / workers={workers}" if workers else "")))
    console.print(f"wrote {escape(str(out / 'metrics.json'))}", soft_wrap=True, highlight=False)


#: What `kdcrowd run` writes into OUT.
RUN_OUTPUTS = ("metrics.json", "transitions.npz", "progress.jsonl")


def _set_aside(out: Path, names: Any) -> Path:
    """Move an earlier run's outputs ``names`` found in OUT into OUT/.previous-run (in place
    of what an older run left there) so that nothing stale looks new; returns that folder.
    Where the files found are only what a stopped run leaves (its progress, a fit's run.json
    without checkpoints) they are removed, and the finished run's outputs already set aside
    stay there (a second start had replaced them). `kdcrowd fit` puts them back if it stops
    before its first saved epoch (:func:`_undo_unstarted_fit`); `kdcrowd run` names the
    folder when it stops."""
    import shutil

    previous = out / PREVIOUS_RUN
    present = {name for name in names if (out / name).exists()}
    leftovers = {"progress.jsonl"} | (set() if (out / CHECKPOINTS).exists() else {RUN_FILE})
    if present <= leftovers:  # (nothing found: nothing to set aside either)
        for name in present:
            (out / name).unlink()
        return previous
    shutil.rmtree(previous, ignore_errors=True)  # an older run's, never put back in place of this one's
    for name in names:
        if (out / name).exists():
            previous.mkdir(exist_ok=True)
            (out / name).replace(previous / name)
    return previous


def _kept_note(previous: Path) -> str:
    """What an error message adds about an earlier run's outputs set aside, if any."""
    return f" (the earlier run's outputs wait in {previous})" if previous.is_dir() else ""


def _start_fresh_run(out: Path, progress_file: str) -> str:
    """A run that starts afresh: an earlier run's outputs go aside (its metrics.json, its
    progress, and its worker matrices, which a method without matrices would not replace:
    `kdcrowd plot workers` drew them as this run's) and progress.jsonl starts empty. Returns
    what an error adds (:func:`_kept_note`)."""
    previous = _set_aside(out, _outputs_of_every_command())
    open(progress_file, "w").close()
    return _kept_note(previous)


def _outputs_of_every_command() -> tuple[str, ...]:
    """What `kdcrowd run` and `kdcrowd fit` write into OUT: a run into a fit's folder, or a
    fit into a run's, sets all of them aside (a fit's report.html beside a run's
    metrics.json described another run)."""
    from .report.practitioner import FILES

    return tuple(dict.fromkeys((*RUN_OUTPUTS, *FILES, RUN_FILE)))


def _run_distributed(cfg: Any, data_root: Optional[Path], out: Path, resuming: bool) -> None:
    """`kdcrowd run --distributed` under torchrun: every rank trains; rank 0 loads the data
    first (so a download happens once), writes the files and prints; the process group is
    destroyed at the end."""
    from . import distributed as D
    from .data.datasets import load_dataset
    from .methods import run_on_dataset

    try:
        D.init_from_env(backend="gloo" if cfg.train.device == "cpu" else None)
    except RuntimeError as e:
        _fail(str(e))
    if not D.is_main():
        cfg.progress_file = None  # only rank 0 writes files
    elif not resuming:
        _start_fresh_run(out, cfg.progress_file)
    try:
        load = lambda: load_dataset(cfg.dataset, root=str(data_root) if data_root else None, workers=cfg.workers, seed=cfg.seed, **cfg.dataset_options)  # noqa: E731
        ds, error = None, None
        if D.is_main():
            try:
                ds = load()
            except USER_ERRORS as e:
                error = str(e)
        error = D.broadcast_object(error)  # also the barrier the other ranks wait at
        if error is None:
            try:
                if ds is None:
                    ds = load()
                metrics, output = run_on_dataset(ds, cfg)
            except USER_ERRORS as e:
                error = str(e)
        if error is not None:
            if D.is_main():
                _fail(error)
            raise typer.Exit(2)
        metrics["world_size"] = D.world_size()
        if D.is_main():
            write_json(out / "metrics.json", metrics)
            save_transitions(out, output)
            if cfg.checkpoint_dir:  # complete, with --resume: as a run in one process
                shutil.rmtree(cfg.checkpoint_dir, ignore_errors=True)
            console.print(results_table([metrics], f"{cfg.dataset}" + (f" / workers={cfg.workers}" if cfg.workers else "") + f" / {D.world_size()} processes"))
            console.print(f"wrote {escape(str(out / 'metrics.json'))}", soft_wrap=True, highlight=False)
        D.barrier()
    finally:
        D.cleanup()


DEMO_METHODS = ("mv", "ds", "crowdlayer-mw", "maxmig", "kdcrowd")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output directory for each method's metrics.json."),
    workers: str = typer.Option("maxmig-low-2", help="Simulated-worker case."),
    epochs: int = typer.Option(30, help="Epochs per method (per stage for kdcrowd)."),
    seed: int = typer.Option(0, help="Seed."),
    device: str = typer.Option("cpu", help="Device."),
) -> None:
    """A complete learning-from-crowds run on scikit-learn's digits with simulated workers (CPU, < 2 min).

    The workers follow the Max-MIG 'low expertise + always-class-0 juniors' case, where
    majority vote must fail; the table shows how the baselines, the crowd models and
    KD-Crowd recover the true labels and the workers' confusion matrices.
    """
    from .config import cli_style, option_style
    from .data.datasets import load_dataset
    from .methods import run_on_dataset
    from .outdir import check_out_dir

    rows = []
    teacher = None  # the Max-MIG run, reused as KD-Crowd's teacher (same seed and settings)
    try:  # one error line naming the option, before anything trains where it can be told
        check_out_dir(out)
        if seed < 0:
            raise ValueError(f"--seed must be at least 0; got {seed}")
        with option_style(cli_style):
            cfgs = {method: _run_config("digits", method, workers, epochs, 128, 3e-3, seed, device, "auto",
                                        {"teacher": "maxmig", "kd": "mig-kl"} if method == "kdcrowd" else {}, progress=False) for method in DEMO_METHODS}
            ds = load_dataset("digits", workers=workers, seed=seed)
            for method, cfg in cfgs.items():
                console.print(f"[bold]{method}[/bold] …")
                metrics, output = run_on_dataset(ds, cfg, pretrained_teacher=teacher if method == "kdcrowd" else None)
                if method == "maxmig":
                    teacher = (output.module.model, output.fit)
                write_json(out / method / "metrics.json", metrics)
                rows.append(metrics)
    except USER_ERRORS as e:
        _fail(str(e))
    console.print(results_table(rows, f"digits, {ds.annotations.n_workers} simulated workers ({workers}), seed {seed}"))
    console.print(f"metrics in {escape(str(out))}/<method>/metrics.json", soft_wrap=True, highlight=False)


@app.command()
def aggregate(
    annotations: Path = typer.Option(..., help="Crowd labels: CSV/Parquet (item|task, worker, label), answers.json, or an annotation platform's export (Label Studio, Labelbox, Argilla, doccano, Toloka, MTurk, SageMaker Ground Truth, CVAT; see --format). Item and worker ids are kept as the text in the file."),
    method: str = typer.Option("mv", help="mv, mv-soft, ds, glad, mace, wawa, zbs, one-coin-ds or mmsr."),
    out: Path = typer.Option(..., help="Output CSV with columns item,label,p_<class>..."),
    duplicates: str = typer.Option("error", help=_DUPLICATES_HELP),
    label_case: Optional[str] = typer.Option(None, help=_LABEL_CASE_HELP),
    item_column: Optional[str] = typer.Option(None, help="The column of item ids, when it is not called item or task; of a Toloka or MTurk export, the column whose values name the items (e.g. ASSIGNMENT:task_id; default: the image's file name, else the task id)."),
    format: Optional[str] = typer.Option(None, "--format", help=_FORMAT_HELP),
    field: Optional[str] = typer.Option(None, "--field", help=_FIELD_HELP),
    multi_label: Optional[str] = typer.Option(None, "--multi-label", help=_MULTI_HELP),
    include_rejected: bool = typer.Option(False, "--include-rejected", help=_REJECTED_HELP),
    gold: Optional[Path] = typer.Option(None, "--gold", help="CSV item,label of gold questions (items whose answer is known): they keep their known labels, and the worker estimates of ds, one-coin-ds, glad, mace, wawa and zbs are anchored on them (mv and mmsr only keep their labels)."),
    ds_prior: Optional[float] = typer.Option(None, "--ds-prior", show_default=False, help="Dawid–Skene (--method ds only): pseudo-counts per row shrinking each worker's matrix toward the pooled one (keeps workers with few labels from collapsing every item to one class); 0 gives crowd-kit's exact results. \\[default: 1]"),
    classes: Optional[str] = typer.Option(None, help="The class list, comma-separated, in this order (e.g. 'cat,dog,bird'); labels are matched as text. Default: the sorted set of labels; integer labels are class indices 0..max (a warning names the classes never chosen)."),
    max_iter: Optional[int] = typer.Option(None, "--max-iter", show_default=False, help="The most iterations of an iterative method (ds, glad, mace, zbs, one-coin-ds, mmsr), e.g. to bound M-MSR on a crowd where it does not converge. \\[default: each method's own: 100; mace 50; mmsr 10000, as crowd-kit]"),
) -> None:
    """Aggregate crowd labels without features (majority vote, Dawid–Skene, GLAD, MACE, Wawa, ZBS, one-coin DS, M-MSR)."""
    from .aggregation import _canonical_method, aggregation_frame
    from .aggregators import canonical_aggregator
    from .data.annotations import Annotations
    from .data.items import _as_text
    from .outdir import check_out_file

    class_list = _class_list(classes)
    try:  # ids as text, as `kdcrowd fit` reads them: "0017" stays "0017"
        check_out_file(out, inputs={"--annotations": annotations, "--gold": gold})
        frame, export_gold = _read_crowd_input(annotations, label_case, item_column, **_platform_options(format, field, multi_label, include_rejected), gold_given=gold is not None,
                                               classes=class_list)
        if multi_label == "explode" and duplicates == "error":
            duplicates = "keep"  # one annotation per chosen class: repeated (item, worker) pairs by design
        if class_list is not None:
            frame["label"] = _as_text(frame["label"])  # matched by text, as `kdcrowd fit --classes` matches them
        ann = Annotations.from_long(frame, items=frame.attrs.get("items"), classes=class_list, duplicates=duplicates)  # items nobody labelled get a row too
        known = _gold_questions(gold, annotations, export_gold, ann.item_ids, ann.classes, label_case, items_are="crowd labels in --annotations")
        is_ds = canonical_aggregator(method) is None and _canonical_method(method) == "ds"
        if ds_prior is not None and not 0 <= ds_prior < float("inf"):
            raise ValueError(f"--ds-prior must be a finite number >= 0, got {ds_prior}")
        if ds_prior is not None and not is_ds:
            _warn(f"--ds-prior is Dawid–Skene's (--method ds); {method} does not use it")
        extra: dict[str, Any] = {"prior": ds_prior} if is_ds and ds_prior is not None else {}  # else Dawid–Skene's DS_PRIOR
        if max_iter is not None:
            if max_iter < 1:
                raise ValueError(f"--max-iter must be at least 1; got {max_iter}")
            if not is_ds and canonical_aggregator(method) in (None, "wawa"):
                raise ValueError(f"--max-iter bounds an iterative method (ds, glad, mace, zbs, one-coin-ds, mmsr); {method} counts votes once")
            extra["n_iter"] = max_iter
        _warn_unused_classes(ann, method)  # once the options are known good, before aggregating: a stray label (700 among 0/1) makes K large, and the methods slow
        with _input_warnings():  # Dawid–Skene's note on sparse workers: one warning line
            frame = aggregation_frame(ann, method, gold=known, **extra)
        check_out_file(out, create=True)
        write_csv(frame, out)
    except USER_ERRORS as e:
        _fail(str(e))
    console.print(f"aggregated {len(ann)} annotations on {ann.n_items} items from {ann.n_workers} workers with {escape(method)}; wrote {escape(str(out))}", soft_wrap=True, highlight=False)


#: What an image's item id is, by --image-ids style.
_IMAGE_ID_KINDS = {"stem": "file name without extension", "name": "file name", "path": "relative path"}


def _load_items(features: Optional[Path], images: Optional[Path], item_ids: Optional[Path], image_size: Any, image_ids: str, wanted: list[Any],
                keep_columns: Any = ()) -> tuple[Any, Any, str, Any, Any, Optional[str]]:
    """``(ids, load, description, image files or None, feature column names or None, image id
    style or None)`` of ``--features`` (``keep_columns``: a model's training columns, see
    :func:`kdcrowd.data.items.read_features`) or ``--images``;
    ``load()`` returns the item array. Images are decoded only when ``load`` is called, so
    the ids can be checked against the crowd labels first.

    Image ids follow ``image_ids`` (``auto``: the style under which the files cover the ids
    in ``wanted``, see :func:`kdcrowd.data.items.match_image_ids`). ``image_size``: the side of
    the square RGB images, or a model's item shape ``(height, width, channels)``."""
    from .data.items import list_image_files, load_images, match_image_ids, read_features

    if features is not None:
        with _input_warnings():  # (an index column skipped)
            ids, X, columns = read_features(features, item_ids=item_ids, with_columns=True, keep_columns=keep_columns)
        return ids, lambda: X, f"features from {features.name}, {X.shape[1]} columns", None, columns, None
    assert images is not None
    with _input_warnings():
        files = list_image_files(images)
    style, ids = match_image_ids(files, images, wanted, image_ids)
    kind = _IMAGE_ID_KINDS[style]
    h, w, c = tuple(image_size) if isinstance(image_size, tuple) else (image_size, image_size, 3)
    grey = "greyscale " if c == 1 else ""
    return ids, lambda: load_images(files, (h, w), channels=c), f"{grey}images from {images}, resized to {w}×{h} px; item id = {kind}", files, None, style


def _text_id_columns(item_column: Optional[str], in_crowd_labels: bool = False) -> tuple[str, ...]:
    """The names a texts file's id column may have, the first found taken: ``item`` and
    ``task`` as for crowd labels; ``--item-column`` alone where it was given for the texts
    (the crowd labels lack it, or there are none), else it first (it named the crowd labels'
    column, which the texts may lack). A column the user named and no file has is refused."""
    if item_column is None:
        return ("item", "task")
    return tuple(dict.fromkeys((item_column, "item", "task"))) if in_crowd_labels else (item_column,)


def _load_texts(path: Path, text_column: str, item_column: tuple[str, ...]) -> tuple[Any, Any, str, None, None, str]:
    """Like :func:`_load_items` for ``--texts`` (``item_column``: the id column's possible
    names, :func:`_text_id_columns`): ``load()`` returns ``(TF-IDF features, the fitted
    TextFeaturizer)`` (:func:`kdcrowd.data.texts.text_features`); the last entry is the id
    column read."""
    import numpy as np

    from .data.texts import read_texts, text_features

    ids, texts, id_column = read_texts(path, id_column=item_column, text_column=text_column, with_column=True)
    described = f"texts from {path.name} (column {text_column}), TF-IDF of words and word pairs"
    return np.asarray(ids, dtype=object), lambda: text_features(texts), described, None, None, id_column


def _frozen_features(images: Any, backbone: str, device: str, norm: str = "none") -> Any:
    """Frozen features ``(N, F)`` of uint8 images by the pretrained ``backbone``
    (:func:`kdcrowd.models.pretrained.extract_features`, cached on disk), scaled by ``norm``
    (:func:`kdcrowd.models.pretrained.normalise_features`)."""
    from .models.pretrained import extract_features, normalise_features
    from .training import resolve_device

    try:
        with _input_warnings():  # a feature cache that cannot be written: one warning line
            return normalise_features(extract_features(images, backbone, device=resolve_device(device)), norm)
    except ImportError as e:  # its message names the install command (kdcrowd[pretrained], or torchvision / timm)
        raise ValueError(f"the frozen {backbone} features need {'their' if ':' in backbone else 'the pretrained'} networks: {e}") from e


@app.command()
@with_spreading_options
@with_door_options
def fit(
    ctx: typer.Context,
    annotations: Optional[Path] = typer.Option(None, help="Crowd labels: CSV/TSV/Parquet with columns item (or task), worker, label; a wide table (one row per item, one column per worker, blank or -1 for no label); peerannot answers.json; or an annotation platform's export (Label Studio, Labelbox, Argilla, doccano, Toloka, MTurk, SageMaker Ground Truth, CVAT; recognised from the content, see --format). Item ids are matched as text."),
    out: Optional[Path] = typer.Option(None, help="Output folder: labels.csv, predictions.csv, workers.csv, transition_matrices.npz, model.pt, metrics.json, report.html."),
    features: Optional[Path] = typer.Option(None, help="Item features: .npy (row i is item i, or see --item-ids), or .csv/.parquet with an 'item' column and numeric feature columns."),
    images: Optional[Path] = typer.Option(None, help="Folder of images (png, jpg, jpeg, bmp, webp; searched recursively); see --image-ids for the item ids and --image-features for the network."),
    texts: Optional[Path] = typer.Option(None, help="Texts of the items: CSV/TSV/Parquet/JSONL with an id column (item, or --item-column) and a text column (--text-column); TF-IDF features of words and word pairs, fitted on these texts."),
    text_column: str = typer.Option(DEFAULT_TEXT_COLUMN, help="With --texts: the column holding the text."),
    item_ids: Optional[Path] = typer.Option(None, help="With a .npy --features: a text file with one item id per line, in row order."),
    predict_features: Optional[Path] = typer.Option(None, help="Features of new items to label with the trained classifier (same columns as --features); written to predictions.csv."),
    predict_images: Optional[Path] = typer.Option(None, help="Folder of new images to label with the trained classifier; written to predictions.csv."),
    predict_texts: Optional[Path] = typer.Option(None, help="Texts of new items to label with the trained classifier (same columns as --texts); written to predictions.csv."),
    predict_item_ids: Optional[Path] = typer.Option(None, help="With a .npy --predict-features: one item id per line."),
    classes: Optional[str] = typer.Option(None, help="The class list, comma-separated, in this order (e.g. 'cat,dog,bird'); labels are matched as text. Default: the sorted set of labels; integer labels are class indices 0..max (a warning names the classes never chosen)."),
    truth: Optional[Path] = typer.Option(None, "--truth", "--val-labels", help="CSV item,label of known true labels for some items; used only to report the accuracy of the final labels, never for training or model selection."),
    gold: Optional[Path] = typer.Option(None, "--gold", help="CSV item,label of gold questions (items whose answer is known): their known labels are the training targets and the final labels of those items, the worker estimates of the aggregate-then-train methods (ds, one-coin-ds, glad, mace, wawa, zbs; not mv, mmsr) and Max-MIG's start are anchored on them, and workers.csv reports each worker's accuracy on them (gold_n, gold_accuracy)."),
    image_size: int = typer.Option(DEFAULT_IMAGE_SIZE, help="Images are converted to RGB and resized to this many pixels square (bilinear)."),
    image_features: str = typer.Option("auto", help="With --images: auto (default: frozen ImageNet features of EfficientNet-Lite0, each image's scaled to unit length, with an MLP head trained on them when kdcrowd\\[pretrained] is installed, else a network trained from scratch), frozen (frozen features of --backbone auto|efficientnet-lite0|efficientnet-lite1|efficientnet-lite2|torchvision:NAME|timm:NAME; an error without them) or none (train --backbone on the pixels: from scratch, or fine-tuned as a whole for a pretrained name). Images are read at --image-size between 128 and 224 px for frozen features."),
    final_labels: str = typer.Option("classifier", help="Where labels.csv comes from: classifier (default: the trained classifier's prediction for each item) or posterior (the classifier's p(y|x) times the worker matrices' probability of each crowd label the item got, normalised: Dawid–Skene's posterior with the classifier as prior; better when workers err independently, up to 3 points worse on LabelMe, docs/RESULTS.md §7h)."),
    image_ids: str = typer.Option("auto", help="Item id of an image: stem (file name without extension; relative path without extension when names clash), name (with extension), path (relative path), or auto (whichever the annotations use). Whatever the style, an annotation id that is a path (absolute, ./a/b.png) names the image at that path relative to --images; a path outside it, the one image of that file name."),
    seed: int = typer.Option(0, help="Seed of the validation split, initialisation and batch order."),
    validation_fraction: float = typer.Option(0.0, help="Share of the labelled items held out of training for model selection against their Dawid–Skene labels; 0 (default, better on LabelMe and CIFAR-10N, see docs/RESULTS.md §6) trains on every item and keeps the last epoch."),
    duplicates: str = typer.Option("error", help=_DUPLICATES_HELP),
    label_case: Optional[str] = typer.Option(None, help=_LABEL_CASE_HELP),
    item_column: Optional[str] = typer.Option(None, help="The column of item ids in the annotation file and/or in --texts, when it is not called item (or task); of a Toloka or MTurk export, the column whose values name the items (e.g. ASSIGNMENT:task_id; default: the image's file name, else the task id)."),
    format: Optional[str] = typer.Option(None, "--format", help=_FORMAT_HELP),
    field: Optional[str] = typer.Option(None, "--field", help=_FIELD_HELP),
    multi_label: Optional[str] = typer.Option(None, "--multi-label", help=_MULTI_HELP),
    include_rejected: bool = typer.Option(False, "--include-rejected", help=_REJECTED_HELP),
    resume: Optional[Path] = typer.Option(None, help="Continue the interrupted run in this output folder, with the settings it was started with (give no other option)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    **options: Any,
) -> None:
    """Train on your own crowd labels and items: a classifier, a clean label for every item,
    each worker's confusion matrix and a report to look at (OUT/report.html).

    Finished epochs are checkpointed in OUT/checkpoints (at most every --checkpoint-interval
    seconds, and always on Ctrl-C or SIGTERM); after an interruption `kdcrowd fit --resume
    OUT` continues from the last epoch written (after a lost machine up to that many seconds
    are trained again) and ends with the same results as an uninterrupted run.

    The method and training options are those of `kdcrowd run` and of KDCrowdClassifier,
    with the same names and defaults."""
    # ctx.params holds what the parser gave: paths arrive as text with some click versions
    params = _fit_paths(ctx.params)
    given = _given_options(ctx)
    if resume is not None:
        extra = [f"--{k.replace('_', '-')}" for k in params if k in given and k not in ("resume", "quiet")]
        if extra:
            _fail(f"--resume continues a run with the settings it was started with; drop {', '.join(extra)}")
        _fail_if_in_use(resume, "--resume")
        run_file = resume / RUN_FILE
        if not run_file.exists():
            _fail(f"{resume} holds no run to resume (no {RUN_FILE}); start one with `kdcrowd fit ... --out {resume}`")
        if (resume / "report.html").exists() and not (resume / CHECKPOINTS).exists():
            _fail(f"the run in {resume} has finished (report.html is there); there is nothing to resume")
        saved = _read_run_file(resume)["settings"]
        params.update(_fit_paths(saved))
        params["out"] = resume
        console.print(f"resuming the run in {escape(str(resume))}", soft_wrap=True)
        return _fit_and_release(params, resume=True, given=frozenset())  # its options were checked when it started
    if annotations is None or out is None:
        _fail("give --annotations FILE and --out DIR (or --resume OUT to continue an interrupted run)")
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder; give a folder (it is created if missing)")
    _fail_if_in_use(out, "--out")
    if (out / CHECKPOINTS).exists():
        if (out / RUN_FILE).exists():
            _fail(f"{out} holds an interrupted run; continue it with `kdcrowd fit --resume {out}`, or choose another --out (or delete {out / CHECKPOINTS})")
        _fail(f"{out} holds checkpoints of another command (no {RUN_FILE}: e.g. `kdcrowd run --resume`); choose another --out (or delete {out / CHECKPOINTS})")
    return _fit_and_release(params, resume=False, given=given)


def _read_run_file(out: Path) -> dict[str, Any]:
    """``OUT/run.json`` of an interrupted fit (its ``settings`` and recorded choices); a
    file that is not one is one error naming ``--resume``."""
    try:
        run = json.loads((out / RUN_FILE).read_text())
        if not isinstance(run, dict) or not isinstance(run.get("settings"), dict):
            raise ValueError("it has no 'settings' object")
    except (OSError, ValueError) as e:  # (json's decode error is a ValueError)
        _fail(f"--resume {out}: {out / RUN_FILE} is not the record of a kdcrowd fit ({e}); start afresh with another --out")
    return run


def _command_start(started: float) -> float:
    """When the command started, for its ``timings`` (a :func:`time.perf_counter` time):
    the process's start when the process is the command (``kdcrowd ...``, ``python -m
    kdcrowd ...``: its imports are then its startup), else ``started`` (the command called
    inside a longer-lived process, e.g. a test: no startup of its own)."""
    import sys

    entry = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    own = entry.stem == "kdcrowd" or (entry.name == "__main__.py" and entry.parent.name == "kdcrowd")
    return process_start() if own else started


def _fail_if_in_use(path: Path, option: str) -> None:
    """Stop at once when another kdcrowd run holds the lock on the folder ``path``."""
    from .outdir import check_not_in_use

    try:
        check_not_in_use(path, option)
    except USER_ERRORS as e:
        _fail(str(e))


def _fit_and_release(p: dict[str, Any], resume: bool, given: frozenset[str]) -> None:
    """:func:`_fit`, then the lock on OUT (taken by :func:`_fit`) is released."""
    from .outdir import release

    try:
        _fit(p, resume=resume, given=given)
    finally:
        release(p["out"])


#: The `kdcrowd fit` options that are paths.
FIT_PATH_PARAMS = ("annotations", "out", "features", "images", "texts", "item_ids", "predict_features", "predict_images", "predict_texts", "predict_item_ids", "truth", "gold")
#: The side (px) images are read at for frozen pretrained features: --image-size within these bounds
#: (the network resizes them to its own 224 px on the device).
FEATURE_IMAGE_SIDE = (128, 224)


def _image_feature_backbone(mode: str, backbone: str) -> tuple[Optional[str], str]:
    """:func:`kdcrowd.models.backbones.image_feature_backbone`, its messages naming the
    command-line options."""
    from .config import cli_style, option_style
    from .models.backbones import image_feature_backbone

    with option_style(cli_style):
        return image_feature_backbone(mode, backbone)


def _fit_paths(settings: dict[str, Any]) -> dict[str, Any]:
    """`kdcrowd fit` settings with the path options as ``Path`` (the parser, and run.json,
    may give them as text)."""
    return {k: (Path(v) if k in FIT_PATH_PARAMS and v is not None else v) for k, v in settings.items()}


#: The library's choices for frozen features that ``run.json`` records beside the settings, each
#: with what a run started before it was recorded used: how the features are scaled
#: (:data:`kdcrowd.models.pretrained.FROZEN_FEATURE_NORM`) and KD-Crowd's part of the head
#: recipe (:data:`kdcrowd.doors.FROZEN_FEATURE_KD`).
_RECORDED_BEFORE = {"frozen_feature_norm": "none", "frozen_feature_kd": {}}


def _recorded_choices(out: Path, resume: bool) -> dict[str, Any]:
    """The library's choices of :data:`_RECORDED_BEFORE` for a new fit; for a resumed run the
    ones its ``run.json`` records (those of :data:`_RECORDED_BEFORE` where it has none), so that
    it trains as its checkpoints were made."""
    from .doors import FROZEN_FEATURE_KD
    from .models.pretrained import FROZEN_FEATURE_NORM

    if not resume:
        return {"frozen_feature_norm": FROZEN_FEATURE_NORM, "frozen_feature_kd": dict(FROZEN_FEATURE_KD)}
    run = _read_run_file(out)
    return {k: run.get(k, before) for k, before in _RECORDED_BEFORE.items()}


def _undo_unstarted_fit(out: Path, ckpt: Path, previous: Path) -> bool:
    """Where a fit stopped before saving any epoch, put OUT back as it was (no run.json, no
    checkpoints, an earlier run's outputs back from ``previous``) and return True; otherwise
    (epochs saved: a run to resume) change nothing and return False."""
    import shutil

    if any(ckpt.glob("*.pt")):
        return False
    shutil.rmtree(ckpt, ignore_errors=True)
    (out / RUN_FILE).unlink(missing_ok=True)
    if previous.is_dir():
        for f in previous.iterdir():
            f.replace(out / f.name)
        previous.rmdir()
    return True


def _fit(p: dict[str, Any], resume: bool, given: frozenset[str]) -> None:
    """The body of `kdcrowd fit` on its settings ``p`` (fresh or read back by --resume);
    ``given``: the options the user gave (:func:`_given_options`; none for a resumed run,
    whose options were checked when it started)."""
    import shutil

    import numpy as np
    import pandas as pd

    from .aggregation import majority_vote_disagreements, majority_vote_winners
    from .cli_checks import check_training_settings
    from .data.annotations import AnnotationError, Annotations
    from .data.gold import gold_values
    from .data.items import _as_text, align_feature_columns, read_item_labels, respell_ids
    from .crowdfit import MIN_IMAGE_SIDE, CrowdFit
    from .doors import apply_head_recipe
    from .outdir import check_out_dir, prepare_out_dir
    from .report.html import thumbnails_from_files
    from .report.practitioner import FILES, write_fit_outputs

    started = time.perf_counter()  # the imports are done: what came before is startup
    out: Path = p["out"]
    recorded = _recorded_choices(out, resume)
    feature_norm = recorded["frozen_feature_norm"]
    features, images, method = p["features"], p["images"], p["method"]
    duplicates = p["duplicates"]
    texts, predict_texts = p.get("texts"), p.get("predict_texts")
    if sum(v is not None for v in (features, images, texts)) != 1:
        _fail("give the items with exactly one of --features FILE (.npy, .csv, .parquet), --images DIR or --texts FILE (.csv, .tsv, .parquet, .jsonl)")
    given_predict = [o for o, k in (("--predict-features", "predict_features"), ("--predict-images", "predict_images"), ("--predict-texts", "predict_texts")) if p.get(k) is not None]
    if len(given_predict) > 1:
        _fail(f"give the items to predict with at most one of --predict-features, --predict-images or --predict-texts, not {' and '.join(given_predict)}")
    kind = "--features" if features is not None else "--images" if images is not None else "--texts"
    if given_predict and given_predict[0] != "--predict-" + kind[2:]:
        _fail(f"the items to predict must be of the same kind as the training items: --predict-{kind[2:]} with {kind}, not {given_predict[0]}")
    from .models.backbones import IMAGE_FEATURE_MODES

    image_mode = p.get("image_features") or "auto"
    if image_mode not in IMAGE_FEATURE_MODES:
        _fail(f"--image-features must be auto, frozen or none, not {image_mode!r}")
    from .crowdfit import FINAL_LABELS

    if (p.get("final_labels") or "classifier") not in FINAL_LABELS:
        _fail(f"--final-labels must be one of {', '.join(FINAL_LABELS)}, not {p.get('final_labels')!r}")
    from .config import ConfigError, cli_style, option_style
    from .doors import spreading_options
    from .spreading import LabelSpreading

    try:
        with option_style(cli_style):
            spreading = LabelSpreading(**{o.name: p[o.name] for o in spreading_options() if o.name in p})
    except ConfigError as e:
        _fail(str(e))
    # options given without the items they are for (they would have no effect); a resumed fit
    # gives none: it resumes as it started, a fit started before these checks included
    for option, items, needed in (("image_features", images, "--images"), ("image_size", images, "--images"),
                                  ("image_ids", images, "--images"), ("text_column", texts, "--texts")):
        if option in given and items is None:
            _fail(f"--{option.replace('_', '-')} goes with {needed}")
    if method == "clean":
        _fail("method 'clean' trains on ground-truth labels, which crowd labels do not give; choose another --method (kdcrowd, maxmig, mv, ...)")
    from .doors import door_options

    door = {o.name: p[o.name] for o in door_options() if o.name in p}
    door["model_option"] = p.get("model_option") or []
    _door_settings(door, seed=p["seed"], progress=not p["quiet"], given=given)  # every option checked before any file is read
    door_values = {k: v for k, v in door.items() if k != "model_option"}
    door_values["model_options"] = parse_key_values(door["model_option"], flag="--model-option")
    if p["image_ids"] not in ("auto", "stem", "name", "path"):
        _fail(f"--image-ids must be auto, stem, name or path, not '{p['image_ids']}'")
    if images is not None and p["image_size"] < MIN_IMAGE_SIDE:
        _fail(f"--image-size must be at least {MIN_IMAGE_SIDE} pixels, got {p['image_size']}")
    if p["item_ids"] is not None and features is None:
        _fail("--item-ids goes with a .npy --features file (images are named by their files)")
    if p["predict_item_ids"] is not None and p["predict_features"] is None:
        _fail("--predict-item-ids goes with a .npy --predict-features file")
    if not 0.0 <= p["validation_fraction"] < 1.0:
        _fail(f"--validation-fraction must be in [0, 1), got {p['validation_fraction']}")
    class_list = _class_list(p["classes"])
    if p.get("label_case") not in (None, "fold", "keep"):
        _fail(f"--label-case must be fold or keep, not '{p['label_case']}'")
    try:
        check_training_settings(p)
        check_out_dir(out)
    except USER_ERRORS as e:
        _fail(str(e))
    names = _outputs_of_every_command()  # what fit writes, and what it sets aside or removes as an earlier run's (kdcrowd run's too)
    written = {(out / name).resolve() for name in names}
    for key in FIT_PATH_PARAMS:  # an input where fit writes its results (or clears an earlier run's) would be deleted first
        if key != "out" and p.get(key) is not None and Path(p[key]).resolve() in written:
            _fail(f"--{key.replace('_', '-')} {p[key]} is a file that kdcrowd fit writes or clears in --out {out} (the "
                  f"outputs of a run there: {', '.join(names)}); move or rename the input, or give another --out")
    try:
        platform = {**_platform_options(p.get("format"), p.get("field"), p.get("multi_label"), bool(p.get("include_rejected"))), "gold_given": p.get("gold") is not None,
                    "classes": class_list}
        crowd_has_column = p.get("item_column") is not None  # --item-column names the crowd labels' id column
        try:
            # export_gold: the export's own gold answers (Toloka GOLDEN, Label Studio ground_truth): the gold questions unless --gold
            frame, export_gold = _read_crowd_input(p["annotations"], p.get("label_case"), p.get("item_column"), **platform)
        except ValueError as e:  # with --texts, --item-column may name the id column of the texts only
            if texts is None or p.get("item_column") is None or not str(e).startswith("--item-column"):
                raise
            frame, export_gold = _read_crowd_input(p["annotations"], p.get("label_case"), None, **platform)
            crowd_has_column = False
        text_ids = _text_id_columns(p.get("item_column"), crowd_has_column)
        if p.get("multi_label") == "explode" and duplicates == "error":
            duplicates = "keep"  # one annotation per chosen class: repeated (item, worker) pairs by design
        if class_list is not None and "label" in frame.columns:
            frame["label"] = _as_text(frame["label"])  # matched by text, as written (a Parquet 1.0 is "1")
        col = "item" if "item" in frame.columns else "task"
        wanted = pd.unique(frame[col].dropna()).tolist() if col in frame.columns else []  # each labelled item once
        frozen, backbone_note = (None, "")
        if images is not None:
            frozen, backbone_note = _image_feature_backbone(image_mode, p["backbone"])
        side = min(max(p["image_size"], FEATURE_IMAGE_SIDE[0]), FEATURE_IMAGE_SIDE[1]) if frozen else p["image_size"]
        id_style = None
        if texts is not None:
            ids, load, described, files, columns, text_id_column = _load_texts(texts, p.get("text_column") or "text", text_ids)
        else:
            ids, load, described, files, columns, id_style = _load_items(features, images, p["item_ids"], side, p["image_ids"], wanted)
        if images is None:  # an id stored in another Unicode form finds its crowd labels (images: done by their matching)
            ids = respell_ids(ids, wanted)
        try:
            ann = Annotations.from_long(frame, items=ids, classes=class_list, duplicates=duplicates)
        except AnnotationError as e:
            if "duplicate (item, worker)" in str(e):
                raise AnnotationError(f"{p['annotations']}: {e} On the command line: --duplicates first|last|keep.") from e
            if "no features" not in str(e):
                raise
            if images is not None:  # named by the id style; paths matched to the images' paths (match_image_ids)
                chose = f" (here {id_style})" if p["image_ids"] == "auto" else ""
                source = (f"the files in {images} as --image-ids {p['image_ids']}{chose} names them ({_IMAGE_ID_KINDS[id_style]}; an id that is a path is "
                          f"matched to the image's path relative to --images, a path outside it by its file name where one image has it)")
            elif texts is not None:
                source = f"the {text_id_column!r} column of {texts}"
            elif features.suffix.lower() != ".npy":
                source = f"the 'item' column of {features}"
            else:
                source = f"the lines of {p['item_ids']}" if p["item_ids"] is not None else f"the row numbers 0..{len(ids) - 1} of {features} (a .npy file has no ids: give them with --item-ids FILE, one id per row)"
            raise AnnotationError(f"{p['annotations']}: {e} The {len(ids)} known items are named by {source}, e.g. {', '.join(repr(v) for v in ids[:3])}.") from e
        if ann.n_classes < 2:
            raise AnnotationError(f"{p['annotations']}: every label is {ann.classes[0]!r}; learning from crowds needs at least 2 classes (list them with --classes if some never occur)")
        items_are = "images" if images is not None else "texts" if texts is not None else "features"
        gold = read_item_labels(p["truth"], ids, ann.classes, items_are=items_are, fold_case=p.get("label_case") == "fold") if p["truth"] is not None else None
        gold_vec = _gold_questions(p.get("gold"), p["annotations"], export_gold, ids, ann.classes, p.get("label_case"), items_are=items_are)
        gold_questions = None if gold_vec is None else gold_values(gold_vec, ann.classes)
        if gold is not None and gold_vec is not None and (asked := gold_vec[gold[0]] >= 0).any():
            # a gold question's final label is its known answer: scoring it would count that answer as learnt
            n = int(asked.sum())
            gold = None if asked.all() else (gold[0][~asked], gold[1][~asked])
            source = "--gold" if p.get("gold") is not None else f"the gold answers of {p['annotations']}"
            _warn(f"{n} of the {len(asked)} items of --truth {p['truth']} are gold questions ({source}), whose final labels are their known answers: "
                  + ("no item is left to score the final labels on; give --truth items that are not gold questions" if gold is None else
                     f"the accuracy of the final labels is reported on the other {len(gold[0])}"))
        X = load()  # images are decoded once the labels, ids and truths are known to be right
        input_transform = None
        if images is not None:
            err_console.print(escape(backbone_note), soft_wrap=True, highlight=False)
        if frozen is not None:
            X = _frozen_features(X, frozen, p["device"], feature_norm)
            described += f"; frozen {frozen} features ({X.shape[1]} per image, scaled: {feature_norm})"
            input_transform = {"kind": "image-features", "backbone": frozen, "image_size": int(side), "norm": feature_norm}
            door_values["backbone"] = "auto"  # an MLP head on the features
            if door_values.get("head_recipe", "auto") == "auto":  # auto: the input is frozen pretrained features
                door_values["head_recipe"] = "frozen-features"
        elif texts is not None:
            X, featurizer = X
            input_transform = {"kind": "text", "text_column": p.get("text_column") or "text", "item_column": text_id_column, "featurizer": featurizer.to_state()}
        head_recipe = door_values.get("head_recipe", "auto")  # as the report shows it
        if head_recipe == "frozen-features":  # resolved here with the run's own KD-Crowd part, then given as is
            before = dict(door_values)
            door_values = {**apply_head_recipe(door_values, frozen_features=True, kd=recorded["frozen_feature_kd"]), "head_recipe": "shared"}
            changed = [f"--{k.replace('_', '-')} {door_values[k]}" for k in door_values if k != "head_recipe" and door_values[k] != before.get(k)]
            if changed and not resume:  # an option given its shared default by hand is replaced too: say so
                err_console.print(escape(f"note: the frozen-features head recipe set {', '.join(changed)} (the options left at their shared defaults); "
                                         "give another value, or --head-recipe shared, to keep yours"), soft_wrap=True, highlight=False)
        if columns is not None:  # the model keeps the column names (feature_names_in_) for `kdcrowd predict`
            X = pd.DataFrame(X, columns=columns)
        predict = None
        if predict_texts is not None:
            from .data.texts import read_texts

            pids, ptexts = read_texts(predict_texts, id_column=text_ids, text_column=p.get("text_column") or "text")
            predict = (np.asarray(pids, dtype=object), featurizer.transform(ptexts))
        elif p["predict_features"] is not None or p["predict_images"] is not None:
            # new images named as the training images are (auto: the style their ids matched)
            pstyle = p["image_ids"] if p["image_ids"] != "auto" else id_style or "stem"
            pids, pload, _, _, pcolumns, _ = _load_items(p["predict_features"], p["predict_images"], p["predict_item_ids"], side, pstyle, [], keep_columns=columns or ())
            PX = pload()
            if frozen is not None:
                PX = _frozen_features(PX, frozen, p["device"], feature_norm)
            if features is not None:  # matched to the training columns by name
                PX = align_feature_columns(PX, pcolumns, columns, f"--predict-features {p['predict_features']}", "--predict-features")
                PX = PX if columns is None else pd.DataFrame(PX, columns=columns)
            if PX.shape[1:] != X.shape[1:]:
                raise ValueError(f"the items to predict have shape {PX.shape[1:]} but the training items {X.shape[1:]}; give features with the same columns")
            predict = (pids, PX)
        again = None  # training items among the items to predict: two rows with one id in the outputs (each file's ids are unique)
        if predict is not None:
            both = pd.Index(ids).astype(str).intersection(pd.Index(predict[0]).astype(str))
            if len(both):
                again = (f"{given_predict[0]} names {len(both)} item(s) that are training items too ({', '.join(map(repr, both[:5]))}{' ...' if len(both) > 5 else ''}); "
                         "predictions.csv lists them again beside their row in labels.csv (or predictions.csv, without crowd labels)")
        from .models.backbones import check_backbone_items

        with option_style(cli_style):  # what the fit would find only once it builds its networks
            check_backbone_items(door_values["backbone"], X.shape[1:])  # images load as (H, W, C)
            spreading.check_items(tuple(X.shape))
            if not resume:  # (a fit started before this check resumes as it started)
                spreading.check_used(frozen is not None)
    except USER_ERRORS as e:
        _fail(str(e))

    try:  # every setting and input is checked: now OUT is created and locked for this run
        prepare_out_dir(out)
    except USER_ERRORS as e:
        _fail(str(e))
    ckpt = out / CHECKPOINTS
    previous = out / PREVIOUS_RUN
    if not resume:  # an earlier finished run's outputs go aside (nothing stale looks new), back if this fit is refused
        _set_aside(out, _outputs_of_every_command())
        write_json(out / RUN_FILE, {"command": "kdcrowd fit", "settings": {k: (str(v.absolute()) if isinstance(v, Path) else v) for k, v in p.items() if k not in ("resume", "quiet")},  # absolute: --resume from any folder
                                    **recorded}, durable=True)  # as durable as the checkpoints it lets --resume continue
    clf = CrowdFit(  # the estimator's engine without scikit-learn: the inputs are checked above
        **door_values, random_state=p["seed"], duplicates=duplicates, verbose=not p["quiet"],
        validation_fraction=p["validation_fraction"], checkpoint_dir=str(ckpt), track_memorization=True, final_labels=p.get("final_labels") or "classifier",
        image_features="none",  # --image-features is resolved above: X holds the frozen features, or the pixels to train on
        # --label-spreading auto is resolved here: on for the frozen features computed above (off: its settings, refused above unless resumed, are moot)
        **({"label_spreading": "on", "spreading_neighbours": spreading.spreading_neighbours, "spreading_alpha": spreading.spreading_alpha}
           if spreading.active(frozen is not None) else {"label_spreading": "off"}),
    )
    clf.replace_finished_checkpoint = not resume  # --resume continues this folder's run, or refuses other settings
    t_fit = time.perf_counter()
    try:
        with option_style(cli_style), _input_warnings():  # an error or warning about an option names it as --option
            # the items to predict join the fit only for label spreading's graph (without it they are predicted after the fit)
            clf.fit(X, ann, gold=gold_questions, unlabelled=predict[1] if predict is not None and spreading.active(frozen is not None) else None)
    except (KeyboardInterrupt, Exception) as e:
        undone = not resume and _undo_unstarted_fit(out, ckpt, previous)  # stopped before any saved epoch: OUT as it was
        kept = _kept_note(previous)
        if isinstance(e, (ImportError, *USER_ERRORS)):  # ImportError: a network's package missing (torchvision, timm); its message names the install
            _fail(f"{e}{kept}")
        if not isinstance(e, KeyboardInterrupt):
            raise  # a fault keeps its traceback; OUT is as it was if nothing was saved
        if undone:
            err_console.print(f"[yellow]interrupted[/yellow] before any epoch was saved; {escape(str(out))} is as it was", soft_wrap=True)
        else:
            err_console.print(f"[yellow]interrupted.[/yellow] Every finished epoch is saved in {escape(str(ckpt))}; continue with: kdcrowd fit --resume {escape(str(out))}{escape(kept)}", soft_wrap=True)
        raise typer.Exit(130) from None
    if class_list is None:  # once the fit has succeeded: a failing command prints its error alone
        _warn_unused_classes(ann)
    if again is not None:
        _warn(again)
    settings: dict[str, Any] = {"annotations": p["annotations"], "items": features if features is not None else images if images is not None else texts, "method": method}
    if method == "kdcrowd":  # the student and lambda2 as the recipe resolved them above
        settings.update(teacher=p["teacher"], student=door_values["student"], lambda2=door_values["lambda2"])
    settings.update({"backbone": f"MLP head on frozen {frozen} features" if frozen else p["backbone"], "head recipe": head_recipe, "epochs": door_values["epochs"], "batch size": door_values["batch_size"], "learning rate": door_values["lr"], "weight decay": door_values["weight_decay"], "seed": p["seed"], "device": p["device"], "validation fraction": p["validation_fraction"], "duplicates": duplicates})
    settings["final labels"] = clf.label_source_  # classifier or posterior, and why
    sp = clf.spreading_
    settings["label spreading"] = "off" if sp is None else f"on: {sp['config'].spreading_neighbours} neighbours, alpha {sp['config'].spreading_alpha:g}"
    if p.get("gold") is not None:
        settings["gold questions"] = p["gold"]
    elif gold_questions is not None:
        settings["gold questions"] = f"{p['annotations']} (the export's gold answers)"
    t_pred = time.perf_counter()
    pred = None if predict is None else (predict[0], clf.predict_proba(predict[1]))  # inputs as X: already scaled
    # written into model.pt (`kdcrowd predict` computes the same inputs), once the items above were predicted:
    # with it, predict_proba scales frozen image features itself (they were scaled twice)
    clf.input_transform_ = input_transform
    clf.image_id_style_ = id_style  # kdcrowd predict names new images the same way
    timings = dict(clf.metrics_["timings"])
    since = _command_start(started)
    timings["startup"] = started - since
    timings["data_preparation"] += t_fit - started  # the inputs read and checked
    timings["evaluation"] += time.perf_counter() - t_pred  # the items of --predict-*
    try:
        paths = write_fit_outputs(
            out, clf, ann, ids, described, settings, gold=gold, predict=pred, thumbnail=thumbnails_from_files(files) if files is not None else None,
            timings=timings, since=since,
        )
    except USER_ERRORS as e:  # e.g. a full disk or a folder without write permission; the checkpoints stay
        _fail(f"writing the outputs to {out} failed ({e}); fix that, then `kdcrowd fit --resume {out}` writes them without training again")
    shutil.rmtree(ckpt, ignore_errors=True)  # the run is complete; its outputs replace the checkpoints
    shutil.rmtree(previous, ignore_errors=True)  # and the earlier run's
    final = clf.label_proba_.argmax(1)
    labelled = ann.labels_per_item() > 0
    changed = int(majority_vote_disagreements(majority_vote_winners(ann), final).sum())  # any class of a tie agrees, as in the report
    console.print(f"fitted {method} on {ann.n_items} items ({int(labelled.sum())} labelled), {ann.n_workers} workers, {len(ann)} annotations; {changed} final labels differ from majority vote", soft_wrap=True)
    if gold is not None:
        console.print(f"accuracy of the final labels on the {len(gold[0])} items of {escape(str(p['truth']))}: {float((final[gold[0]] == gold[1]).mean()):.3f}", soft_wrap=True)
    console.print(f"wrote {len(paths)} files to {escape(str(out))}:", soft_wrap=True)
    for path in paths.values():
        console.print(f"  {escape(str(path))}", soft_wrap=True, highlight=False)
    console.print(f"open {escape(str(paths['report.html']))}", soft_wrap=True)


@app.command()
def predict(
    model: Path = typer.Option(..., help="A model.pt written by `kdcrowd fit`."),
    out: Path = typer.Option(..., help="Output CSV: item,label,confidence,p_<class>..."),
    features: Optional[Path] = typer.Option(None, help="Features of the items (.npy, .csv, .parquet; the columns the model was trained on)."),
    images: Optional[Path] = typer.Option(None, help="Folder of images (resized as in training; a model trained on frozen pretrained features computes the same features first)."),
    texts: Optional[Path] = typer.Option(None, help="Texts of the items (CSV/TSV/Parquet/JSONL), for a model trained with `kdcrowd fit --texts`: featurised with the training vocabulary."),
    text_column: Optional[str] = typer.Option(None, help="With --texts: the column holding the text (default: the one used in training)."),
    item_column: Optional[str] = typer.Option(None, help="With --texts: the column of item ids (default: the one used in training, else item or task)."),
    item_ids: Optional[Path] = typer.Option(None, help="With a .npy --features: one item id per line."),
    image_ids: Optional[str] = typer.Option(None, show_default=False, help="Item id of an image: stem, name or path (default: as the model's training images were named, else stem)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
) -> None:
    """Label new items with a classifier trained by `kdcrowd fit`."""
    import numpy as np

    from .persist import items_option, load_predictor
    from .report.practitioner import label_frame

    from .config import cli_style, option_style
    from .data.items import IMAGE_SUFFIXES, align_feature_columns
    from .outdir import check_out_file

    try:
        check_out_file(out, example="predictions.csv", inputs={"--model": model, "--features": features, "--texts": texts, "--item-ids": item_ids})
        if sum(v is not None for v in (features, images, texts)) != 1:
            raise ValueError("give the items with exactly one of --features FILE, --images DIR or --texts FILE")
        if texts is None and (unused := [o for o, v in (("--text-column", text_column), ("--item-column", item_column)) if v is not None]):
            raise ValueError(f"{' and '.join(unused)} go{'es' if len(unused) == 1 else ''} with --texts; {'--features' if features is not None else '--images'} reads ids its own way")  # as fit refuses them
        if images is not None and out.is_file() and out.suffix.lower() in IMAGE_SUFFIXES and out.resolve().is_relative_to(images.resolve()):  # the CSV would replace an image it reads
            raise ValueError(f"--out {out} is one of the images of --images {images}, which it would overwrite; give another --out (e.g. predictions.csv)")
        if image_ids is not None and image_ids not in ("stem", "name", "path"):
            raise ValueError(f"--image-ids must be stem, name or path, not '{image_ids}'")
        if image_ids is not None and images is None:  # as fit refuses them: they changed nothing
            raise ValueError("--image-ids goes with --images")
        if item_ids is not None and features is None:
            raise ValueError("--item-ids goes with a .npy --features file (images are named by their files, texts by their id column)")
        with option_style(cli_style):  # an error about a setting names it as --option
            predictor = load_predictor(model, device=device)
        inputs = predictor.inputs or {}
        trained_on = items_option(inputs, predictor.item_shape)
        given = "--features" if features is not None else "--images" if images is not None else "--texts"
        if given != trained_on:
            what = {"--images": "images", "--texts": "texts", "--features": f"features of {predictor.item_shape[0]} columns"}[trained_on]
            raise ValueError(f"{model} was trained on {what}; give {trained_on}")
        if texts is not None:
            from .data.texts import TextFeaturizer, read_texts

            # the id column: --item-column, else the one the training texts had (then item, task)
            id_columns = _text_id_columns(item_column) if item_column is not None else _text_id_columns(inputs.get("item_column"), in_crowd_labels=True)
            tids, ttexts = read_texts(texts, id_column=id_columns, text_column=text_column or inputs.get("text_column", "text"))  # given here: for the texts
            ids, described = tids, f"texts from {texts.name}"
            X = TextFeaturizer.from_state(inputs["featurizer"]).transform(ttexts)
        else:
            frozen = inputs.get("backbone") if inputs.get("kind") == "image-features" else None
            # the pixels the model was trained on: its height, width and channels (greyscale, non-square)
            size = int(inputs["image_size"]) if frozen else tuple(predictor.item_shape) if images is not None else 0
            ids, load, described, _, columns, _ = _load_items(features, images, item_ids, size, image_ids or predictor.image_ids or "stem", [],
                                                              keep_columns=predictor.feature_names or ())  # a model trained with such a column keeps it
            X = load()
            if frozen:  # the predictor scales them as at fit (load_predictor)
                X = _frozen_features(X, frozen, device)
                described += f"; frozen {frozen} features"
        if features is not None:  # matched to the training columns by name
            X = align_feature_columns(X, columns, predictor.feature_names, f"--features {features}")
            if tuple(np.shape(X)[1:]) != tuple(predictor.item_shape):  # a model without column names (trained on a .npy file): the count
                raise ValueError(f"--features {features} has {np.shape(X)[1]} feature columns, but the model was trained on {predictor.item_shape[0]}; give --features with the training columns")
        proba = predictor(X)
        check_out_file(out, create=True)
        write_csv(label_frame(ids, predictor.classes, proba), out)
    except USER_ERRORS as e:
        _fail(str(e))
    console.print(f"labelled {len(ids)} items ({escape(described)}); wrote {escape(str(out))}", soft_wrap=True)


def save_transitions(out: Path, output: Any) -> None:
    """Write the estimated (and true) worker matrices of a run to OUT/transitions.npz."""
    import numpy as np

    from .methods import true_transitions

    ds = output.dataset
    if output.transitions is None or ds is None or ds.annotations is None:
        return
    true, mask = true_transitions(ds)
    arrays = {"estimated": output.transitions, "labels_per_worker": ds.annotations.labels_per_worker(), "worker_ids": np.asarray(ds.annotations.worker_ids).astype(str)}
    if true is not None:
        arrays["true"] = true
        if mask is not None:
            arrays["row_mask"] = mask
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "transitions.npz", "wb") as f:  # whole or not at all
        np.savez_compressed(f, **arrays)


plot_app = typer.Typer(help="Figures from run directories.", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


@plot_app.command("memorization")
def plot_memorization_cmd(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories written by `kdcrowd run`."),
    out: Path = typer.Option(Path("memorization"), help="Output stem; .png and .svg are written."),
    title: Optional[str] = typer.Option(None, help="Axes title."),
) -> None:
    """Memorization of wrong annotations vs epochs, mean ± 1 std over workers, one curve per run."""
    from .report.plots import plot_memorization

    _write_plot(out, lambda: plot_memorization(run_dirs, out, title=title))


@plot_app.command("workers")
def plot_workers_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by `kdcrowd run`."),
    out: Path = typer.Option(Path("workers"), help="Output stem; .png and .svg are written."),
    n_workers: int = typer.Option(8, help="How many workers (those with the most labels)."),
) -> None:
    """True vs estimated worker matrices."""
    from .report.plots import plot_workers

    if n_workers < 1:  # a negative count had dropped the last workers from the slice
        _fail(f"--n-workers must be at least 1; got {n_workers}")
    _write_plot(out, lambda: plot_workers(run_dir, out, n_workers=n_workers))


def _write_plot(out: Path, draw: Any) -> None:
    """Check ``--out`` (a stem the plots add .png and .svg to: a name, in a folder that can
    be made), run ``draw()`` and name the files it wrote; a user error is one line."""
    from .outdir import check_out_file

    try:
        if not out.name:
            raise ValueError(f"--out {str(out)!r} names no file; give a stem such as --out figures/workers")
        check_out_file(out.with_name(out.name + ".png"), example="workers")
        paths = draw()
    except USER_ERRORS as e:
        _fail(str(e))
    for p in paths:
        console.print(f"wrote {escape(str(p))}", soft_wrap=True, highlight=False)


@app.command()
def datasets() -> None:
    """List the registered data sets and the simulated-worker cases."""
    from .data.datasets import list_datasets
    from .data.simulate import list_worker_cases

    for title, entries in (("data sets (load_dataset / --dataset)", list_datasets()), ("simulated-worker cases (--workers)", list_worker_cases())):
        table = Table(title=title)
        table.add_column("name")
        table.add_column("description")
        for name, desc in entries.items():
            table.add_row(name, desc)
        console.print(table)


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (``kill``, ``timeout``, ``docker stop``, a batch scheduler's preemption) as
    Ctrl-C: `fit` saves its checkpoint and says how to resume, instead of losing the epochs
    since the last periodic save."""
    raise KeyboardInterrupt


def main() -> None:
    """The ``kdcrowd`` command: the app, on a frozen heap, then an exit without the last
    garbage collection.

    The objects that exist when the command starts (the imported modules: torch, pandas,
    typer, ...) live as long as the process, so they are frozen first (:func:`gc.freeze`)
    and the cyclic collector, off while :func:`kdcrowd.__main__.run` imported them, is
    turned on: its collections during the command (the first optimiser imports
    ``torch._dynamo``) no longer go through them.
    Every result is written when the app returns (or exits). Freezing the heap again then
    spares the interpreter's final full collection, about 1 s of a 2-core CPU
    (docs/RESULTS.md §5a); the process ends anyway."""
    gc.freeze()
    gc.enable()
    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = _run_app()
    finally:
        gc.freeze()
    sys.exit(code)


def _run_app() -> int:
    """The app's exit status, with a usage error (an unknown option, a value that is not a
    number) as one ``error:`` line like every other bad input, where click prints the usage,
    a hint and a boxed message."""
    # click's exceptions, as the installed typer raises them (its own copy of click since 0.23, else click's)
    click_exception = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    no_args = getattr(sys.modules[click_exception.__module__], "NoArgsIsHelpError", ())
    try:
        code = app(prog_name="kdcrowd", standalone_mode=False)
    except no_args as e:  # `kdcrowd plot` alone: its help, as typer shows it
        from typer import rich_utils

        rich_utils.rich_format_error(e)
        return e.exit_code
    except click_exception as e:  # a usage error (it has the command's context) names the command's --help
        ctx = getattr(e, "ctx", None)
        _print_error(e.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""))
        return e.exit_code
    except typer.Abort:
        err_console.print("Aborted!", highlight=False)
        return 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    main()
