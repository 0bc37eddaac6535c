"""Text items: read a table of texts, and turn texts into TF-IDF features.

:func:`read_texts` reads the id and text of every item from a CSV, TSV, Parquet or JSON
lines file. :func:`text_features` fits a :class:`TextFeaturizer` (scikit-learn's TF-IDF:
sublinear term frequency, smoothed idf, rows scaled to unit length) on the training texts
and returns their dense float32 features with the featurizer, whose
:meth:`~TextFeaturizer.transform` turns new texts (at ``predict`` time) into the same
columns. The featurizer is fitted on the training texts only: texts seen later never
change the vocabulary or the idf weights.

:meth:`TextFeaturizer.to_state` holds everything the transform needs as plain values (the
vocabulary as a list of words in column order, the idf weights as a float64 tensor, the
tokenizer settings), so a checkpoint loaded with ``torch.load(..., weights_only=True)`` can
carry it; :meth:`TextFeaturizer.from_state` rebuilds it. Nothing is pickled.

Memory: the features are dense, ``N × max_features × 4`` bytes (20 000 texts × 5 000
words: 400 MB); lower ``max_features`` for large corpora.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._common import read_parquet_table, tsv_quoting
from .annotations import AnnotationError, _MissingFileError
from .readers import _as_text

__all__ = ["TextFeaturizer", "read_texts", "text_features"]

_SHOW = 5
_TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq", ".jsonl", ".jsonl.gz",
                  ".ndjson", ".json")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in sorted(_TEXT_SUFFIXES, key=len, reverse=True):
        if name.endswith(s):
            return s
    return ""


def _rows(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:_SHOW])
    return shown + (f" ... ({len(idx)} in all)" if len(idx) > _SHOW else "")


def read_texts(path: str | os.PathLike, id_column: str | Sequence[str] = "item",
               text_column: str = "text", with_column: bool = False) -> Any:
    """The item ids and texts of a table, in file order.

    ``path``: ``.csv``, ``.tsv`` (also gzipped), ``.parquet``/``.pq``, or JSON lines
    (``.jsonl``, ``.ndjson``; a ``.json`` file holding a list of objects is read too). Ids
    and texts are read as written (text; ids with surrounding spaces removed). An empty
    text is allowed (it has no words); a missing one (null) is an error, as are a missing
    column (``--item-column`` / ``--text-column`` name the columns) and repeated ids.
    ``id_column`` may list several names: the first the file has is the id column (the
    command line's ``--item-column`` where it named the crowd labels' column, then ``item``
    and ``task``, as for crowd labels). Returns ``(ids, texts)``, and with ``with_column``
    ``(ids, texts, the id column read)``.
    """
    candidates = [id_column] if isinstance(id_column, str) else list(id_column)
    id_column = candidates[0]
    p = Path(path)
    if not p.exists():
        raise _MissingFileError(f"text file not found: {p} (absolute: {p.absolute()}); check the path")
    if p.is_dir():
        raise AnnotationError(f"text file {p} is a folder; pass the path of a CSV, TSV, Parquet or JSONL file.")
    suffix = _suffix(p)
    if not suffix:
        raise AnnotationError(f"cannot tell the format of the text file {p.name!r} from its suffix; "
                              f"supported: {', '.join(_TEXT_SUFFIXES)}.")
    try:
        if suffix in (".parquet", ".pq"):
            df = read_parquet_table(p)
        elif suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
            # read as text first: a byte-order mark is dropped, as every other reader here drops it
            # (newline="": a raw \r inside a text stays one, and pandas reads the open file, not a copy)
            with (gzip.open(p, "rt", encoding="utf-8-sig", newline="") if suffix.endswith(".gz") else open(p, encoding="utf-8-sig", newline="")) as fh:
                df = pd.read_json(fh, lines=True, dtype=False)
        elif suffix == ".json":
            with open(p, encoding="utf-8-sig") as fh:
                obj = json.load(fh)
            if not isinstance(obj, list):
                raise AnnotationError(f"text file {p} must hold a JSON list of objects "
                                      f"({{{id_column!r}: ..., {text_column!r}: ...}}), or be JSON lines (.jsonl).")
            df = pd.DataFrame(obj)
        else:
            tsv = suffix.startswith(".tsv")
            df = pd.read_csv(p, sep="\t" if tsv else ",", dtype=str, keep_default_na=False, na_values=[],
                             encoding="utf-8-sig", quoting=tsv_quoting(p) if tsv else csv.QUOTE_MINIMAL)
            if not isinstance(df.index, pd.RangeIndex):  # rows a field longer than the header: pandas made the first an index
                sep = "tab" if tsv else "comma"
                raise AnnotationError(f"rows of the text file {p} have one field more than its header line ({', '.join(map(repr, map(str, df.columns)))}): "
                                      f"a text holding a {sep} must be quoted (\"...\"), a {sep} ending each line removed, or the header must name every column.")
    except AnnotationError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise AnnotationError(f"cannot read the text file {p}: {exc}.") from exc
    cols = [str(c) for c in df.columns]
    df.columns = cols
    if len(df) == 0 and not cols:  # an empty JSON list or JSON-lines file: no rows, not a missing column
        raise AnnotationError(f"the text file {p} has no rows.")
    id_column = next((c for c in candidates if c in cols), id_column)
    for col, option in ((id_column, "--item-column"), (text_column, "--text-column")):
        if col not in cols:
            nor = f" (nor {', '.join(map(repr, candidates[1:]))})" if option == "--item-column" and len(candidates) > 1 else ""
            raise AnnotationError(f"the text file {p} has no column {col!r}{nor} (columns: "
                                  f"{', '.join(map(repr, cols[:12]))}{' ...' if len(cols) > 12 else ''}); "
                                  f"name the {'item id' if option == '--item-column' else 'text'} column with {option}.")
    if df.empty:
        raise AnnotationError(f"the text file {p} has no rows.")
    ids, texts = df[id_column], df[text_column]
    missing = np.flatnonzero(ids.isna().to_numpy() | ids.astype(str).str.strip().eq("").to_numpy())
    if missing.size:
        raise AnnotationError(f"the text file {p} has rows without an item id in column {id_column!r} "
                              f"(rows {_rows(missing)}, 0-based); give every text an id (--item-column).")
    missing = np.flatnonzero(texts.isna().to_numpy())
    if missing.size:
        raise AnnotationError(f"the text file {p} has missing texts in column {text_column!r} "
                              f"(rows {_rows(missing)}, 0-based); fill them (an empty text is allowed) "
                              "or name the right column with --text-column.")
    id_list = _as_text(ids).tolist()  # as every reader writes ids: a Parquet 17.0 is "17"
    nonstr = np.flatnonzero(~texts.map(lambda v: isinstance(v, str)).to_numpy())
    if nonstr.size:
        raise AnnotationError(f"column {text_column!r} of the text file {p} holds non-text values "
                              f"(rows {_rows(nonstr)}, e.g. {texts.iloc[nonstr[0]]!r}); name the text column "
                              "with --text-column.")
    dup = pd.Series(id_list).duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        raise AnnotationError(f"the text file {p} repeats item ids (rows {_rows(rows)}, 0-based: "
                              f"{id_list[rows[0]]!r} ...); every item needs one text (--item-column names the id column).")
    return (id_list, texts.tolist(), id_column) if with_column else (id_list, texts.tolist())


class TextFeaturizer:
    """TF-IDF features of texts, fitted on training texts (:meth:`fit`), reused on new
    texts (:meth:`transform`).

    The weights are scikit-learn's ``TfidfVectorizer(sublinear_tf=True)``: for word (or
    n-gram) ``t`` of text ``d``, ``(1 + ln tf(t, d)) · idf(t)`` with ``idf(t) = ln((1 + n) /
    (1 + df(t))) + 1`` over the ``n`` training texts, each row scaled to unit L2 length (an
    empty text is a row of zeros). The vocabulary keeps the ``max_features`` most frequent
    terms of the training texts that occur in at least ``min_df`` texts and at most
    ``max_df`` (a fraction) of them.
    """

    def __init__(self, max_features: int | None = 5000, ngram_range: tuple[int, int] = (1, 2),
                 min_df: int | float = 1, max_df: float = 1.0, lowercase: bool = True,
                 token_pattern: str = r"(?u)\b\w\w+\b", strip_accents: str | None = "unicode") -> None:
        self.max_features = max_features
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.min_df = min_df
        self.max_df = max_df
        self.lowercase = lowercase
        self.token_pattern = token_pattern
        self.strip_accents = strip_accents
        self.vocabulary_: list[str] | None = None
        self.idf_: np.ndarray | None = None

    # ---------------------------------------------------------------- fitting

    def fit(self, texts: Sequence[str]) -> TextFeaturizer:
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = _check_texts(texts)
        vec = TfidfVectorizer(
            max_features=self.max_features, ngram_range=self.ngram_range, min_df=self.min_df,
            max_df=self.max_df, lowercase=self.lowercase, token_pattern=self.token_pattern,
            strip_accents=self.strip_accents, sublinear_tf=True, smooth_idf=True, norm="l2",
            dtype=np.float64,
        )
        try:
            vec.fit(texts)
        except ValueError as exc:
            if "empty vocabulary" not in str(exc) and "no terms remain" not in str(exc):
                raise  # a setting of the featurizer (ngram_range, min_df ...), named by scikit-learn
            raise AnnotationError(f"the training texts give no words to learn from ({exc}); check the "
                                  "text column (--text-column).") from exc
        vocab = vec.vocabulary_
        order = sorted(vocab, key=vocab.__getitem__)
        self.vocabulary_ = order
        self.idf_ = np.asarray(vec.idf_, dtype=np.float64)
        return self

    def fit_transform(self, texts: Sequence[str]) -> np.ndarray:
        return self.fit(texts).transform(texts)

    def _counter(self) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer

        return CountVectorizer(
            vocabulary={w: i for i, w in enumerate(self.vocabulary_)}, ngram_range=self.ngram_range,
            lowercase=self.lowercase, token_pattern=self.token_pattern,
            strip_accents=self.strip_accents, dtype=np.float64,
        )

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Dense float32 features ``(len(texts), n_features)`` in the fitted columns."""
        if self.vocabulary_ is None:
            raise RuntimeError("TextFeaturizer is not fitted; call fit(texts) first")
        texts = _check_texts(texts)
        counts = self._counter().transform(texts).tocsr()  # sparse (N, D) term counts
        counts.data = (1.0 + np.log(counts.data)) * self.idf_[counts.indices]
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        scaled = counts.multiply(1.0 / norms[:, None]).tocsr()
        return scaled.astype(np.float32).toarray()

    @property
    def n_features(self) -> int:
        return 0 if self.vocabulary_ is None else len(self.vocabulary_)

    # ---------------------------------------------------------------- state

    def to_state(self) -> dict[str, Any]:
        """Plain values for a ``weights_only`` torch checkpoint: ``vocabulary`` (list of
        str, in column order), ``idf`` (float64 tensor) and the tokenizer settings."""
        import torch

        if self.vocabulary_ is None:
            raise RuntimeError("TextFeaturizer is not fitted; call fit(texts) first")
        return {
            "kind": "tfidf",
            "vocabulary": list(self.vocabulary_),
            "idf": torch.from_numpy(np.array(self.idf_, dtype=np.float64)),
            "max_features": self.max_features,
            "ngram_range": list(self.ngram_range),
            "min_df": self.min_df,
            "max_df": self.max_df,
            "lowercase": self.lowercase,
            "token_pattern": self.token_pattern,
            "strip_accents": self.strip_accents,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TextFeaturizer:
        """The featurizer :meth:`to_state` described (``idf`` may be a tensor, array or list)."""
        if state.get("kind") != "tfidf":
            raise ValueError(f"not a TextFeaturizer state (kind={state.get('kind')!r})")
        out = cls(max_features=state["max_features"], ngram_range=tuple(state["ngram_range"]),
                  min_df=state["min_df"], max_df=state["max_df"], lowercase=state["lowercase"],
                  token_pattern=state["token_pattern"], strip_accents=state["strip_accents"])
        idf = state["idf"]
        idf = idf.detach().cpu().numpy() if hasattr(idf, "detach") else np.asarray(idf)
        out.vocabulary_ = [str(w) for w in state["vocabulary"]]
        out.idf_ = np.asarray(idf, dtype=np.float64)
        if out.idf_.shape != (len(out.vocabulary_),):
            raise ValueError(f"TextFeaturizer state: {len(out.vocabulary_)} words but idf has shape {out.idf_.shape}")
        return out

    def __repr__(self) -> str:
        fitted = f", {self.n_features} features" if self.vocabulary_ is not None else ""
        return f"TextFeaturizer(max_features={self.max_features}, ngram_range={self.ngram_range}{fitted})"


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    out = list(texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise AnnotationError(f"texts must be strings; rows {bad[:_SHOW]} hold {type(out[bad[0]]).__name__} "
                              "values (check --text-column).")
    return out


def text_features(texts: Sequence[str], max_features: int | None = 5000, **kw: Any) -> tuple[np.ndarray, TextFeaturizer]:
    """Fit a :class:`TextFeaturizer` on ``texts`` (the training texts) and return their
    float32 features ``(N, D)`` with the featurizer (``kw``: its other settings:
    ``ngram_range``, ``min_df``, ``max_df``, ``lowercase``, ``token_pattern``,
    ``strip_accents``). New texts: ``featurizer.transform(new_texts)``."""
    feat = TextFeaturizer(max_features=max_features, **kw)
    return feat.fit_transform(texts), feat
