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
