"""kdcrowd.io: atomic writes keep old content on failure and get ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import pytest

from kdcrowd.io import atomic_file, write_json


def test_write_json_gets_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}


def test_failed_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    dest = tmp_path / "m.json"
    write_json(dest, {"a": 1})
    with pytest.raises(TypeError):
        write_json(dest, {"a": object()})
    assert json.loads(dest.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    with pytest.raises(KeyboardInterrupt), atomic_file(tmp_path / "b.bin", "wb") as f:
        f.write(b"half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_id_text_is_written_once_per_distinct_value() -> None:
    # a column of millions of ids read as text holds few distinct ids: each is one str
    # object shared by its rows (a str per row took ~15x the column's memory)
    import numpy as np
    import pandas as pd

    from kdcrowd.data.readers import _as_text

    for col in (pd.Series([" w1", "w2 ", " w1", None, "w2 "], dtype="str"), pd.Series([7.0, 8.0, 7.0, np.nan, 8.0])):
        out = _as_text(col)
        assert out.tolist()[:3] == (["w1", "w2", "w1"] if col.dtype != float else ["7", "8", "7"])
        assert pd.isna(out[3]) and out[0] is out[2] and out[1] is out[4]


def test_date_ids_read_as_the_column_writes_them() -> None:
    # a Parquet item column of dates reads as "2024-03-01", as the same ids typed in a CSV
    # (written value by value, a date became "2024-03-01 00:00:00" and matched nothing)
    import pandas as pd

    from kdcrowd.data.readers import _as_text

    dates = pd.Series(pd.to_datetime(["2024-03-01", "2024-03-01", "2024-03-02"]))
    assert _as_text(dates).tolist() == ["2024-03-01", "2024-03-01", "2024-03-02"]
    assert _as_text(pd.Series(pd.to_timedelta(["1D", "2D"]))).tolist() == ["1 days", "2 days"]


def _strict(text: str) -> object:
    def refuse(c: str) -> None:
        raise ValueError(f"non-standard JSON constant {c!r}")

    return json.loads(text, parse_constant=refuse)


def test_undefined_numbers_are_written_as_null(tmp_path) -> None:
    """JSON has no NaN: write_json had written Python's bare NaN (strict readers refuse the
    file); NaN and infinities, numpy's and in arrays too, are null; finite values unchanged."""
    import numpy as np

    from kdcrowd.evaluate import progress_callback

    obj = {"a": float("nan"), "b": [1.5, float("inf"), (np.float32("nan"), 2)], "c": np.array([0.25, -np.inf]), "d": np.float64(0.5), "e": {"f": np.array([1, 2])}}
    write_json(tmp_path / "x.json", obj)
    assert _strict((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.5, None, [None, 2]], "c": [0.25, None], "d": 0.5, "e": {"f": [1, 2]}}
    progress_callback(str(tmp_path / "p.jsonl"), "train")(0, None, {"epoch": 0, "memorization_mean": float("nan")})
    assert _strict((tmp_path / "p.jsonl").read_text()) == {"stage": "train", "epoch": 0, "memorization_mean": None}


def test_fit_on_a_crowd_without_disagreement_writes_strict_json(tmp_path) -> None:
    """One worker: no crowd label disagrees with the reference, so memorization is undefined;
    metrics.json and progress read as strict JSON (they held bare NaN)."""
    import numpy as np
    import pandas as pd
    from typer.testing import CliRunner

    from kdcrowd.cli import app

    rng = np.random.default_rng(0)
    ids = [f"i{j}" for j in range(20)]
    y = rng.integers(0, 2, 20)
    pd.DataFrame({"item": ids, "worker": "solo", "label": np.array(["a", "b"])[y]}).to_csv(tmp_path / "ann.csv", index=False)
    x = pd.DataFrame(rng.normal(size=(20, 3)) + y[:, None], columns=["f0", "f1", "f2"])
    x.insert(0, "item", ids)
    x.to_csv(tmp_path / "x.csv", index=False)
    r = CliRunner().invoke(app, ["fit", "--annotations", str(tmp_path / "ann.csv"), "--features", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o"), "--epochs", "2", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    history = _strict((tmp_path / "o" / "metrics.json").read_text())["history"]
    assert history and all(h["memorization_mean"] is None for h in history)
