"""The practitioner's items: a feature file or a folder of images, with their item ids.

Which function for which input:

* a feature matrix (``.npy``, or a ``.csv``/``.tsv``/``.parquet`` table with an ``item``
  column) → :func:`read_features`;
* a folder of images (png, jpg, jpeg, bmp, webp; searched recursively) →
  :func:`read_image_folder` (or :func:`list_image_files` + :func:`image_item_ids` +
  :func:`load_images` to choose the ids before decoding anything);
* the crowd labels, read so that their item ids are text exactly as written in the
  file → :func:`read_annotation_frame` (then ``Annotations.from_long(df, items=ids)``).

Item ids are always **text** here (``"0017"`` stays ``"0017"``, never the number 17), on
both sides: the features' or images' ids and the annotation table's ``item``/``task``
column. Matching therefore never depends on how pandas guesses a column's type.

Every bad input raises a ``ValueError`` (``FileNotFoundError`` for a missing path) whose
message names the file, the offending rows or files, and how to fix it.
"""

from __future__ import annotations

import os
import posixpath
import struct
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import pandas as pd

from .readers import (  # noqa: F401 - read_annotation_frame, LONG_TABLE_WORDS and _as_text are re-exported
    _UNNAMED,
    LONG_TABLE_WORDS,
    _as_text,
    _listing,
    _read_table,
    _require_file,
    _separator_hint,
    _warn,
    _wide_to_long,
    data_row_lines,
    read_annotation_frame,
)

__all__ = [
    "ID_STYLES",
    "check_numbers",
    "feature_table",
    "float32_features",
    "IMAGE_SUFFIXES",
    "image_item_ids",
    "list_image_files",
    "load_images",
    "match_image_ids",
    "read_annotation_frame",
    "read_features",
    "read_image_folder",
    "read_item_ids",
    "item_labels_from_frame",
    "read_item_labels",
]

#: File suffixes (lower case) that :func:`list_image_files` treats as images.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Suffixes of images that Pillow does not decode reliably here: skipped with a warning.
_UNSUPPORTED_IMAGE_SUFFIXES: tuple[str, ...] = (".gif", ".heic", ".heif", ".avif", ".svg", ".ico", ".jp2", ".raw", ".cr2", ".nef", ".dng", ".psd")
#: Item-id schemes of :func:`image_item_ids`.
ID_STYLES: tuple[str, ...] = ("stem", "name", "path")
#: How many offending rows or files an error message shows.
_SHOW = 5


def _check_ids(ids: np.ndarray, source: str) -> None:
    """Ids must be non-empty text and unique."""
    empty = np.flatnonzero(pd.Series(ids).str.strip().eq("").to_numpy())
    if empty.size:
        raise ValueError(f"{source}: empty item id at row(s) {_listing(empty.tolist())}; give every item an id")
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        raise ValueError(f"{source}: item ids must be unique, but {_listing(sorted(set(ids[rows].tolist())))} appear more than once (rows {_listing(rows.tolist())}); remove the repeated rows")


# ----------------------------------------------------------------------------- features


