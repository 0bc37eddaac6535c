"""Readers for the exports of annotation platforms, recognised from the file's content.

Each reader turns one platform's export into a long table with one row per annotation:
``item``, ``worker``, ``label`` (ids as text, exactly as the platform wrote them; labels as
the platform wrote them, usually text) and ``ref`` (the item's original reference: an
image URL or path, or ``None``), plus gold labels where the platform has them and a
summary of what was read and skipped. :func:`read_export` picks the reader with
:func:`detect_format` (or ``format=``, the ``--format`` option), and
:class:`~kdcrowd.data.Annotations` ``.from_long(export.annotations)`` builds the crowd.

**Item ids of images.** When the platform refers to an item by an image URL or path
(``https://host/a/cat_1.jpg?x=1``, ``s3://bucket/cat_1.jpg``, ``/data/upload/3/9f1c2b7e-cat_1.jpg``),
the item id is the image's file name without directory and extension (``cat_1``), the
name an ``--images`` folder holds it under; ``ref`` keeps the original reference. Image
extensions: ``IMAGE_EXTENSIONS``. Label Studio prefixes uploaded files with 8 hex digits
and a dash (``9f1c2b7e-``); that prefix is removed for paths under ``/data/upload/``. Two
different references with the same file name are an error (they would be one item).
Items not referenced by an image (text, a task id) keep the platform's id. In a Toloka or
MTurk export (a table), ``item_column=`` (``--item-column``) names the column whose values
are the item ids instead (an image column still gives file names); the other exports have
no columns and refuse it.

**Several choices in one answer** (multi-label questions) are an error unless
``multi="first"`` (keep the first choice) or ``multi="explode"`` (one annotation per
choice; the long table then holds repeated (item, worker) pairs: read it with
``duplicates="keep"``) is given: the ``--multi-label`` option.

**Several questions** (choice controls, classifications, output fields) in one export:
name the one to read with ``field=`` (``--field``); with one question it is read without.

The formats (``FORMATS``; the fields each reads are in the docstring of its reader):
``labelstudio``, ``labelbox``, ``argilla``, ``doccano``, ``toloka``, ``mturk``,
``sagemaker``, ``cvat``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field as dc_field
from pathlib import Path, PurePosixPath
from typing import Any
from xml.etree import ElementTree

import pandas as pd

from ._common import tsv_quoting
from .annotations import AnnotationError, _MissingFileError
from .readers import _drop_blank_and_header_rows

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "MULTI_POLICIES",
    "PlatformExport",
    "detect_format",
    "item_id_from_reference",
    "looks_like_platform_export",
    "read_export",
]

#: File extensions that mark a reference as an image (the item id is then its file name).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp",
                              ".ppm", ".pgm", ".pbm", ".jfif"})
#: The exports that are tables: ``item_column`` (``--item-column``) names one of their columns.
_TABLE_FORMATS = ("toloka", "mturk")
#: Policies for answers holding several choices (``--multi-label``).
MULTI_POLICIES = ("first", "explode")
_LS_UPLOAD_PREFIX = re.compile(r"[0-9a-f]{8}-(?=.)")
_SHOW = 5


@dataclass(frozen=True)
class PlatformExport:
    """What :func:`read_export` read.

    Attributes:
        annotations: long DataFrame, one row per annotation: ``item``, ``worker`` (text),
            ``label`` (as written) and ``ref`` (the item's original reference or ``None``).
        gold: DataFrame ``item, label`` of the platform's gold (control) questions, or
            ``None`` when the export has none.
        summary: ``format``, ``field`` (the question read, or ``None``), ``n_read`` (answers
            met), ``n_annotations`` (rows of ``annotations``), ``n_items``, ``n_workers``,
            ``skipped`` (reason → count: ``cancelled``, ``rejected``, ``empty`` ...) and
            ``multi`` (the multi-label policy, or ``None``).
    """

    annotations: pd.DataFrame
    gold: pd.DataFrame | None
    summary: dict = dc_field(default_factory=dict)

    @property
    def format(self) -> str:
        return self.summary["format"]

    def long_frame(self) -> pd.DataFrame:
        """``item, worker, label`` of :attr:`annotations` with the CSV reader's id rule: an
        id column (and the label column) whose every value is a canonical integer (``"17"``,
        not ``"017"``) becomes int64, so the crowd equals the one read from the equivalent
        long CSV (integer labels are class indices there too)."""
        return _canonical_columns(self.annotations[["item", "worker", "label"]])

    def gold_frame(self) -> pd.DataFrame | None:
        """``item, label`` of :attr:`gold` by the same rule (``None`` without gold answers)."""
        return None if self.gold is None else _canonical_columns(self.gold)

    def to_annotations(self, **kw: Any) -> Any:
        """:meth:`Annotations.from_long` of :meth:`long_frame` (``kw``: ``classes``,
        ``items``, ``duplicates`` ...)."""
        from .annotations import Annotations

        return Annotations.from_long(self.long_frame(), **kw)


# ----------------------------------------------------------------------------- helpers

_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]{0,18}")


def _canonical_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with :func:`_canonical_ints` applied to each column."""
    out = df.copy()
    for col in out.columns:
        out[col] = _canonical_ints(out[col])
    return out


def _canonical_ints(col: pd.Series) -> pd.Series:
    """int64 when every value is the text of an int64 (or an int), else unchanged."""
    text = col.map(lambda v: v if isinstance(v, str) else str(v) if isinstance(v, int) and not isinstance(v, bool) else None)
    if col.empty or text.isna().any() or not bool(text.str.fullmatch(_CANONICAL_INT).all()):
        return col
    as_int = [int(v) for v in text]
    if not all(-(2**63) <= v < 2**63 for v in as_int):
        return col
    return pd.Series(as_int, index=col.index, dtype="int64")


def item_id_from_reference(ref: Any) -> str:
    """The item id of a reference: the file name without directory and extension when
    ``ref`` is an image URL or path (see the module docstring), else ``str(ref)``."""
    text = str(ref).strip()
    parsed = urllib.parse.urlsplit(text)
    is_url = bool(parsed.scheme) and len(parsed.scheme) > 1  # (not a Windows drive letter)
    path = parsed.path if is_url else text
    # Label Studio's local-files URLs carry the path in the query: /data/local-files/?d=dir/a.jpg
    if parsed.query and "d=" in parsed.query and (is_url or text.startswith("/data/")):
        d = urllib.parse.parse_qs(parsed.query).get("d")
        if d:
            path, is_url = d[0], False
    if is_url:  # percent-escapes are part of URLs, not of file names
        path = urllib.parse.unquote(path)
    path = path.replace("\\", "/")
    p = PurePosixPath(path)
    if p.suffix.lower() not in IMAGE_EXTENSIONS or not p.stem:
        return text
    stem = p.stem
    if "/data/upload/" in path:
        stem = _LS_UPLOAD_PREFIX.sub("", stem, count=1)
    return stem


def _is_image_ref(value: Any, texts: bool = False) -> bool:
    """Whether a task's value is an image's URL, path or file name. A value with a line break
    is a text, whatever it ends in. ``texts``: the value is one of a task's data fields, which
    hold texts as well as images (Label Studio, its JSON-MIN, Argilla): there a value with a
    space but no folder (``see attached receipt.PNG``) is a text too; those platforms give
    images as URLs or paths. Elsewhere (CVAT, Labelbox keys, Toloka, MTurk) a bare file name
    may hold spaces (``IMG 0001.jpg``)."""
    if not isinstance(value, str) or value.strip() == "":
        return False
    v = value.strip()
    if "\n" in v or "\r" in v or (texts and any(c.isspace() for c in v) and "/" not in v and "\\" not in v):
        return False
    return item_id_from_reference(value) != v


def _fail(message: str) -> AnnotationError:
    return AnnotationError(message)


def _objects(value: Any, what: str, where: str) -> list[Mapping]:
    """``value`` as a list of JSON objects (``None``: none); anything else is one error
    naming ``what`` and ``--format`` (a malformed export used to end in a traceback)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise _malformed(where, what, "a list of objects", value)
    return value


def _object(value: Any, what: str, where: str) -> Mapping:
    """``value`` as a JSON object (``None``: an empty one); else one error like :func:`_objects`'."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _malformed(where, what, "an object", value)
    return value


def _values(value: Any, what: str, where: str) -> list:
    """``value`` as a list of answers (``None``: none); a string is one error, not its letters."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed(where, what, "a list", value)
    return value


def _malformed(where: str, what: str, wanted: str, value: Any) -> AnnotationError:
    """The error of :func:`_objects`, :func:`_object` and :func:`_values`: ``what`` is not
    ``wanted``, shown with the start of what it is."""
    text = repr(value)
    got = f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"
    return _fail(f"{where}: {what} is not {wanted} (got {got}); the file is not laid out as this platform "
                 "exports it. Check the file, or pass --format with the platform that wrote it.")


def _names(values: Iterable[Any]) -> str:
    return ", ".join(repr(v) for v in values)


def _choose_field(found: Sequence[str], field: str | None, what: str, where: str) -> str:
    """The question to read: the only one found, or the one ``field`` names."""
    found = list(dict.fromkeys(found))
    if field is not None:
        if field not in found:
            raise _fail(f"--field {field!r} is not a {what} of {where}; it has: "
                        f"{_names(found) or 'none'}. Pass one of them with --field.")
        return field
    if not found:
        raise _fail(f"{where} holds no {what} with class answers; kdcrowd reads single-choice "
                    "classification answers. If the file is a table of item, worker and label "
                    "columns, pass --format table (--item-column names an item column of another "
                    "name); if it comes from another platform, pass --format with its name.")
    if len(found) > 1:
        raise _fail(f"{where} has {len(found)} {what}s: {_names(found)}; name the one to read "
                    "with --field.")
    return found[0]


class _Rows:
    """Collects (item, worker, choices, ref) answers and the skip counts."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.items: list[str] = []
        self.workers: list[str] = []
        self.choices: list[list[Any]] = []
        self.refs: list[Any] = []
        self.skipped: dict[str, int] = {}
        self.n_read = 0
        self.gold: dict[str, Any] = {}
        self.gold_refs: dict[str, Any] = {}

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n

    def add(self, item: Any, worker: Any, choices: Any, ref: Any = None) -> None:
        self.n_read += 1
        if not isinstance(choices, list):
            choices = [choices]
        # stripped as the table reader strips labels, so that 'cat ' and 'cat' are one class
        choices = [c.strip() if isinstance(c, str) else c for c in choices]
        choices = [c for c in choices if c is not None and c != ""]
        if not choices:
            self.skip("empty")
            return
        if worker is None or str(worker).strip() == "":
            self.skip("no worker")
            return
        self.items.append(str(item))
        self.workers.append(str(worker))
        self.choices.append(choices)
        self.refs.append(ref)

    def add_gold(self, item: Any, label: Any, ref: Any = None) -> None:
        self.gold[str(item)] = label.strip() if isinstance(label, str) else label
        self.gold_refs[str(item)] = ref


def _item_ids(refs: Sequence[Any], ids: Sequence[Any]) -> list[str]:
    """Per entry: the image file name of ``refs[i]`` when it is an image reference, else
    ``ids[i]``; an error when two different references share a file name."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for ref, fallback in zip(refs, ids):
        if _is_image_ref(ref):
            key = item_id_from_reference(ref)
            other = seen.setdefault(key, str(ref).strip())
            if other != str(ref).strip():
                raise _fail(f"two different image references have the file name {key!r}: {other!r} "
                            f"and {str(ref).strip()!r}; item ids are image file names (so that "
                            "--images finds them), so rename one of the files.")
            out.append(key)
        else:
            out.append(str(fallback))
    return out


def _named_item_ids(df: pd.DataFrame, column: str, worker_column: str, where: str) -> list[str]:
    """Per row of the Toloka or MTurk table ``df``: the item id that ``column`` (``item_column``,
    ``--item-column``) gives, its value (an image reference's file name, as by default); an
    error where it is no column of ``df``, or blank on a row with a worker (an answer)."""
    cols = [str(c) for c in df.columns]
    if column not in cols:
        raise _fail(f"--item-column {column!r} is not a column of {where}; it has: {_names(cols[:12])}"
                    f"{' ...' if len(cols) > 12 else ''}. Name one of them, or drop --item-column (the items "
                    "are then named by their image's file name, else by their task id).")
    values = df[column].str.strip()
    answers = df[worker_column].str.strip() != ""
    if blank := int((values[answers] == "").sum()):
        raise _fail(f"--item-column {column!r} of {where} is blank on {blank} of the {int(answers.sum())} rows "
                    "with a worker; name a column filled on every answer's row, or drop --item-column.")
    return _item_ids(values.tolist(), values.tolist())


def _finish(rows: _Rows, field: str | None, multi: str | None, where: str) -> PlatformExport:
    if multi is not None and multi not in MULTI_POLICIES:
        raise _fail(f"--multi-label must be one of {_names(MULTI_POLICIES)}; got {multi!r}.")
    many = [i for i, c in enumerate(rows.choices) if len(c) > 1]
    if many and multi is None:
        show = "; ".join(f"item {rows.items[i]!r}, worker {rows.workers[i]!r}: {rows.choices[i]!r}"
                         for i in many[:_SHOW])
        raise _fail(f"{where}: {len(many)} answers hold several classes ({show}"
                    f"{' ...' if len(many) > _SHOW else ''}); kdcrowd learns one class per "
                    "annotation. Pass --multi-label first (keep the first choice) or "
                    "--multi-label explode (one annotation per choice, read with --duplicates keep)."
                    + (" Field 'radio' pools every button answered as {name: {value: true|false}}, "
                       "crowd-radio-buttons and crowd-checkboxes alike: buttons checked together are "
                       "check boxes, not one radio group, and the template must give each question "
                       "its own name to read one of them." if field == "radio" and rows.fmt in ("mturk", "sagemaker") else ""))
    if multi == "explode":
        reps = [len(c) for c in rows.choices]
        items = [x for x, r in zip(rows.items, reps) for _ in range(r)]
        workers = [x for x, r in zip(rows.workers, reps) for _ in range(r)]
        refs = [x for x, r in zip(rows.refs, reps) for _ in range(r)]
        labels = [v for c in rows.choices for v in c]
    else:
        items, workers, refs = rows.items, rows.workers, rows.refs
        labels = [c[0] for c in rows.choices]
    df = pd.DataFrame({
        "item": pd.Series(items, dtype=object),
        "worker": pd.Series(workers, dtype=object),
        "label": pd.Series(labels, dtype=object),
        "ref": pd.Series(refs, dtype=object),
    })
    if not df.empty:
        df["label"] = df["label"].map(_label_value)
    gold = None
    if rows.gold:
        gold = pd.DataFrame({"item": pd.Series(list(rows.gold), dtype=object),
                             "label": pd.Series([_gold_value(v) for v in rows.gold.values()], dtype=object)})
    summary = {
        "format": rows.fmt,
        "field": field,
        "n_read": rows.n_read,
        "n_annotations": len(df),
        "n_items": int(df["item"].nunique()),
        "n_workers": int(df["worker"].nunique()),
        "n_gold": 0 if gold is None else len(gold),
        "skipped": dict(rows.skipped),
        "multi": multi if many else None,
    }
    if df.empty:
        reasons = ", ".join(f"{n} {r}" for r, n in rows.skipped.items())
        raise _fail(f"{where} holds no class answers to read ({rows.n_read} answers met"
                    f"{'; skipped: ' + reasons if reasons else ''}).")
    return PlatformExport(df, gold, summary)


def _gold_value(v: Any) -> Any:
    """A gold answer as written; one of several classes stays a list (its readers leave it
    out and say so, where as JSON text it was read as one unknown class)."""
    if isinstance(v, (list, tuple)):
        return _label_value(v[0]) if len(v) == 1 else [_label_value(x) for x in v]
    return _label_value(v)


def _label_value(v: Any) -> Any:
    """A label as written: text stays text, JSON numbers stay numbers, others become text."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (str, int, float)):
        return v
    return json.dumps(v, sort_keys=True)


def _json_load(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise _fail(f"{what} {path} is not valid JSON ({exc}).") from exc
    except UnicodeDecodeError as exc:
        raise _fail(f"{what} {path} is not UTF-8 text ({exc.reason}).") from exc


def _json_lines(text: str, where: str) -> Iterator[tuple[int, Any]]:
    # lines end at \n, \r\n or \r (a raw \r is no JSON string's), not where splitlines() also
    # breaks: a JSON string may hold a raw U+2028, U+2029 or U+0085
    for n, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(f"{where}, line {n}: not valid JSON ({exc}); an NDJSON/JSONL file holds "
                        "one JSON object per line.") from exc


def _json_documents(text: str, where: str) -> list[tuple[int, Any]]:
    """The objects of a JSON export, numbered from 1: a JSON list (its entries), one JSON
    object (pretty-printed or not), or JSON lines (numbered by line)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(f"{where} is not valid JSON ({exc}).") from exc
        if isinstance(obj, list):
            return list(enumerate(obj, 1))
    try:
        return list(_json_lines(text, where))
    except AnnotationError:
        if not stripped.startswith("{"):
            raise
        try:  # one object over several lines
            return [(1, json.loads(text))]
        except json.JSONDecodeError:
            raise _fail(f"{where} is not valid JSON: neither one JSON object, a JSON list, nor one JSON "
                        "object per line.") from None


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(f"{what} {path} is not UTF-8 text ({exc.reason}).") from exc


def _records(obj: Any, path: Path, what: str) -> list:
    if isinstance(obj, Mapping):
        obj = [obj]
    if not isinstance(obj, list) or not all(isinstance(r, Mapping) for r in obj):
        raise _fail(f"{path} is not a {what} export (expected a JSON list of objects); pass "
                    "--format with the platform the file comes from.")
    return obj


class _Tree:
    """The files of a folder or a ZIP archive: relative POSIX names → bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise _fail(f"{path} is not a readable ZIP archive ({exc}).") from exc
            self.names = sorted(n for n in self._zip.namelist() if not n.endswith("/"))
        # macOS archive litter
        self.names = [n for n in self.names if "__MACOSX/" not in n and not PurePosixPath(n).name.startswith("._")]

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def text(self, name: str) -> str:
        try:
            return self.read(name).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _fail(f"{self.path}: {name} is not UTF-8 text ({exc.reason}).") from exc

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


# ----------------------------------------------------------------------------- readers


def read_labelstudio(path: Path, field: str | None = None, multi: str | None = None, **_: Any) -> PlatformExport:
    """Label Studio's JSON export (a list of tasks).

    Reads per task ``id`` and ``data`` (when exactly one value of ``data`` is an image
    URL/path, the item id is the image's file name; else the item is the task ``id``); per entry of ``annotations``:
    ``completed_by`` (the worker: the user id, or the ``email`` when it is an object),
    ``was_cancelled`` (skipped annotations are left out, counted as ``cancelled``),
    ``ground_truth`` (such annotations also give the task's gold label) and the
    ``result`` entries of type ``choices`` (``from_name`` is the control,
    ``value.choices`` the chosen classes). With several choice controls, ``field`` (``--field``)
    names the ``from_name`` to read. Predictions are not read.

    The JSON-MIN export (one record per annotation that was not cancelled: the task's data
    keys and ``id``, each control's answer under its ``from_name``, ``annotator``,
    ``annotation_id`` ...) is read too; see :func:`_read_labelstudio_min`.
    """
    tasks = _records(_json_load(path, "Label Studio export"), path, "Label Studio")
    if _is_labelstudio_min(tasks):
        return _read_labelstudio_min(tasks, path, field, multi)
    where = f"Label Studio export {path}"
    controls: list[str] = []
    for task in tasks:
        for ann in _objects(task.get("annotations"), "a task's annotations", where):
            for r in _values(ann.get("result"), "an annotation's result", where):
                if isinstance(r, Mapping) and isinstance(r.get("value"), Mapping) and "choices" in r["value"]:
                    controls.append(str(r.get("from_name")))
    control = _choose_field(controls, field, "choice control (from_name)", f"Label Studio export {path}")
    rows = _Rows("labelstudio")
    refs, ids, n_before = [], [], []
    gold: list[tuple[int, list]] = []
    for task in tasks:
        data = task.get("data") if isinstance(task.get("data"), Mapping) else {}
        images = [v for v in data.values() if _is_image_ref(v, texts=True)]
        ref = images[0] if len(images) == 1 else None
        start = len(rows.items)
        for ann in _objects(task.get("annotations"), "a task's annotations", where):
            if ann.get("was_cancelled"):
                rows.n_read += 1
                rows.skip("cancelled")
                continue
            who = ann.get("completed_by")
            if isinstance(who, Mapping):
                who = who.get("email") or who.get("id")
            choices: list = []
            for r in _values(ann.get("result"), "an annotation's result", where):
                if isinstance(r, Mapping) and str(r.get("from_name")) == control and isinstance(r.get("value"), Mapping):
                    choices.extend(_values(r["value"].get("choices"), "value.choices", where))
            rows.add(None, who, choices, ref)
            if ann.get("ground_truth") and choices:
                gold.append((len(refs), choices))
        refs.append(ref)
        ids.append(task.get("id"))
        n_before.append((start, len(rows.items)))
    keys = _item_ids(refs, ids)
    for key, (a, b) in zip(keys, n_before):
        rows.items[a:b] = [key] * (b - a)
    for i, choices in gold:
        rows.add_gold(keys[i], choices[0] if len(choices) == 1 else choices, refs[i])
    return _finish(rows, control, multi, f"Label Studio export {path}")


#: The keys JSON-MIN adds to a task's data keys and answers (label-studio-sdk's converter).
_LS_MIN_KEYS = frozenset({"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "agreement"})


def _is_labelstudio_min(records: Sequence[Mapping]) -> bool:
    return (not any("annotations" in r or "completions" in r for r in records)
            and any("annotation_id" in r and "annotator" in r for r in records))


def _ls_min_choices(v: Any) -> list | None:
    """The classes of one JSON-MIN answer: one choice as a value, several as
    ``{"choices": [...]}`` (a list of those for per-region controls); ``None`` when ``v`` holds
    no choices (a box, a text area, a rating ...)."""
    if isinstance(v, Mapping):
        c = v.get("choices")
        return list(c) if isinstance(c, list) else None
    if isinstance(v, list):
        out: list = []
        for x in v:
            y = _ls_min_choices(x)
            if y is None:
                return None
            out.extend(y)
        return out
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        return [v]
    return None


def _read_labelstudio_min(records: list, path: Path, field: str | None, multi: str | None) -> PlatformExport:
    """Label Studio's JSON-MIN export: per record ``id`` (the task: the item, or the image
    file name when one data value is an image), ``annotator`` (the worker: the user id, or
    the email) and the answer under the control's ``from_name``. JSON-MIN puts the task's data
    keys and the answers side by side without saying which is which, so with more than one
    key that may hold choices, ``field`` (``--field``) names the control. Records of tasks
    without annotations (no ``annotation_id``, no ``annotator``) are no answers. JSON-MIN
    leaves out cancelled annotations and the ``ground_truth`` flag (no gold)."""
    where = f"Label Studio JSON-MIN export {path}"
    answered = [r for r in records if not (r.get("annotation_id") is None and r.get("annotator") in (None, "", {}))]
    keys = list(dict.fromkeys(k for r in answered for k in r if k not in _LS_MIN_KEYS))
    bad = {k for r in answered for k, v in r.items()
           if k not in _LS_MIN_KEYS and v is not None and (_ls_min_choices(v) is None or _is_image_ref(v, texts=True))}
    candidates = sorted(k for k in keys if k not in bad)
    if field is not None:
        if field not in keys:
            raise _fail(f"--field {field!r} is not a key of {where}; its keys that may hold the choices: "
                        f"{_names(candidates) or 'none'}. Pass the choice control's from_name with --field.")
        control = field
    elif len(candidates) == 1:
        control = candidates[0]
    elif not candidates:
        raise _fail(f"{where} holds no key with choice answers; kdcrowd reads single-choice classification "
                    "answers (Choices controls).")
    else:
        raise _fail(f"{where} does not say which keys are answers and which are task data; the keys that may "
                    f"hold the choices: {_names(candidates)}. Name the choice control (its from_name) with "
                    "--field, or export the project as JSON, which says.")
    rows = _Rows("labelstudio")
    refs, ids, spans = [], [], []
    for r in answered:
        images = [v for k, v in r.items() if k not in _LS_MIN_KEYS and k != control and _is_image_ref(v, texts=True)]
        ref = images[0] if len(images) == 1 else None
        who = r.get("annotator")
        if isinstance(who, Mapping):
            who = who.get("email") or who.get("id")
        start = len(rows.items)
        rows.add(None, who, _ls_min_choices(r.get(control)) or [], ref)
        refs.append(ref)
        ids.append(r.get("id"))
        spans.append((start, len(rows.items)))
    for key, (a, b) in zip(_item_ids(refs, ids), spans):
        rows.items[a:b] = [key] * (b - a)
    return _finish(rows, control, multi, where)


def read_labelbox(path: Path, field: str | None = None, multi: str | None = None, **_: Any) -> PlatformExport:
    """Labelbox export v2: NDJSON, one data row per line (the download), or the same data
    rows as a JSON list (the SDK's ``export_task.result`` saved with ``json.dump``) or one
    JSON object.

    Reads ``data_row.global_key`` (the item id; ``data_row.id`` when there is no global
    key; a key that is an image file name becomes the name without extension) and
    ``data_row.row_data`` (``ref``); per label of every project in ``projects``:
    ``label_details.created_by`` (the worker), ``performance_details.skipped`` (skipped
    labels are left out, counted as ``skipped``) and ``annotations.classifications``
    (``name`` is the question; ``radio_answer.name`` the class, ``checklist_answers[].name``
    several classes). With several classification questions, ``field`` (``--field``) names
    the one to read.
    """
    text = _read_text(path, "Labelbox export")
    lines = _json_documents(text, f"Labelbox export {path}")
    bad = [n for n, obj in lines if not (isinstance(obj, Mapping) and isinstance(obj.get("data_row"), Mapping))]
    if bad:
        raise _fail(f"Labelbox export {path}: entries {bad[:_SHOW]} (lines, or places in the JSON list) have no "
                    "data_row object; an export v2 file holds one data row per NDJSON line (or a JSON list "
                    "of them). Pass --format with the platform the file comes from.")

    where = f"Labelbox export {path}"

    def labels(obj: Mapping) -> Iterator[Mapping]:
        for proj in _object(obj.get("projects"), "projects", where).values():
            yield from _objects(_object(proj, "a project", where).get("labels"), "a project's labels", where)

    def classifications(lab: Mapping) -> list[Mapping]:
        return _objects(_object(lab.get("annotations"), "a label's annotations", where).get("classifications"), "annotations.classifications", where)

    questions = [str(c.get("name")) for _, obj in lines for lab in labels(obj)
                 for c in classifications(lab) if "radio_answer" in c or "checklist_answers" in c]
    question = _choose_field(questions, field, "classification question", f"Labelbox export {path}")
    rows = _Rows("labelbox")
    keys = [obj["data_row"].get("global_key") or obj["data_row"].get("id") for _, obj in lines]
    for (_, obj), item in zip(lines, _item_ids(keys, keys)):  # two references sharing a file name: an error
        dr = obj["data_row"]
        for lab in labels(obj):
            if (lab.get("performance_details") or {}).get("skipped"):
                rows.n_read += 1
                rows.skip("skipped")
                continue
            who = (lab.get("label_details") or {}).get("created_by")
            choices: list = []
            for c in classifications(lab):
                if str(c.get("name")) != question:
                    continue
                if isinstance(c.get("radio_answer"), Mapping):
                    choices.append(c["radio_answer"].get("name") or c["radio_answer"].get("value"))
                for a in _objects(c.get("checklist_answers"), "checklist_answers", where):
                    choices.append(a.get("name") or a.get("value"))
            rows.add(item, who, choices, dr.get("row_data"))
    return _finish(rows, question, multi, f"Labelbox export {path}")


def _argilla_nested(r: Mapping) -> Mapping:
    """A flattened Argilla record (``q.responses``, ``q.responses.users``,
    ``q.responses.status`` lists) in the nested ``to_json`` shape; nested records unchanged."""
    if isinstance(r.get("responses"), Mapping):
        return r
    suffix = ".responses"
    questions = [k[: -len(suffix)] for k in r if isinstance(k, str) and k.endswith(suffix)]
    if not questions:
        return r
    responses = {}
    for q in questions:
        values, users, status = (r.get(f"{q}{suffix}{tail}") for tail in ("", ".users", ".status"))
        values = values if isinstance(values, list) else []
        users = users if isinstance(users, list) else []
        status = status if isinstance(status, list) else []
        responses[q] = [{"value": v, "user_id": users[i] if i < len(users) else None,
                         "status": status[i] if i < len(status) else None} for i, v in enumerate(values)]
    fields = {k: v for k, v in r.items()
              if isinstance(k, str) and "." not in k and k not in ("id", "_server_id", "status", "score")}
    return {"id": r.get("id"), "_server_id": r.get("_server_id"), "fields": fields, "responses": responses}


def read_argilla(path: Path, field: str | None = None, multi: str | None = None, **_: Any) -> PlatformExport:
    """Argilla 2.x exported records (``dataset.records.to_json``: a JSON list; or JSON lines).

    Reads per record ``id`` (the item; ``_server_id`` when ``id`` is empty), ``fields`` (an
    image URL/path field makes the item id the image's file name) and ``responses``: a
    mapping question name → list of ``{"value", "user_id"[, "status"]}`` (the worker is
    ``user_id``; responses with status ``draft`` or ``discarded`` are left out and counted).
    With several questions, ``field`` (``--field``) names the one to read; a list value (a
    multi-label question) holds several classes.

    Flattened records (``dataset.records.to_list(flatten=True)``, the rows of
    ``records.to_datasets()`` saved with ``to_json``) are read too: the fields at the top and,
    per question ``q``, the lists ``q.responses`` (values), ``q.responses.users`` and
    ``q.responses.status``.
    """
    text = _read_text(path, "Argilla export")
    recs = _records([obj for _, obj in _json_documents(text, f"Argilla export {path}")], path, "Argilla")
    recs = [_argilla_nested(r) for r in recs]
    where = f"Argilla export {path}"
    questions = [str(q) for r in recs for q, rs in _object(r.get("responses"), "a record's responses", where).items() if rs]
    question = _choose_field(questions, field, "question", where)
    rows = _Rows("argilla")
    refs, ids, spans = [], [], []
    for r in recs:
        fields = r.get("fields") if isinstance(r.get("fields"), Mapping) else {}
        images = [v for v in fields.values() if _is_image_ref(v, texts=True)]
        ref = images[0] if len(images) == 1 else None
        start = len(rows.items)
        for resp in _objects(_object(r.get("responses"), "a record's responses", where).get(question), f"the responses to {question!r}", where):
            status = str(resp.get("status") or "submitted").lower()
            if status in ("draft", "discarded"):
                rows.n_read += 1
                rows.skip(status)
                continue
            rows.add(None, resp.get("user_id"), resp.get("value"), ref)
        rid = r.get("id") if r.get("id") not in (None, "") else r.get("_server_id")
        refs.append(ref)
        ids.append(rid)
        spans.append((start, len(rows.items)))
    for key, (a, b) in zip(_item_ids(refs, ids), spans):
        rows.items[a:b] = [key] * (b - a)
    return _finish(rows, question, multi, f"Argilla export {path}")


def read_doccano(path: Path, field: str | None = None, multi: str | None = None, **_: Any) -> PlatformExport:
    """doccano's ZIP export of a text- or image-classification project: one JSONL file per
    user (the export of a project that does not share annotations between users), or one
    JSON file per user (the "JSON" export option: a JSON list of the same records).

    The worker is the file's name without ``.jsonl``/``.json`` (``alice.jsonl`` → ``alice``).
    Per record: ``id`` (the item; for image projects ``filename``, whose file name without
    extension is the item id) and ``label`` (a list of class names; doccano 1.x's ``cats``
    too). A lone ``all.jsonl``/``all.json`` (a collaborative project's export) names no annotators and
    is an error. Examples a user left without a label are skipped (counted as ``empty``); span
    labels (``[start, end, label]``, sequence labelling) are an error. ``field``
    (``--field``) names another key to read the classes from.
    """
    tree = _Tree(path)
    try:
        files = [n for n in tree.names if n.lower().endswith((".jsonl", ".json"))]
        if not files:
            raise _fail(f"doccano export {path} holds no .jsonl or .json files; export the project as JSONL.")
        stems = [PurePosixPath(n).name.rsplit(".", 1)[0] for n in files]
        if stems == ["all"]:
            raise _fail(f"doccano export {path} holds one {PurePosixPath(files[0]).name}: the project shares annotations "
                        "between users (collaborative annotation), so the export does not say who "
                        "labelled what. Turn off 'share annotations across all users' in the "
                        "project settings and export again (one file per user).")
        rows = _Rows("doccano")
        key = field
        for name in files:
            worker = PurePosixPath(name).name.rsplit(".", 1)[0]
            for n, obj in _json_documents(tree.text(name), f"doccano export {path}: {name}"):
                if not isinstance(obj, Mapping):
                    raise _fail(f"doccano export {path}: {name}, line {n} is not a JSON object.")
                k = key or ("label" if "label" in obj else "cats" if "cats" in obj else None)
                if k is None or k not in obj:
                    raise _fail(f"doccano export {path}: {name}, line {n} has no {'label' if key is None else key!r} "
                                f"key (keys: {_names(obj)}); name the key holding the classes with --field.")
                value = obj[k]
                value = value if isinstance(value, list) else [value]
                if any(isinstance(v, (list, Mapping)) for v in value):
                    raise _fail(f"doccano export {path}: {name}, line {n} holds span labels ({value[:2]!r}); "
                                "kdcrowd reads text-classification projects (one class per example).")
                ref = obj.get("filename")
                item = item_id_from_reference(ref) if _is_image_ref(ref) else obj.get("id", ref)
                rows.add(item, worker, value, ref)
        _item_ids(rows.refs, rows.items)  # two images with one file name are an error
        return _finish(rows, field, multi, f"doccano export {path}")
    finally:
        tree.close()


def _split_prefixed(columns: Sequence[str], prefix: str) -> dict[str, str]:
    return {c[len(prefix):]: c for c in columns if c.startswith(prefix)}


def _parse_cell(v: str) -> Any:
    """A table cell: JSON lists (multi-choice answers) become lists; the rest stays text."""
    s = v.strip()
    if s.startswith("[") and s.endswith("]"):
        try:
            out = json.loads(s)
            if isinstance(out, list):
                return out
        except json.JSONDecodeError:
            pass
    return v


def _read_csv(path: Path, sep: str, what: str) -> pd.DataFrame:
    """The table ``path`` as text, without copies of its header line inside (exports joined
    with ``cat``, each part keeping its header: skipped with an :class:`InputWarning`, as the
    table reader does; they had been read as an answer)."""
    try:
        quoting = tsv_quoting(path) if sep == "\t" else csv.QUOTE_MINIMAL  # plain TSV has no quoting
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig", quoting=quoting)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise _fail(f"cannot read the {what} {path}: {exc}.") from exc
    return _drop_blank_and_header_rows(df, path, blank_rows=False)[0]


def _image_input(df: pd.DataFrame, inputs: dict[str, str]) -> str | None:
    """The input column whose image names the task: the only column of image references, or
    of several such (a task's image beside an example or hint image) the only one that is
    filled on every row and varies; none where several are (a pair of images to compare is
    no one image's item: it keeps its task id); the first where none is."""
    cols = []
    for col in inputs.values():
        vals = df[col][df[col].str.strip() != ""]
        if len(vals) and bool(vals.map(_is_image_ref).all()):
            cols.append(col)
    if len(cols) <= 1:
        return cols[0] if cols else None
    varying = [c for c in cols if bool((df[c].str.strip() != "").all()) and (df[c].nunique() > 1 or len(df) == 1)]  # (one row: each may)
    return varying[0] if len(varying) == 1 else cols[0] if not varying else None


def read_toloka(path: Path, field: str | None = None, multi: str | None = None,
                include_rejected: bool = False, item_column: str | None = None, **_: Any) -> PlatformExport:
    """Toloka's results TSV (assignments downloaded from a pool).

    Reads ``ASSIGNMENT:task_id`` (the item; when one ``INPUT:*`` column holds image URLs the
    item id is the image's file name; without the task id column, a single ``INPUT:*``
    column's value names the item), ``ASSIGNMENT:worker_id`` (the worker),
    ``OUTPUT:<name>`` (the answer; with several output fields ``field``/``--field`` names
    one, without the prefix), ``ASSIGNMENT:status`` (``REJECTED`` assignments are left out
    unless ``include_rejected``; counted as ``rejected``; ``SKIPPED`` and ``EXPIRED`` ones
    hold no answer and are counted as such) and ``GOLDEN:<name>``: a row with a
    golden answer is a control task, its golden answer the item's gold label (the worker's
    answer is kept as an annotation). Rows without a worker (blank lines) are skipped.
    ``item_column`` (``--item-column``) names the column of item ids instead (an image
    column gives the file names).
    """
    df = _read_csv(path, "\t", "Toloka results file")
    cols = [str(c) for c in df.columns]
    for need in ("ASSIGNMENT:worker_id",):
        if need not in cols:
            raise _fail(f"Toloka results file {path} has no {need} column (columns: {_names(cols[:12])}); "
                        "download the pool's results as TSV, or pass --format with the right platform.")
    outputs = _split_prefixed(cols, "OUTPUT:")
    name = _choose_field(list(outputs), field, "output field", f"Toloka results file {path}")
    out_col, gold_col = outputs[name], f"GOLDEN:{name}"
    inputs = _split_prefixed(cols, "INPUT:")
    img = _image_input(df, inputs)
    has_worker = df["ASSIGNMENT:worker_id"].str.strip() != ""
    rows = _Rows("toloka")
    if no_worker := int((~has_worker).sum()):  # read, then skipped, as every reader counts them
        rows.n_read += no_worker
        rows.skip("no worker", no_worker)
    df = df[has_worker]
    refs = df[img].tolist() if img is not None else [None] * len(df)
    if item_column is not None:
        items = _named_item_ids(df, item_column, "ASSIGNMENT:worker_id", f"Toloka results file {path}")
    elif "ASSIGNMENT:task_id" in cols:
        items = _item_ids(refs, df["ASSIGNMENT:task_id"].tolist())
    elif img is not None or len(inputs) == 1:
        items = _item_ids(refs, df[img if img is not None else next(iter(inputs.values()))].tolist())
    else:
        raise _fail(f"Toloka results file {path} has no ASSIGNMENT:task_id column and {len(inputs)} INPUT "
                    "columns, so nothing names the items; download the results again with the task_id "
                    "field ticked, or name the column of item ids with --item-column.")
    status = df["ASSIGNMENT:status"].str.upper().tolist() if "ASSIGNMENT:status" in cols else [""] * len(df)
    golden = df[gold_col].tolist() if gold_col in cols else [""] * len(df)
    for item, worker, ans, st, g, ref in zip(items, df["ASSIGNMENT:worker_id"], df[out_col], status, golden, refs):
        if g.strip():
            value = _parse_cell(g)
            rows.add_gold(item, value[0] if isinstance(value, list) and len(value) == 1 else value, ref)
        if (st == "REJECTED" and not include_rejected) or st in ("SKIPPED", "EXPIRED"):
            rows.n_read += 1
            rows.skip(st.lower())
            continue
        rows.add(item, worker, _parse_cell(ans), ref)
    return _finish(rows, name, multi, f"Toloka results file {path}")


#: The words of a check mark's state, as JSON or as a CSV cell writes them (lower-cased).
_CHECK_WORDS = ("true", "false")


def _check(v: Any) -> bool | None:
    """A check mark's state (``true``/``false``, as JSON or as a CSV cell), else ``None``."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in _CHECK_WORDS:
        return v.strip().lower() == "true"
    return None


def _crowd_form_fields(answers: Mapping[str, Any]) -> dict[str, Any]:
    """The answers of one crowd-form submission (Crowd HTML Elements, used by MTurk and by
    SageMaker Ground Truth templates), by field:

    * ``{name: {"label": x}}`` (crowd-classifier, crowd-image-classifier) → field ``name``,
      class ``x``; ``{name: {"labels": [...]}}`` (the multi-select ones) → several classes;
    * ``{name: {value: true|false}}`` with one value per name: a crowd-radio-button (the
      documented crowd-radio-group output is ``[{"btn1": {"yes": true}, "btn2": {"no":
      false}}]``) → field ``radio``, class ``value`` of the checked button (its ``name``
      when the button has no value, which HTML calls ``on``);
    * ``{name: {value1: true, value2: false, ...}}``: radio inputs (or check boxes) sharing a
      name → field ``name``, the checked values;
    * anything else → field ``name``, the value as it is.
    """
    out: dict[str, Any] = {}
    radio: list | None = None
    for name, v in answers.items():
        if isinstance(v, Mapping) and v:
            if "label" in v:
                out[name] = v["label"]
                continue
            if "labels" in v:
                labels = v["labels"]
                out[name] = list(labels) if isinstance(labels, list) else _parse_cell(str(labels))
                continue
            checks = {k: _check(x) for k, x in v.items()}
            if all(c is not None for c in checks.values()):
                checked = [k for k, c in checks.items() if c]
                if len(checks) == 1:
                    radio = radio if radio is not None else []
                    radio.extend(name if k == "on" else k for k in checked)
                else:
                    out[name] = checked
                continue
            if all(isinstance(x, Mapping) and "on" in x for x in v.values()):  # {name: {value: {"on": bool}}}
                out[name] = [k for k, x in v.items() if _check(x.get("on"))]
                continue
        out[name] = v
    if radio is not None:
        out.setdefault("radio", radio)
    return out


def _check_columns(df: pd.DataFrame, columns: Iterable[str]) -> set[str]:
    """The columns holding check marks: every filled cell ``true`` or ``false``, one at least."""
    out = set()
    for col in columns:
        filled = df[col][df[col].str.strip() != ""]
        if len(filled) and bool(filled.str.strip().str.lower().isin(_CHECK_WORDS).all()):
            out.add(col)
    return out


def _mturk_fields(row: Mapping[str, str], answers: dict[str, str],
                  checks: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """The answers of one assignment, by field (:func:`_crowd_form_fields`): the
    ``Answer.taskAnswers`` JSON (crowd-form's default) unpacked, and the ``Answer.X.Y``
    columns (``answer-format="flatten-objects"``, and older templates) read as ``{X: {Y: cell}}``
    (a blank cell of a check-mark column, ``checks``, is unchecked); ``Answer.X`` is field
    ``X``, and an object that is no classifier or check-mark group gives one field ``X.Y`` per
    member."""
    nested: dict[str, Any] = {}
    for name, col in answers.items():
        if name == "taskAnswers":
            v = row[col].strip()
            if not v:
                continue
            try:
                parsed = json.loads(v)
            except json.JSONDecodeError as exc:
                raise _fail(f"Answer.taskAnswers is not valid JSON ({exc}).") from exc
            for obj in parsed if isinstance(parsed, list) else [parsed]:
                nested.update(obj if isinstance(obj, Mapping) else {})
        elif "." in name and isinstance(nested.get(name.rsplit(".", 1)[0], {}), dict):
            head, sub = name.rsplit(".", 1)
            nested.setdefault(head, {})[sub] = row[col] if row[col].strip() or col not in checks else "false"
        else:
            nested.setdefault(name, row[col])
    out = _crowd_form_fields(nested)
    for head in [k for k, v in out.items() if isinstance(v, Mapping)]:  # other objects: field X.Y per member
        for sub, v in out.pop(head).items():
            out.setdefault(f"{head}.{sub}", v)
    return out


def read_mturk(path: Path, field: str | None = None, multi: str | None = None,
               include_rejected: bool = False, item_column: str | None = None, **_: Any) -> PlatformExport:
    """Amazon Mechanical Turk's batch results CSV (one row per assignment).

    Reads ``HITId`` (the item; when one ``Input.*`` column holds image URLs the item id is
    the image's file name), ``WorkerId`` (the worker), ``AssignmentStatus`` (``Rejected``
    assignments are left out unless ``include_rejected``; counted as ``rejected``) and the
    ``Answer.*`` columns: ``Answer.X`` (field ``X``), crowd-html's ``Answer.X.label``
    (field ``X``), crowd-radio-buttons ``Answer.X.V`` = true/false (field ``radio``, class
    ``V``, or ``X`` when ``V`` is ``on``), radio inputs sharing a name ``Answer.X.V1``,
    ``Answer.X.V2`` ... (field ``X``, the checked ``V``), also when packed in
    ``Answer.taskAnswers`` (see :func:`_crowd_form_fields`). With several fields, ``field``
    (``--field``) names one. ``item_column`` (``--item-column``) names the column of item
    ids instead of ``HITId`` and the image (an image column gives the file names).
    """
    df = _read_csv(path, ",", "Mechanical Turk batch results file")
    cols = [str(c) for c in df.columns]
    for need in ("HITId", "WorkerId"):
        if need not in cols:
            raise _fail(f"Mechanical Turk results file {path} has no {need} column; download the "
                        "batch results CSV, or pass --format with the right platform.")
    answers = _split_prefixed(cols, "Answer.")
    records = df.to_dict("records")
    where = f"Mechanical Turk results file {path}"
    checks = _check_columns(df, answers.values())
    try:
        per_row = [_mturk_fields(r, answers, checks) for r in records]
    except AnnotationError as exc:
        raise _fail(f"{where}: {exc}") from None
    name = _choose_field([k for f in per_row for k in f], field, "answer field", where)
    img = _image_input(df, _split_prefixed(cols, "Input."))
    refs = df[img].tolist() if img is not None else [None] * len(df)
    items = _item_ids(refs, df["HITId"].tolist()) if item_column is None else _named_item_ids(df, item_column, "WorkerId", where)
    status = df["AssignmentStatus"].str.strip().str.lower().tolist() if "AssignmentStatus" in cols else [""] * len(df)
    rows = _Rows("mturk")
    for item, r, f, st, ref in zip(items, records, per_row, status, refs):
        if st == "rejected" and not include_rejected:
            rows.n_read += 1
            rows.skip("rejected")
            continue
        v = f.get(name)
        rows.add(item, r["WorkerId"], [] if v is None else _parse_cell(v) if isinstance(v, str) else v, ref)
    return _finish(rows, name, multi, where)


def read_sagemaker(path: Path, field: str | None = None, multi: str | None = None, **_: Any) -> PlatformExport:
    """SageMaker Ground Truth labeling-job output: a folder (or ZIP) holding the job's
    ``annotations/worker-response/iteration-N/<dataObjectId>/*.json`` files and a manifest.

    The manifest (``manifests/output/output.manifest`` when present, else the one
    ``*.manifest`` file) is read line by line: line ``i`` (from 0) is data object ``i``, its
    ``source-ref`` (an image gives the item id its file name) or its inline ``source``
    (the item id is then the object's number). Each worker-response file holds
    ``answers[]`` with ``workerId`` (the worker) and ``answerContent``: the crowd-form
    object, control → answer (``{"label": x}`` of the built-in classifiers, ``{"labels":
    [...]}`` of the multi-select ones, a custom template's radio buttons ``{"btn": {"value":
    true}}``, or its value; see :func:`_crowd_form_fields`). With several controls, ``field``
    (``--field``) names one.
    """
    tree = _Tree(path)
    try:
        where = f"SageMaker Ground Truth output {path}"
        responses = [n for n in tree.names if "worker-response/" in n and n.lower().endswith(".json")]
        if not responses:
            raise _fail(f"{where} holds no annotations/worker-response/**/*.json files; pass the "
                        "labeling job's output folder (or a ZIP of it).")
        manifests = [n for n in tree.names if n.endswith(".manifest")]
        preferred = [n for n in manifests if n.endswith("manifests/output/output.manifest")]
        if preferred:
            manifests = preferred
        if len(manifests) != 1:
            raise _fail(f"{where} holds {len(manifests)} manifest files ({_names(manifests[:_SHOW])}); it "
                        "needs the job's manifest (manifests/output/output.manifest or the input "
                        ".manifest) to name the data objects.")
        objects = [obj for _, obj in _json_lines(tree.text(manifests[0]), f"{where}: {manifests[0]}")]
        refs = [o.get("source-ref", o.get("source")) if isinstance(o, Mapping) else None for o in objects]
        keys = _item_ids([r if isinstance(o, Mapping) and "source-ref" in o else None for r, o in zip(refs, objects)],
                         list(range(len(objects))))
        parsed: list[tuple[int, Mapping]] = []
        for name in responses:
            parts = PurePosixPath(name).parts
            at = next((i for i, part in enumerate(parts) if part.startswith("iteration-")), None)
            try:
                obj_id = int(parts[at + 1])
            except (TypeError, ValueError, IndexError):
                raise _fail(f"{where}: {name} is not in a worker-response/iteration-N/<dataObjectId>/ "
                            "folder.") from None
            if not 0 <= obj_id < len(objects):
                raise _fail(f"{where}: {name} answers data object {obj_id}, but the manifest "
                            f"{manifests[0]} has {len(objects)} lines (objects 0..{len(objects) - 1}).")
            try:
                doc = json.loads(tree.text(name))
            except json.JSONDecodeError as exc:
                raise _fail(f"{where}: {name} is not valid JSON ({exc}).") from exc
            for ans in (doc.get("answers") or []) if isinstance(doc, Mapping) else []:
                parsed.append((obj_id, ans))
        contents = [_crowd_form_fields(a.get("answerContent") if isinstance(a.get("answerContent"), Mapping) else {})
                    for _, a in parsed]
        control = _choose_field([str(k) for c in contents for k in c], field, "answer control", where)
        rows = _Rows("sagemaker")
        for (obj_id, a), content in zip(parsed, contents):
            rows.add(keys[obj_id], a.get("workerId"), content.get(control, []), refs[obj_id])
        return _finish(rows, control, multi, where)
    finally:
        tree.close()


def _cvat_worker(root: ElementTree.Element, fallback: str) -> str:
    for node in root.iterfind("./meta/job/assignee"):
        name = (node.findtext("username") or node.text or "").strip()
        if name:
            return name
    return fallback


def read_cvat(path: Path, field: str | None = None, multi: str | None = None, **_: Any) -> PlatformExport:
    """CVAT for images XML (``<annotations>``), one file per annotator's job: one ``.xml``
    file, or a folder or ZIP of them.

    The worker is the job's assignee (``meta/job/assignee/username`` or the ``assignee``
    text) when the file is a job's export that names one (a task's export names the task's
    assignee, not an annotator, and is not read for it), else the file's name without ``.xml`` (for a ZIP holding
    one ``annotations.xml``, the ZIP's name; where several files share a name, as
    ``job1/annotations.xml`` and ``job2/annotations.xml`` do, its path without ``.xml``). Per ``<image name=...>``: the item id is the
    image's file name without extension; its ``<tag label=...>`` elements are the classes
    (image-level tags; shapes are not read). Images without a tag are skipped (``empty``).
    "CVAT for video 1.1" exports (``<track>`` elements) hold no tags and are an error.
    ``field`` (``--field``) reads the tags' attribute of that name instead of ``label``.
    """
    where = f"CVAT export {path}"
    if path.is_dir() or zipfile.is_zipfile(path):
        tree = _Tree(path)
        try:
            files = [(n, tree.read(n)) for n in tree.names if n.lower().endswith(".xml")]
        finally:
            tree.close()
        single_name = path.name.rsplit(".", 1)[0] if not path.is_dir() else path.name
    else:
        files = [(path.name, path.read_bytes())]
        single_name = path.stem
    if not files:
        raise _fail(f"{where} holds no .xml files; export the jobs as 'CVAT for images 1.1'.")
    rows = _Rows("cvat")
    n_tags = n_images = n_tracks = 0
    stem_of = {name: PurePosixPath(name).name.rsplit(".", 1)[0] for name, _ in files}
    counts = Counter(stem_of.values())
    shared = {s for s, n in counts.items() if n > 1}
    for name, blob in files:
        try:
            root = ElementTree.fromstring(blob)
        except ElementTree.ParseError as exc:
            raise _fail(f"{where}: {name} is not valid XML ({exc}).") from exc
        if root.tag != "annotations":
            raise _fail(f"{where}: {name} has root <{root.tag}>, not <annotations>; export as 'CVAT for images 1.1'.")
        stem = stem_of[name]
        if stem in shared:  # the same file name in several folders: their paths tell the jobs apart
            stem = name.rsplit(".", 1)[0]
        fallback = single_name if len(files) == 1 and stem == "annotations" else stem
        worker = _cvat_worker(root, fallback)
        n_tracks += len(root.findall("track"))
        for image in root.iter("image"):
            n_images += 1
            tags = image.findall("tag")
            n_tags += len(tags)
            if field is None:
                values = [t.get("label") for t in tags]
            else:
                values = [a.text for t in tags for a in t.findall("attribute") if a.get("name") == field]
            ref = image.get("name")
            rows.add(item_id_from_reference(ref) if _is_image_ref(ref) else ref, worker, values, ref)
    if n_tags == 0 and n_tracks and not n_images:
        raise _fail(f"{where} is a 'CVAT for video 1.1' export (<track> elements, no <image>): that format "
                    "does not hold tags. Export the jobs as 'CVAT for images 1.1'.")
    if n_tags == 0:
        raise _fail(f"{where} has no image-level <tag> elements; kdcrowd reads image classification "
                    "tags (not boxes or polygons).")
    _check_same_stems(rows)
    return _finish(rows, field, multi, where)


def _check_same_stems(rows: _Rows) -> None:
    _item_ids(rows.refs, rows.items)


#: Format name → reader ``(path, field=None, multi=None, include_rejected=False) -> PlatformExport``.
FORMATS: dict[str, Callable[..., PlatformExport]] = {
    "labelstudio": read_labelstudio,
    "labelbox": read_labelbox,
    "argilla": read_argilla,
    "doccano": read_doccano,
    "toloka": read_toloka,
    "mturk": read_mturk,
    "sagemaker": read_sagemaker,
    "cvat": read_cvat,
}


# ----------------------------------------------------------------------------- detection


def _json_kind(obj: Any) -> str | None:
    if isinstance(obj, list):
        obj = next((o for o in obj if isinstance(o, Mapping)), None)
    if not isinstance(obj, Mapping):
        return None
    if "data_row" in obj:
        return "labelbox"
    if "annotations" in obj and "data" in obj:
        return "labelstudio"
    if "annotation_id" in obj and "annotator" in obj and "annotations" not in obj:
        return "labelstudio"  # JSON-MIN
    if "responses" in obj and ("fields" in obj or "_server_id" in obj):
        return "argilla"
    if any(isinstance(k, str) and k.endswith(".responses.users") for k in obj):
        return "argilla"  # flattened records (to_list(flatten=True), to_datasets())
    return None


def _zip_or_dir_kind(names: list[str], read: Callable[[str], bytes]) -> str | None:
    if any("worker-response/" in n and n.endswith(".json") for n in names):
        return "sagemaker"
    xml = [n for n in names if n.lower().endswith(".xml")]
    if xml and _xml_root(read(xml[0])[:4096]) == "annotations":
        return "cvat"
    if names and any(n.lower().endswith(".jsonl") for n in names):
        return "doccano"
    # doccano's "JSON" option: <username>.json files, each a JSON list of {"id", ..., "label": [...]}
    jsons = [n for n in names if n.lower().endswith(".json") and not PurePosixPath(n).name.startswith("._")][:_SHOW]
    heads = [read(n)[:4096].decode("utf-8-sig", errors="replace").lstrip() for n in jsons]
    if any(h.startswith("[") and re.search(r'"(label|cats)"\s*:', h) for h in heads):
        return "doccano"
    return None


def _xml_root(head: bytes) -> str | None:
    m = re.search(rb"<([A-Za-z_][\w.-]*)[\s>/]", re.sub(rb"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", b"", head, flags=re.S))
    return m.group(1).decode() if m else None


def detect_format(path: str | os.PathLike) -> str | None:
    """The platform that wrote ``path``, from its content, or ``None``.

    A folder or ZIP: ``worker-response/`` JSON files → ``sagemaker``; XML files with an
    ``<annotations>`` root → ``cvat``; ``.jsonl`` files, or ``.json`` files holding a JSON list
    of records with ``label`` (or ``cats``) → ``doccano``. A file: an XML root
    ``<annotations>`` → ``cvat``; JSON (a list, or NDJSON's first line) whose objects have
    ``data_row`` → ``labelbox``, ``data`` and ``annotations`` (or JSON-MIN's ``annotation_id``
    and ``annotator``) → ``labelstudio``, ``responses`` and ``fields`` (or flattened
    ``<question>.responses.users``) → ``argilla``; a tab-separated header with ``INPUT:``,
    ``OUTPUT:`` or ``ASSIGNMENT:`` columns → ``toloka``; a CSV header with ``HITId`` and
    ``WorkerId`` → ``mturk``; the same two inside a gzip file (``results.tsv.gz``). Long tables
    (``item,worker,label``) and peerannot answers files, compressed or not, are ``None``.
    """
    p = Path(path)
    if p.is_dir():
        names = [q.relative_to(p).as_posix() for q in p.rglob("*") if q.is_file()]
        return _zip_or_dir_kind(names, lambda n: (p / n).read_bytes()[:4096])
    if not p.is_file():
        return None
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = [n for n in z.namelist() if not n.endswith("/") and "__MACOSX/" not in n]
                return _zip_or_dir_kind(names, lambda n: z.read(n)[:4096])
        except (zipfile.BadZipFile, OSError):
            return None
    with open(p, "rb") as fh:
        head = fh.read(65536)
    if head.startswith(b"\x1f\x8b"):  # gzip: a compressed table export (pandas reads those), else our long tables and answers files
        import gzip
        import zlib

        try:
            with gzip.open(p, "rb") as fh:
                return _table_kind(fh.read(65536).decode("utf-8-sig", errors="replace").lstrip())
        except (OSError, EOFError, zlib.error):  # a damaged file: the table reader names it
            return None
    text = head.decode("utf-8-sig", errors="replace").lstrip()
    if text.startswith("<"):
        return "cvat" if _xml_root(head) == "annotations" else None
    if text.startswith("["):
        try:
            obj = _json_load(p, "file")
        except AnnotationError:
            return None
        return _json_kind(obj)
    if text.startswith("{"):
        first = text.split("\n", 1)[0]  # (a JSON line may hold U+2028, which splitlines() breaks at)
        if len(first) == len(text) and len(head) == 65536:  # a first record longer than the head (a long text)
            with open(p, encoding="utf-8-sig", errors="replace", newline="\n") as fh:
                first = next((line for line in fh if line.strip()), "")
        try:
            return _json_kind(json.loads(first))
        except json.JSONDecodeError:
            pass
        try:
            return _json_kind(_json_load(p, "file"))
        except AnnotationError:
            return None
    return _table_kind(text)


def _table_kind(text: str) -> str | None:
    """``toloka`` or ``mturk`` from the header line of a table export's ``text``, else None."""
    header = text.splitlines()[0] if text else ""
    if "\t" in header:
        cols = header.split("\t")
        if any(c.startswith(("INPUT:", "OUTPUT:", "ASSIGNMENT:", "GOLDEN:")) for c in cols):
            return "toloka"
    cols = next(csv.reader(io.StringIO(header)), [])
    if "HITId" in cols and "WorkerId" in cols:
        return "mturk"
    return None


def looks_like_platform_export(path: str | os.PathLike) -> bool:
    """Whether :func:`detect_format` recognises ``path`` (never raises)."""
    try:
        return detect_format(path) is not None
    except (OSError, ValueError):
        return False


def read_export(
    path: str | os.PathLike,
    format: str | None = None,
    field: str | None = None,
    multi: str | None = None,
    include_rejected: bool = False,
    item_column: str | None = None,
) -> PlatformExport:
    """Read a platform's export into a long table (see the module docstring).

    Args:
        path: the export file (or folder / ZIP for ``sagemaker``, ``cvat``, ``doccano``).
        format: one of ``FORMATS`` (``--format``); default: :func:`detect_format`.
        field: the question to read when the export has several (``--field``).
        multi: ``None`` (several classes in one answer are an error), ``"first"`` or
            ``"explode"`` (``--multi-label``).
        include_rejected: keep the assignments the requester rejected (Toloka, MTurk).
        item_column: the column whose values are the item ids (``--item-column``), in a
            Toloka or MTurk export (the others have no columns: an error).

    Raises:
        AnnotationError: an unrecognised or malformed export, with the option to fix it.
    """
    p = Path(path)
    if not p.exists():
        raise _MissingFileError(f"annotation file not found: {p} (absolute: {p.absolute()}); check the path")
    if format is None:
        format = detect_format(p)
        if format is None:
            raise _fail(f"cannot tell which platform wrote {p}; pass --format with one of "
                        f"{_names(FORMATS)} (or give a long table item,worker,label).")
    elif format not in FORMATS:
        raise _fail(f"--format {format!r} is not a known platform export; choose one of {_names(FORMATS)}.")
    if multi is not None and multi not in MULTI_POLICIES:
        raise _fail(f"--multi-label must be one of {_names(MULTI_POLICIES)}; got {multi!r}.")
    if p.is_dir() and format not in ("sagemaker", "cvat", "doccano"):
        raise _fail(f"{p} is a folder; a {format} export is one file. Pass the file's path (or the right --format).")
    if item_column is not None and format not in _TABLE_FORMATS:
        raise _fail(f"--item-column {item_column!r} names a column of a table or of a Toloka or MTurk export; a {format} "
                    "export has no columns: its items are named by their image's file name, else by their task "
                    "or record id. Drop --item-column.")
    export = FORMATS[format](p, field=field, multi=multi, include_rejected=include_rejected, item_column=item_column)
    return export