def read_item_ids(path: str | os.PathLike[str]) -> np.ndarray:
    """Item ids from a text file, one per line (surrounding spaces and blank lines at the end ignored).

    Returns an object array of ``str``.
    """
    path = Path(path)
    _require_file(path, "item-id file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: drop a byte-order mark
    except UnicodeDecodeError as e:
        raise ValueError(f"item-id file {path} is not UTF-8 text ({e.reason}: {e.object[e.start:e.end]!r}); save it as UTF-8, one id per line") from e
    while lines and not lines[-1].strip():
        lines.pop()
    ids = np.array([s.strip() for s in lines], dtype=object)
    _check_ids(ids, f"item-id file {path}")
    return ids


def read_features(path: str | os.PathLike[str], item_ids: Sequence[Any] | str | os.PathLike[str] | None = None, *, with_columns: bool = False,
                  keep_columns: Sequence[str] = ()) -> tuple[Any, ...]:
    """Read a feature matrix and its item ids.

    Args:
        path: ``.npy`` (a 2-d numeric array, one row per item), or a table
            (``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``, ``.parquet``, ``.pq``) with an
            ``item`` column of ids and numeric feature columns (every other column).
        item_ids: ``.npy`` only: the ids of the rows, as a sequence or the path of a text
            file with one id per line. Default: row ``i`` has id ``"i"``.
        keep_columns: a model's training columns: a first column without a header (the
            index that pandas' ``to_csv()`` writes) is skipped, with a warning, unless it is
            one of them; without them, where it holds distinct whole numbers.

    Returns:
        ``(ids, X)``: ``ids`` an object array of ``str`` (length N, unique) and ``X``
        float32 ``(N, D)``, finite; with ``with_columns=True`` ``(ids, X, columns)``, the
        names of the feature columns in file order (``None`` for a ``.npy`` file), which
        :func:`align_feature_columns` matches against the training columns.
    """
    path = Path(path)
    _require_file(path, "feature file")
    name = path.name.lower()
    if name.endswith(".npy"):
        try:
            X = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"cannot read feature file {path} as a numpy .npy array: {e}; write it with numpy.save(path, X), X a 2-d numeric array") from e
        if X.ndim != 2:
            raise ValueError(f"feature file {path} holds an array of shape {X.shape}; features must be 2-d (items, features) — for images use --images DIR")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"feature file {path} holds {X.dtype} values; features must be numeric")
        if item_ids is None:
            ids = np.array([str(i) for i in range(len(X))], dtype=object)
        else:
            if isinstance(item_ids, (str, os.PathLike)):
                ids = read_item_ids(item_ids)
            else:
                given = pd.Series(list(item_ids), dtype=object)
                if given.isna().any():
                    raise ValueError(f"item ids: missing id (None/NaN) at position(s) {_listing(np.flatnonzero(given.isna().to_numpy()).tolist())}; give every row of {path.name} an id")
                ids = _as_text(given).to_numpy(dtype=object)
            _check_ids(ids, "item ids")
            if len(ids) != len(X):
                raise ValueError(f"{len(ids)} item ids for the {len(X)} rows of {path}; give exactly one id per row (in row order)")
        columns = None
    elif name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")):
        if item_ids is not None:
            raise ValueError(f"item ids are given by the 'item' column of {path.name}; pass a separate id list only with a .npy feature file")
        df = _read_table(path, "feature table", error=ValueError, text_columns=("item",))
        ids, X, columns = feature_table(df, f"feature table {path}", keep_columns)
        if len(df) == 0:
            raise ValueError(f"feature table {path} has no rows (only the header line); add one row per item")
    else:
        raise ValueError(f"cannot tell the format of feature file {path.name!r}; use .npy, .csv, .csv.gz, .tsv, .tsv.gz, .parquet or .pq")
    if len(X) == 0:
        raise ValueError(f"feature file {path} has no rows (shape {X.shape}); give one row per item")
    if X.shape[1] == 0:
        raise ValueError(f"feature file {path} has {len(X)} rows but no feature columns (shape {X.shape}); give at least one feature per item")
    # values beyond float32's range would become inf in the cast: named as such, beside the
    # missing or infinite ones, in one error
    with np.errstate(over="ignore", invalid="ignore"):  # (values that round to the float32 maximum are fine)
        X32 = np.asarray(X, dtype=np.float32)
    problems: list[str] = []
    if X.dtype.kind == "f":
        finite = np.isfinite(X)
        for bad, what, fix in ((finite & ~np.isfinite(X32), "values beyond the float32 range (±3.4028235e38)", "rescale those features (e.g. take the logarithm or standardise) or drop those items"),
                               (~finite, "missing or infinite values", "fill them in or drop those items")):
            rows = np.flatnonzero(bad.any(axis=1))
            if rows.size:
                first = bad[rows[:_SHOW]].argmax(axis=1)  # each listed row's first bad column
                where = [f"{ids[r]} ({_column_name(columns, int(j))}{'' if not finite[r, j] else f': {X[r, j]:.8g}'})" for r, j in zip(rows[:_SHOW], first)]
                problems.append(f"{what} for {rows.size} item(s): {_listing(where, rows.size, fmt=str)}; {fix}")
    if problems:
        raise ValueError(f"feature file {path}: {'; and '.join(problems)}")
    return (ids, X32, columns) if with_columns else (ids, X32)


def feature_table(df: pd.DataFrame, source: str, keep_columns: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(ids, X, columns)`` of a feature table: its ``item`` column of ids (text, given on
    every row, unique) and its other columns, the features, as float64 ``(N, D)`` with their
    names, as :func:`read_features` reads a ``.csv``/``.parquet`` file and
    :func:`kdcrowd.persist.load_predictor` a DataFrame with such a column. A first column
    without a header (the index that pandas' ``to_csv()`` writes) is skipped, with a warning,
    unless it is one of ``keep_columns`` (a model's training columns; without them, where it
    holds distinct whole numbers). ``source`` names the table in errors (``"feature table
    PATH"``, ``"X"``); values are not checked beyond being numbers (no rows, NaN: the caller)."""
    if "item" not in df.columns:
        raise ValueError(f"{source} has no 'item' column (columns: {_listing(list(map(str, df.columns)), len(df.columns))}); name the column of item ids 'item'" + _separator_hint(list(df.columns)))
    if df["item"].isna().any():
        rows = np.flatnonzero(df["item"].isna().to_numpy())
        raise ValueError(f"{source}: missing item id in row(s) {_listing(rows.tolist(), rows.size)}; give every row an id")
    ids = _as_text(df["item"]).to_numpy(dtype=object)
    _check_ids(ids, source)
    feats = df.drop(columns=["item"])
    first = df.columns[0]
    if feats.shape[1] > 1 and _UNNAMED.fullmatch(str(first)):  # perhaps the index that pandas' to_csv() writes: no feature
        if keep_columns:  # the model's training columns decide
            skip, why = str(first) not in set(map(str, keep_columns)), "which the model was not trained with"
        else:  # an index: distinct whole numbers (0..N-1, or a slice's or a shuffled frame's)
            v = pd.to_numeric(df[first], errors="coerce")
            skip, why = bool(v.notna().all() and (v == v.round()).all() and v.is_unique), "which holds distinct whole numbers"
        if skip:
            _warn(f"{source}: skipped its first column, which has no header, {why} (the index that pandas' to_csv() writes); write the table with to_csv(index=False)")
            feats = feats.drop(columns=[first])
    if feats.shape[1] == 0:
        raise ValueError(f"{source} has only the 'item' column; add numeric feature columns")
    for c in feats.columns:
        if not pd.api.types.is_numeric_dtype(feats[c]) and not pd.api.types.is_bool_dtype(feats[c]):
            # pandas leaves integers beyond int64/uint64 (e.g. 1e20 written out in full) as text
            number = pd.to_numeric(feats[c], errors="coerce")
            if int(number.notna().sum()) == int(feats[c].notna().sum()):
                feats[c] = number.astype(np.float64)
    bad = [str(c) for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise ValueError(f"{source}: column(s) {_listing(bad)} are not numeric; every column other than 'item' must be a numeric feature (drop or encode the others)")
    return ids, feats.to_numpy(dtype=np.float64), [str(c) for c in feats.columns]


def check_numbers(X: np.ndarray, finite: bool = True) -> None:
    """Refuse an item array that a model cannot take: not numbers, or (``finite``) floats that
    are NaN or infinite (CrowdFit's and a loaded model's one check)."""
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must hold numbers; got an array of dtype {X.dtype}")
    if finite and X.dtype.kind == "f" and not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity.")


def float32_features(X: np.ndarray) -> np.ndarray:
    """Feature rows ``(N, D)`` as float32, refused (naming the rows) where a value lies beyond
    float32's range, which the cast would turn into infinity."""
    big = np.abs(X) > np.finfo(np.float32).max
    if big.any():
        rows = np.flatnonzero(big.any(1))
        raise ValueError(f"X has values beyond float32's range (±3.4e38) in rows {rows[:5].tolist()}{' ...' if len(rows) > 5 else ''}; rescale the features")
    return X.astype(np.float32, copy=False)


def _column_name(columns: Sequence[str] | None, j: int) -> str:
    return columns[j] if columns else f"column {j}"


def align_feature_columns(X: np.ndarray, columns: Sequence[str] | None, expected: Sequence[str] | None, source: str, option: str = "--features") -> np.ndarray:
    """The columns of ``X`` (named ``columns``) in the order of the training columns
    ``expected``, matched by name: the same names in another order are reordered; a
    missing, extra or renamed column raises one ``ValueError`` that names them. When
    either side has no names (a ``.npy`` file) only the count is checked."""
    if columns is None or expected is None:
        if expected is not None and X.shape[1] != len(expected):
            raise ValueError(f"{source} has {X.shape[1]} feature columns (item shape {X.shape[1:]}) but the model was trained on {len(expected)} ({_listing(list(expected))}); give {option} with the training columns")
        return X
    columns, expected = [str(c) for c in columns], [str(c) for c in expected]
    if columns == expected:
        return X
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    if missing or extra:
        parts = ([f"missing {_listing(missing)}"] if missing else []) + ([f"not in the training features {_listing(extra)}"] if extra else [])
        raise ValueError(f"{source}: the feature columns differ from those the model was trained on ({'; '.join(parts)}); give {option} with the training columns (matched by name: {_listing(expected, len(expected))})")
    order = [columns.index(c) for c in expected]
    return X[:, order]


# ----------------------------------------------------------------------------- images


def _visible_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The files under ``root`` and the broken links among its names, linked folders
    followed (each real folder once, so a link to a folder above cannot loop), hidden files
    and folders (``.name``) left out."""
    seen: set[str] = set()
    files: list[Path] = []
    broken: list[Path] = []
    for top, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for n in names:
            if not n.startswith("."):
                p = os.path.join(top, n)
                if os.path.isfile(p):
                    files.append(Path(p))
                elif not os.path.exists(p):  # a link to nothing: named by list_image_files (it had been left out silently)
                    broken.append(Path(p))
    return files, broken


def list_image_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Every image file under ``directory`` (recursively), sorted by relative path.

    Images are files whose suffix is one of :data:`IMAGE_SUFFIXES` (any case). Hidden
    files and folders (names starting with ``.``, e.g. macOS ``._x.png``) are skipped;
    linked folders are followed; a link to a missing image is skipped with a warning.
    Raises when the folder does not exist or holds no image.
    """
    root = Path(directory)
    if not root.exists():
        raise FileNotFoundError(f"image folder not found: {root} (absolute: {root.absolute()}); check the path")
    if not root.is_dir():
        raise ValueError(f"--images must be a folder of image files; {root} is a file")
    visible, links = _visible_files(root)
    broken = [p for p in links if p.suffix.lower() in IMAGE_SUFFIXES]
    files = [p for p in visible if p.suffix.lower() in IMAGE_SUFFIXES]
    other = [p for p in visible if p.suffix.lower() in _UNSUPPORTED_IMAGE_SUFFIXES]
    import warnings

    from .readers import InputWarning

    if broken:
        warnings.warn(f"image folder {root}: skipped {len(broken)} link(s) to a missing file: {_listing(sorted(p.relative_to(root).as_posix() for p in broken), len(broken))}", InputWarning, stacklevel=2)
    if other:
        warnings.warn(f"image folder {root}: skipped {len(other)} image file(s) of an unsupported type: {_listing(sorted(p.relative_to(root).as_posix() for p in other), len(other))}; convert them to {', '.join(IMAGE_SUFFIXES)}", InputWarning, stacklevel=2)
    if not files:
        raise ValueError(f"no image files in {root} (looked recursively for {', '.join(IMAGE_SUFFIXES)}){f'; {len(other)} file(s) of an unsupported type, e.g. {other[0].name}: convert them' if other else ''}; point --images at the folder that holds the images")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _text_id(name: str) -> str:
    """An id's form for matching file names with crowd labels: Unicode's composed form
    (NFC), where macOS and many zip files store ``café`` decomposed (NFD) and typed text is
    composed. Only compared: the ids keep their spelling."""
    return unicodedata.normalize("NFC", name)


def image_item_ids(files: Sequence[Path], directory: str | os.PathLike[str], style: str = "stem") -> np.ndarray:
    """Item ids of image files (an object array of ``str``, unique).

    Styles:

    * ``"stem"`` (default): the file name without extension (``cats/img017.jpg`` →
      ``img017``);
    * ``"name"``: the file name with extension (``img017.jpg``);
    * ``"path"``: the path relative to ``directory``, with extension, ``/``-separated
      (``cats/img017.jpg``).

    With ``stem`` and ``name``, files whose ids would clash (``a/x.png`` and ``b/x.png``,
    or ``x.png`` and ``x.jpg`` under ``stem``) get their relative path instead — without
    extension for ``stem`` (``a/x``, ``b/x``), with it for ``name``; the other files keep
    the short id. Ids that still clash raise an error naming the files. Short ids lose
    surrounding spaces (``photo .png`` → ``photo``), as crowd-label ids do.
    """
    if style not in ID_STYLES:
        raise ValueError(f"unknown image id style {style!r}; use one of {ID_STYLES}")
    root = Path(directory)
    rel = [Path(f).relative_to(root) for f in files]
    if style == "path":
        ids = [r.as_posix() for r in rel]
    else:
        short = [(r.stem if style == "stem" else r.name).strip() for r in rel]
        long = [r.with_suffix("").as_posix() if style == "stem" else r.as_posix() for r in rel]
        counts = pd.Series(short).value_counts()
        ids = [lg if counts[s] > 1 else s for s, lg in zip(short, long)]
    out = np.array(ids, dtype=object)
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        clash = [rel[i].as_posix() for i in np.flatnonzero(dup)]
        raise ValueError(f"image files {_listing(clash, len(clash))} in {root} would get the same item id; rename them (or use the 'path' id style)")
    return out


def _orientations() -> dict[int, Any]:
    """EXIF orientation (2-8) → the Pillow transpose that turns the picture upright."""
    from PIL import Image

    T = Image.Transpose
    return {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}


def _rgb(im: Any) -> Any:
    """An opened Pillow image as RGB, the way an image viewer shows it: turned upright by its
    EXIF orientation tag (a phone's photo is stored sideways with that tag). 16-bit
    (``I;16``) and 32-bit integer (``I``) grayscale are scaled from 0..65535 to 0..255 first
    (Pillow's own conversion clips them, so a 16-bit PNG came out almost all white); 32-bit
    float (``F``, e.g. a float TIFF) from 0..1 when its values lie there, else clipped to
    0..255 (Pillow's conversion truncates 0.6 to 0: black)."""
    from PIL import Image

    # the orientation tag read and applied here: ImageOps.exif_transpose writes the EXIF back
    # out, which raised struct.error on a mistyped tag of a file Pillow reads well
    im.load()  # first: Pillow's TIFF reader turns the picture upright when it loads it, and drops the tag
    try:
        turn = _orientations().get(im.getexif().get(0x0112))
    except (OSError, ValueError, SyntaxError, TypeError, KeyError, struct.error):  # EXIF past repair: as stored
        turn = None
    if turn is not None:
        im = im.transpose(turn)
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.nan_to_num(np.asarray(im).astype(np.float64))
        if im.mode == "F":
            if a.size and a.min() >= 0 and a.max() <= 1:
                a = a * 255.0
        elif im.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def load_images(files: Sequence[Path], size: int | tuple[int, int], channels: int = 3) -> np.ndarray:
    """Decode images with Pillow, convert to RGB and resize to ``size × size`` (bilinear),
    or to ``size = (height, width)``; ``channels=1`` then takes their greyscale (Pillow's
    ``L``), for a model trained on such pixels.

    Any mode converts (grayscale, 16-bit grayscale - scaled, not clipped -, RGBA, palette,
    CMYK, 1-bit). Returns uint8 ``(N, height, width, channels)``. Files that cannot be
    decoded are collected and reported together in one error that names them.
    """
    from PIL import Image

    try:
        h, w = (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"image size must be a whole number of pixels, got {size!r}") from None
    if min(h, w) < 1:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")
    if channels not in (1, 3):
        raise ValueError(f"images are read as RGB (3 channels) or greyscale (1), not {channels} channels")
    out = np.empty((len(files), h, w, channels), dtype=np.uint8)
    bad: list[str] = []
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                pixels = _rgb(im).resize((w, h), Image.BILINEAR)
                out[i] = np.asarray(pixels if channels == 3 else pixels.convert("L"), dtype=np.uint8).reshape(h, w, channels)
        except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as e:  # PIL raises all of these for broken files
            bad.append(f"{f} ({type(e).__name__}: {str(e)[:80]})")
    if bad:
        raise ValueError(f"{len(bad)} image file(s) could not be read: {_listing(bad, sep='; ', fmt=str)}. Fix or remove them")
    return out


def read_image_folder(directory: str | os.PathLike[str], size: int = 32, style: str = "stem") -> tuple[np.ndarray, np.ndarray]:
    """Every image under ``directory`` as uint8 ``(N, size, size, 3)`` with its item id.

    Files as in :func:`list_image_files`, ids as in :func:`image_item_ids` (default: the
    file name without extension, the relative path without extension when names clash),
    pixels as in :func:`load_images`. Returns ``(ids, X)``, in sorted relative-path order.
    """
    files = list_image_files(directory)
    ids = image_item_ids(files, directory, style)
    return ids, load_images(files, size)


def _spellings(wanted: Sequence[Any]) -> dict[str, str]:
    """``{composed form: spelling}`` of the non-ASCII ``wanted`` ids as text (ASCII has one form)."""
    return {_text_id(w): w for w in pd.unique(pd.Series([str(v) for v in wanted], dtype=object)) if not w.isascii()}


def respell_ids(ids: Sequence[Any], wanted: Sequence[Any]) -> np.ndarray:
    """``ids`` (of files, feature rows or texts) with each text id that matches a ``wanted``
    id (the crowd labels') but for its Unicode form spelled as the wanted one: a name stored
    decomposed, as macOS does, finds the labels typed composed. Two ids that would then be
    the same keep their own spellings. ``ids`` itself when no id changes (ASCII ids have
    one form)."""
    spelled = _spellings(wanted)
    if not spelled:
        return ids  # type: ignore[return-value]
    ids = np.asarray(ids, dtype=object)
    respelled = np.array([spelled.get(_text_id(i), i) if isinstance(i, str) else i for i in ids.tolist()], dtype=object)
    return np.where(pd.Series(respelled).duplicated(keep=False).to_numpy(), ids, respelled)


def _paths_named(files: Sequence[Path], directory: str | os.PathLike[str], wanted: Sequence[str]) -> dict[str, int]:
    """``{id: file index}`` of the ``wanted`` ids that are paths (holding ``/`` or ``\\``)
    naming one of ``files``, under ``directory``: the path relative to the folder
    (``./a/b.png`` is ``a/b.png``); an absolute path, or one relative to the working folder,
    under the folder (that file only); else the longest trailing part of it that is a file's
    relative path (holding the id's last folder, for a relative id), or, for an absolute path
    elsewhere (another machine's), its file name or stem where one file has it. With or without the file's extension, compared in Unicode's composed form.
    An id that names no file, or a name several files share, is left out."""
    paths = [w for w in wanted if "/" in w or "\\" in w]
    if not paths:
        return {}
    root = Path(directory)
    rel = [_text_id(Path(f).relative_to(root).as_posix()) for f in files]
    names = [posixpath.basename(r) for r in rel]

    def unique(keys: list[str]) -> dict[str, int]:  # key -> the one file that has it
        counts = Counter(keys)
        return {k: i for i, k in enumerate(keys) if counts[k] == 1}

    by_path = {**unique([posixpath.splitext(r)[0] for r in rel]), **{r: i for i, r in enumerate(rel)}}
    by_name = {**unique([posixpath.splitext(n)[0] for n in names]), **unique(names)}
    bases = list(dict.fromkeys(os.path.abspath(b).rstrip(os.sep) for b in (root, os.path.realpath(root))))  # the folder as given, and its links resolved
    cwd = os.getcwd()
    out: dict[str, int] = {}
    for w in paths:
        p = _text_id(w).replace("\\", "/")
        absolute = os.path.isabs(p) or bool(PureWindowsPath(p).drive)  # (C:/data/a.png: another machine's)
        if not absolute and (i := by_path.get(posixpath.normpath(p))) is not None:  # relative to the folder
            out[w] = i
            continue
        full = os.path.normpath(p if absolute else os.path.join(cwd, p))
        under = [full[len(b) + 1:].replace(os.sep, "/") for b in bases if full.startswith(b + os.sep)]
        if under:  # in the folder: that file or none
            if (i := by_path.get(under[0])) is not None:
                out[w] = i
            continue
        parts = [x for x in p.split("/") if x not in ("", ".")]
        # the longest first; a relative path keeps its last folder (cats/001.png is no dogs/001.png, nor a 001.png
        # of the folder's top): only an absolute one, another machine's, may fall back to the file's name alone
        tails = ("/".join(parts[k:]) for k in range(len(parts) if absolute else len(parts) - 1))
        i = next((by_path[t] for t in tails if t in by_path), by_name.get(parts[-1]) if parts and absolute else None)
        if i is not None:
            out[w] = i
    return out


def _respell_paths(ids: np.ndarray, named: dict[str, int], want: pd.Index) -> np.ndarray:
    """``ids`` with each file that one path of ``named`` (:func:`_paths_named`) names spelled
    as that path, as the crowd labels spell it; a file that the labels also name by its id,
    or by two paths, keeps its id."""
    if not named:
        return ids
    wanted = set(want.tolist())
    known = {i: v for i, v in enumerate(ids.tolist()) if v in wanted}  # the files the labels name by their id
    direct = set(known.values())
    files = pd.Series({w: i for w, i in named.items() if i not in known and w not in direct}, dtype=object)
    once = files[~files.duplicated(keep=False)]
    if once.empty:
        return ids
    out = np.array(ids, dtype=object)
    out[once.to_numpy(dtype=np.int64)] = once.index.to_numpy(dtype=object)
    return out


def match_image_ids(files: Sequence[Path], directory: str | os.PathLike[str], wanted: Sequence[Any], style: str = "auto") -> tuple[str, np.ndarray]:
    """The id style of :func:`image_item_ids` under which the images cover the ids ``wanted``
    (``style``: that one, ``--image-ids``; ``"auto"``: found), and the ids.

    Tries ``stem``, ``name`` and ``path`` in turn and returns the first ``(style, ids)``
    whose ids include every wanted id (compared as text, and in Unicode's composed form:
    a file ``café`` stored decomposed, as macOS does, takes the id as the labels spell it);
    when none does, the style that
    matches the most (``stem`` on a tie), so that the caller's error names the ids that
    are still missing. Whatever the style, a wanted id that is a path names its image
    (:func:`_paths_named`: ``./a/b.png``, or an absolute path under ``directory``, is the
    image at that path relative to it; a path elsewhere matches by its trailing folders,
    file name or stem where one image has it), which then takes the id as the labels spell it.
    """
    want = pd.Index(pd.unique(pd.Series([str(v) for v in wanted], dtype=object)))
    if style != "auto":
        ids = respell_ids(image_item_ids(files, directory, style), want)
        return style, _respell_paths(ids, _paths_named(files, directory, want[~want.isin(ids)].tolist()), want)
    named: dict[str, int] | None = None  # found once a style misses some ids
    best: tuple[int, int, str, np.ndarray] | None = None
    clash: dict[str, str] = {}
    for style in ID_STYLES:
        try:
            ids = image_item_ids(files, directory, style)
        except ValueError as e:
            clash[style] = str(e)
            continue
        ids = respell_ids(ids, want)
        hits = int(want.isin(ids).sum())
        if hits == len(want):
            return style, ids
        named = _paths_named(files, directory, want.tolist()) if named is None else named
        ids = _respell_paths(ids, named, want)  # with paths: the style whose own ids match the most is kept
        found = int(want.isin(ids).sum())
        if best is None or (found, hits) > best[:2]:
            best = (found, hits, style, ids)
    if best is None:  # every style clashes: let image_item_ids raise its error
        image_item_ids(files, directory, "stem")
    assert best is not None
    if best[0] == len(want):
        return best[2], best[3]
    spelled = _spellings(want)  # the stem style's ids as the labels spell them, which may repeat
    shared = pd.Series([spelled.get(_text_id(s), s) for s in (Path(f).stem.strip() for f in files)]).value_counts()
    if "stem" in clash and want.isin(shared.index[shared > 1]).any():  # the labels name images by a stem several files share (a.png, a.jpg)
        raise ValueError(f"{clash['stem']}: the crowd labels name images by a name that several files share without their extension, so no id style matches them all; keep one file per image (e.g. remove the duplicate a.png beside a.jpg), or write the file names with their extension (a.png) in the crowd labels")
    return best[2], best[3]


# ----------------------------------------------------------------------------- annotations


def read_item_labels(path: str | os.PathLike[str], item_ids: Sequence[Any], classes: Sequence[Any], items_are: str = "features/images",
                     fold_case: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Known true labels of some items (e.g. a gold set checked by an expert).

    Args:
        path: ``.csv``/``.tsv``/``.parquet`` table with columns ``item`` and ``label``
            (crowd-kit's ``task`` is accepted for ``item``, and ``truth`` or crowd-kit's
            ``true_label`` for ``label`` where there is no ``label`` column; other columns
            are ignored).
        item_ids: the ids of all items (as returned by :func:`read_features` /
            :func:`read_image_folder`; matched by their text, so ``17`` is ``"17"``).
        classes: the class values of the annotations; labels are matched by their text,
            so ``1`` and ``"1"`` are the same class.
        items_are: what makes an item known, for the error on unknown items (``kdcrowd
            aggregate``: its crowd labels).
        fold_case: a label that is no class as written is the class it equals ignoring
            letter case (the crowd's labels were folded: ``--label-case fold``).

    Returns:
        ``(items, labels)``: int64 ``(G,)`` positions in ``item_ids`` and int64 ``(G,)``
        class indices into ``classes``. An item listed twice with the same label counts
        once; with different labels it is an error.
    """
    path = Path(path)
    name = path.name.lower()
    _require_file(path, "label file")
    if name.endswith((".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")):
        df = _read_table(path, "label file", error=ValueError, text_columns=True)
    else:
        raise ValueError(f"cannot tell the format of label file {path.name!r}; use .csv, .tsv or .parquet with columns item,label")
    text = not name.endswith((".parquet", ".pq"))  # errors name a text file's lines (the header is line 1), as the annotation reader's do
    return item_labels_from_frame(df, path, item_ids, classes, items_are, fold_case=fold_case, lines=data_row_lines(path, len(df)) if text else None)


def item_labels_from_frame(df: pd.DataFrame, path: str | os.PathLike[str], item_ids: Sequence[Any], classes: Sequence[Any], items_are: str = "features/images",
                           fold_case: bool = False, lines: np.ndarray | None = None, source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_item_labels` of a table already read (e.g. a platform export's gold
    answers, or the estimator's ``gold=`` Series indexed by item id); ``path`` names its
    source in the errors (``label file PATH``; ``source``, where given, instead: ``gold``),
    which name rows from 0, or with ``lines`` (each row's file line) the file lines."""
    path = Path(path)
    where = source or f"label file {path}"
    word, number = ("row", np.arange(len(df))) if lines is None else ("line", np.asarray(lines))  # how the errors name a row
    item_col = "item" if "item" in df.columns else "task" if "task" in df.columns else None
    # the label column: label, or the truth files' truth / crowd-kit's true_label (ground truth by name)
    label_col = next((c for c in ("label", "truth", "true_label") if c in df.columns), None)
    if item_col is None or label_col is None:
        raise ValueError(f"{where} needs columns 'item' (or 'task') and 'label' (or 'truth', 'true_label'); found {_listing(list(map(str, df.columns)), len(df.columns))}" + _separator_hint(list(df.columns)))
    if len(df) == 0:
        raise ValueError(f"{where} has no rows (only the header line); add one row 'item,label' per known item")
    it, lb = _as_text(df[item_col]), _as_text(df[label_col])
    na = np.flatnonzero((it.isna() | lb.isna()).to_numpy())
    if na.size:
        raise ValueError(f"{where}: missing item or label in {word}(s) {_listing(number[na].tolist(), na.size)}; fill them in or drop those rows")
    known = _as_text(pd.Series(list(item_ids), dtype=object))
    _check_ids(known.to_numpy(dtype=object), "item ids (compared as text)")
    index = pd.Index(known.to_numpy(dtype=object))
    pos = index.get_indexer(it.to_numpy(dtype=object))
    miss = pos < 0
    if miss.any() and (spelled := _spellings(known.tolist())):  # an id in another Unicode form (café decomposed) is the item, as the crowd labels match
        pos[miss] = index.get_indexer([spelled.get(_text_id(v), v) for v in it[miss].tolist()])
    bad = np.flatnonzero(pos < 0)
    if bad.size:
        shown = [f"{word} {number[r]} (item={it.iloc[r]!r})" for r in bad[:_SHOW]]
        raise ValueError(f"{where}: {bad.size} row(s) name items that have no {items_are}: {_listing(shown, bad.size, sep='; ', fmt=str)}; drop them or add the items")
    class_text = pd.Index(_as_text(pd.Series(list(classes), dtype=object)).to_numpy(dtype=object))
    if not class_text.is_unique:
        same = sorted(set(class_text[class_text.duplicated(keep=False)].tolist()))
        raise ValueError(f"classes {_listing(same)} appear more than once when written as text (e.g. 1 and '1'); labels in {source or path.name} are matched by their text, so give each class once")
    cls = class_text.get_indexer(lb.to_numpy(dtype=object))
    if (cls < 0).any():  # matched ignoring letter case: with --label-case fold, else for the error's hint
        folded = pd.Index(pd.Series(class_text, dtype=object).astype(str).str.casefold())
        lb_folded = lb.astype(str).str.casefold()
        if fold_case and folded.is_unique:  # 'Cat' is the class 'cat' when the crowd's labels were folded
            cls = np.where(cls < 0, folded.get_indexer(lb_folded.to_numpy(dtype=object)), cls)
    if (cls < 0).any():  # '1.0', how pandas writes a float label column, is the class 1, as in the crowd labels:
        left = np.flatnonzero(cls < 0)  # the numbers pandas reads (not 1_0, nor ١), written as the crowd labels' reader writes them
        cls[left] = class_text.get_indexer(_as_text(pd.to_numeric(lb.iloc[left], errors="coerce")).to_numpy(dtype=object))
    bad = np.flatnonzero(cls < 0)
    if bad.size:
        shown = [f"{word} {number[r]} (item={it.iloc[r]!r}, label={lb.iloc[r]!r})" for r in bad[:_SHOW]]
        raise ValueError(f"{where}: {bad.size} label(s) are not among the annotation classes {_listing(list(class_text), len(class_text))}: {_listing(shown, bad.size, sep='; ', fmt=str)}; write each label as one of these classes (matched as text{'; --label-case fold matches them ignoring letter case' if not fold_case and lb_folded.iloc[bad].isin(folded).any() else ''}) or drop those rows")
    frame = pd.DataFrame({"pos": pos, "cls": cls}).drop_duplicates()
    conflict = frame["pos"].duplicated(keep=False).to_numpy()
    if conflict.any():
        ids = sorted({str(known.iloc[p]) for p in frame["pos"].to_numpy()[conflict]})
        raise ValueError(f"{where}: item(s) {_listing(ids)} have more than one different label; keep one label per item")
    return frame["pos"].to_numpy(dtype=np.int64), frame["cls"].to_numpy(dtype=np.int64)
