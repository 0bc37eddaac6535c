"""Tests for kdcrowd.data.items (offline, fast)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from kdcrowd.data.items import load_images, read_annotation_frame, read_features, read_item_ids, read_item_labels


def test_read_features_values_beyond_float32_are_not_finite(tmp_path):
    # 1e39 is finite in float64 but inf in float32: it used to pass the check and come
    # back as inf
    X = np.zeros((3, 2))
    X[1, 1] = 1e39
    np.save(tmp_path / "x.npy", X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from the cast either
        with pytest.raises(ValueError, match=r"beyond the float32 range \(±3.4028235e38\) for 1 item\(s\): 1 \(column 1: 1e\+39\)"):
            read_features(tmp_path / "x.npy")
    pd.DataFrame({"item": ["a", "b"], "f": [1.0, -1e39]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match=r"beyond the float32 range \(±3.4028235e38\) for 1 item\(s\): b \(f: -1e\+39\)"):
        read_features(tmp_path / "x.csv")
    # with missing values too: one error names both, each with its fix
    X[2, 0] = np.nan
    np.save(tmp_path / "both.npy", X)
    with pytest.raises(ValueError, match=r"for 1 item\(s\): 1 \(column 1: 1e\+39\); rescale .*; and missing or infinite values for 1 item\(s\): 2 \(column 0\); fill them in"):
        read_features(tmp_path / "both.npy")
    X[2, 0] = 0.0
    # the float32 limit itself is fine, and the result is float32
    X[1, 1] = float(np.finfo(np.float32).max)
    np.save(tmp_path / "ok.npy", X)
    ids, got = read_features(tmp_path / "ok.npy")
    assert got.dtype == np.float32 and np.isfinite(got).all() and list(ids) == ["0", "1", "2"]


def test_read_features_lists_first_rows_and_counts_the_rest(tmp_path):
    X = np.full((8, 2), np.nan)
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(ValueError) as info:
        read_features(tmp_path / "x.npy")
    msg = str(info.value)
    assert "for 8 item(s): 0 (column 0), 1 (column 0), 2 (column 0), 3 (column 0), 4 (column 0), ... and 3 more;" in msg


def test_load_images_lists_broken_files(tmp_path):
    files = []
    for i in range(7):
        f = tmp_path / f"broken{i}.png"
        f.write_bytes(b"not an image")
        files.append(f)
    with pytest.raises(ValueError) as info:
        load_images(files, 8)
    msg = str(info.value)
    assert msg.startswith("7 image file(s) could not be read: ")
    assert "broken4.png" in msg and "broken5.png" not in msg
    assert "; ... and 2 more. Fix or remove them" in msg


def test_read_item_labels_error_listings_count_the_rest(tmp_path):
    ids = ["a", "b"]
    pd.DataFrame({"item": [f"x{i}" for i in range(7)], "label": ["0"] * 7}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ValueError) as info:
        read_item_labels(tmp_path / "l.csv", ids, [0, 1])
    msg = str(info.value)
    assert "7 row(s) name items that have no features/images: line 2 (item='x0'); " in msg  # the file's lines
    assert "line 6 (item='x4'); ... and 2 more; drop them" in msg
    pd.DataFrame({"item": ["a", "b"] * 3, "label": ["5"] * 6}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError) as info:
        read_item_labels(tmp_path / "m.csv", ids, [0, 1])
    msg = str(info.value)
    assert "6 label(s) are not among the annotation classes '0', '1': line 2 (item='a', label='5');" in msg
    assert "; ... and 1 more; write each label as one of these classes" in msg
    pd.DataFrame({"item": ["a", "b"], "label": ["1", "0"]}).to_csv(tmp_path / "ok.csv", index=False)
    pos, cls = read_item_labels(tmp_path / "ok.csv", ids, [0, 1])
    assert pos.tolist() == [0, 1] and cls.tolist() == [1, 0]


@pytest.mark.parametrize("data, needle", [
    (b"", "is empty (0 bytes"),
    ("item,f\n\xe9,1\n".encode("latin-1"), "is not UTF-8 text"),
    (b"item,f\na,1,2,3\nb,2\n", "first data line has 2 more field(s)"),
    (b"item,f\na,1\nb,2,3\n", "Expected 2 fields in line 3, saw 3"),
])
def test_unreadable_tables_raise_one_value_error(tmp_path, data, needle):
    # pandas' EmptyDataError / ParserError and UnicodeDecodeError came through as they were;
    # a first line with extra fields silently became the row index ("missing item id")
    for reader, name in ((read_features, "x.csv"), (read_annotation_frame, "a.csv"), (lambda p: read_item_labels(p, ["a"], [1]), "l.csv")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError) as info:
            reader(path)
        assert type(info.value) is ValueError and needle in str(info.value) and str(path) in str(info.value)
    for name in ("x.csv.gz", "x.parquet"):
        (tmp_path / name).write_bytes(b"junk")
        with pytest.raises(ValueError, match="cannot read the feature table") as info:
            read_features(tmp_path / name)
        assert type(info.value) is ValueError
    (tmp_path / "x.npy").write_bytes(b"")  # EOFError from numpy
    with pytest.raises(ValueError, match="cannot read feature file .* as a numpy .npy array"):
        read_features(tmp_path / "x.npy")
    (tmp_path / "ids.txt").write_bytes("\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="item-id file .* is not UTF-8 text"):
        read_item_ids(tmp_path / "ids.txt")


def test_ids_named_like_missing_values_are_text(tmp_path):
    # item/worker ids NA, null, None were read as missing values ("missing item id")
    (tmp_path / "x.csv").write_text("item,f\nNA,1\nnull,2\n0017,3\n")
    ids, X = read_features(tmp_path / "x.csv")
    assert ids.tolist() == ["NA", "null", "0017"]
    (tmp_path / "y.csv").write_text("item,f\nNA,NA\n")  # a feature NA is still missing
    with pytest.raises(ValueError, match="missing or infinite values for 1 item"):
        read_features(tmp_path / "y.csv")
    (tmp_path / "a.csv").write_text("item,worker,label\nNA,None,1\n")
    frame = read_annotation_frame(tmp_path / "a.csv")
    assert frame["item"].tolist() == ["NA"] and frame["worker"].tolist() == ["None"]
    (tmp_path / "l.csv").write_text("item,label\nNA,1\n")
    pos, cls = read_item_labels(tmp_path / "l.csv", ["x", "NA"], [0, 1])
    assert pos.tolist() == [1] and cls.tolist() == [1]


def test_whole_number_float_ids_are_written_without_point_zero(tmp_path):
    # a Parquet id/label column stored as float (17.0) gave the id "17.0", which matched no
    # image 17.png and no class 1
    pd.DataFrame({"item": [17.0, 18.0], "worker": [1.0, 2.5], "label": [1, 0]}).to_parquet(tmp_path / "a.parquet")
    frame = read_annotation_frame(tmp_path / "a.parquet")
    assert frame["item"].tolist() == ["17", "18"] and frame["worker"].tolist() == ["1", "2.5"]
    pd.DataFrame({"item": [17, 18], "label": [1.0, 0.0]}).to_parquet(tmp_path / "l.parquet")
    pos, cls = read_item_labels(tmp_path / "l.parquet", ["17", "18"], [0, 1])
    assert pos.tolist() == [0, 1] and cls.tolist() == [1, 0]


def test_item_id_file_byte_order_mark_is_dropped(tmp_path):
    # a UTF-8 byte-order mark (Notepad, Excel) stuck to the first id: "\ufeff0017"
    (tmp_path / "ids.txt").write_bytes("0017\n0018\n".encode("utf-8-sig"))
    assert read_item_ids(tmp_path / "ids.txt").tolist() == ["0017", "0018"]


def test_features_without_columns_or_rows_and_missing_ids(tmp_path):
    # an (N, 0) .npy was accepted as N items with no features; a header-only table was
    # reported as "column(s) 'f1' are not numeric"; a None id in a list became "None"
    np.save(tmp_path / "x.npy", np.zeros((3, 0)))
    with pytest.raises(ValueError, match=r"has 3 rows but no feature columns \(shape \(3, 0\)\)"):
        read_features(tmp_path / "x.npy")
    (tmp_path / "h.csv").write_text("item,f1\n")
    with pytest.raises(ValueError, match="has no rows"):
        read_features(tmp_path / "h.csv")
    np.save(tmp_path / "y.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"missing id \(None/NaN\) at position\(s\) 1"):
        read_features(tmp_path / "y.npy", item_ids=["a", None])


def test_read_item_labels_repeated_ids_or_classes_and_int_ids(tmp_path):
    # repeated item ids or classes that share a text (1 and "1") raised pandas'
    # InvalidIndexError; int item ids never matched the text read from the file
    (tmp_path / "l.csv").write_text("item,label\n17,1\n")
    with pytest.raises(ValueError, match="'17' appear more than once"):
        read_item_labels(tmp_path / "l.csv", ["17", 17], [0, 1])
    with pytest.raises(ValueError, match=r"classes '1' appear more than once when written as text"):
        read_item_labels(tmp_path / "l.csv", ["17"], [1, "1"])
    pos, cls = read_item_labels(tmp_path / "l.csv", np.array([18, 17]), [0, 1])
    assert pos.tolist() == [1] and cls.tolist() == [1]


def test_load_images_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    # Pillow's convert("RGB") clips 16-bit values at 255: every pixel above 255 of 65535
    # came out white
    from PIL import Image

    a = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    Image.fromarray((a // 257).astype(np.uint8)).save(tmp_path / "g8.png")
    got = load_images([tmp_path / "g16.png", tmp_path / "g8.png"], 2)
    assert got[0, :, :, 0].tolist() == [[0, 100], [200, 255]]
    np.testing.assert_array_equal(got[0], got[1])
    with pytest.raises(ValueError, match="whole number of pixels, got 'x'"):
        load_images([tmp_path / "g8.png"], "x")


def test_images_are_read_upright_and_float_tiffs_are_not_black(tmp_path):
    # the EXIF orientation tag was ignored (a phone photo trained on sideways), and a float
    # TIFF with values in 0..1 was truncated to black
    from PIL import Image

    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20, 0] = 255  # red left half, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the red half is on top when shown
    Image.fromarray(a).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    Image.fromarray(np.rot90(a, -1).copy()).save(tmp_path / "upright.png")
    got = load_images([tmp_path / "sideways.jpg", tmp_path / "upright.png"], 8).astype(int)
    assert got[0, 0, :, 0].min() > 200 and got[0, -1, :, 0].max() < 50  # red on top, not on the left
    assert np.abs(got[0] - got[1]).max() < 40  # as the upright copy, within JPEG's rounding
    # the same with a mistyped EXIF tag beside the orientation (Make stored under tag 0x0140):
    # Pillow reads the file, and rewriting its EXIF had raised struct.error, uncaught
    import io

    exif[0x010F] = "Cam"
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", exif=exif, quality=95)
    (tmp_path / "mistyped.jpg").write_bytes(buf.getvalue().replace(b"\x01\x0f\x00\x02", b"\x01\x40\x00\x02", 1))
    np.testing.assert_array_equal(load_images([tmp_path / "mistyped.jpg"], 8), load_images([tmp_path / "sideways.jpg"], 8))
    # a TIFF, which Pillow turns upright itself as it loads it: turned once, not twice
    Image.fromarray(a).save(tmp_path / "sideways.tif", exif=exif)
    np.testing.assert_array_equal(load_images([tmp_path / "sideways.tif"], 8), load_images([tmp_path / "upright.png"], 8))
    Image.fromarray(np.full((4, 4), 0.6, np.float32), mode="F").save(tmp_path / "f.tif")
    Image.fromarray(np.full((4, 4), 180.0, np.float32), mode="F").save(tmp_path / "f255.tif")
    got = load_images([tmp_path / "f.tif", tmp_path / "f255.tif"], 4)
    assert got[0].min() == got[0].max() == 153 and got[1].min() == got[1].max() == 180


def test_image_folders_follow_links_and_ids_match_as_typed(tmp_path):
    from PIL import Image

    from kdcrowd.data.items import list_image_files, match_image_ids

    def png(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)

    root, other = tmp_path / "imgs", tmp_path / "elsewhere"
    png(root / "a.png")
    png(other / "batch2" / "b.png")
    (root / "batch2").symlink_to(other / "batch2")  # a linked folder was skipped without a word
    (root / "loop").symlink_to(root)  # a link back up is read once, not forever
    (root / "broken.png").symlink_to(tmp_path / "nothing.png")
    from kdcrowd.data.readers import InputWarning

    with pytest.warns(InputWarning, match="link"):  # the broken link is named
        assert [p.relative_to(root).as_posix() for p in list_image_files(root)] == ["a.png", "batch2/b.png"]
    # a decomposed (NFD) file name, as macOS stores it, matches the id as typed (NFC); so does
    # a name with a space before its extension
    import unicodedata

    names = tmp_path / "names"
    png(names / (unicodedata.normalize("NFD", "café") + ".png"))
    png(names / "photo .png")
    style, ids = match_image_ids(list_image_files(names), names, ["café", "photo"])
    assert style == "stem" and sorted(ids) == ["café", "photo"]
    # labels written decomposed too (copied from a macOS listing) still match: the ids take the labels' spelling
    nfd = unicodedata.normalize("NFD", "café")
    style, ids = match_image_ids(list_image_files(names), names, [nfd])
    assert nfd in ids.tolist() and "café" not in ids.tolist()
    # two files whose names differ only by their Unicode form keep one id each
    png(names / "café.png")  # composed, beside the decomposed one
    style, ids = match_image_ids(list_image_files(names), names, ["café", "photo"])
    assert len(set(ids.tolist())) == len(ids) == 3 and "café" in ids.tolist()
    # files sharing a stem (a.png, a.jpg) with labels that name files in full: the error is
    # the missing file's, not the clash's
    clash = tmp_path / "clash"
    for n in ("a.png", "a.jpg", "b.png"):
        png(clash / n)
    style, ids = match_image_ids(list_image_files(clash), clash, ["a.png", "a.jpg", "b.png", "c.png"])
    assert style == "name"
    with pytest.raises(ValueError, match="same item id"):
        match_image_ids(list_image_files(clash), clash, ["a", "b"])


def test_item_error_messages_say_how_to_fix(tmp_path):
    # these said only what was wrong
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match="has no rows .*; give one row per item"):
        read_features(tmp_path / "e.npy")
    with pytest.raises(FileNotFoundError, match="check the path"):
        read_features(tmp_path / "none.npy")
    with pytest.raises(ValueError, match="pass the path of the file"):
        read_features(tmp_path)
    (tmp_path / "h.csv").write_text("item,label\n")
    with pytest.raises(ValueError, match="has no rows .*add one row"):
        read_item_labels(tmp_path / "h.csv", ["a"], [0])


def test_empty_or_all_null_parquet_id_column(tmp_path):
    # a Parquet column with no values (read back as float) raised pandas' AttributeError
    # "Can only use .str accessor with string values"
    pd.DataFrame({"item": pd.Series([], dtype=float), "f": pd.Series([], dtype=float)}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="has no rows"):
        read_features(tmp_path / "x.parquet")
    pd.DataFrame({"item": [None, None], "worker": ["a", "b"], "label": [0, 1]}).to_parquet(tmp_path / "a.parquet")
    frame = read_annotation_frame(tmp_path / "a.parquet")
    assert frame["item"].isna().all() and frame["worker"].tolist() == ["a", "b"]


def test_feature_integers_beyond_int64_are_numbers(tmp_path):
    # pandas reads -9223372036854775809 or 100000000000000000000 as text: the column was
    # refused as "not numeric"
    (tmp_path / "x.csv").write_text("item,f,g\na,-9223372036854775809,100000000000000000000\nb,1,2\n")
    ids, X = read_features(tmp_path / "x.csv")
    np.testing.assert_allclose(X, np.array([[-(2.0**63), 1e20], [1, 2]], dtype=np.float32))
    (tmp_path / "y.csv").write_text("item,f\na,1\nb,abc\n")
    with pytest.raises(ValueError, match="column\\(s\\) 'f' are not numeric"):
        read_features(tmp_path / "y.csv")


def test_wide_table_keeps_a_worker_column_named_row(tmp_path):
    # _wide_to_long put a helper column "_row" next to the worker columns before melting:
    # a worker column named "_row" was overwritten and its labels lost (only worker a came back)
    (tmp_path / "w.csv").write_text("item,a,_row\ni1,0,1\ni2,1,\ni3,-1,2\n")
    frame = read_annotation_frame(tmp_path / "w.csv")
    assert frame.to_numpy().tolist() == [["i1", "a", 0], ["i1", "_row", 1], ["i2", "a", 1], ["i3", "_row", 2]]
    (tmp_path / "v.csv").write_text("_row,b\n2,\n,0\n")  # no item column: items are the row numbers
    frame = read_annotation_frame(tmp_path / "v.csv")
    assert frame.to_numpy().tolist() == [["0", "_row", 2], ["1", "b", 0]]


def test_gold_ids_match_in_any_unicode_form(tmp_path):
    # a gold id written decomposed (NFD, as macOS stores names) is the item typed composed,
    # as the crowd labels' matching has it; it was refused as an item without features
    import unicodedata

    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    pd.DataFrame({"item": [nfd, "b"], "label": ["pos", "neg"]}).to_csv(tmp_path / "g.csv", index=False)
    items, labels = read_item_labels(tmp_path / "g.csv", [nfc, "b", "c"], ["neg", "pos"])
    assert items.tolist() == [0, 1] and labels.tolist() == [1, 0]
    pd.DataFrame({"item": ["zz"], "label": ["pos"]}).to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(ValueError, match="name items that have no texts"):
        read_item_labels(tmp_path / "u.csv", [nfc, "b"], ["neg", "pos"], items_are="texts")


def test_gold_labels_spelled_as_floats_are_the_classes(tmp_path):
    """A gold file whose label column pandas wrote as floats (1.0, 0.0) names the classes 1
    and 0, as the same spelling does in the crowd labels (it was refused as no class);
    1.5 is still no class."""
    from kdcrowd.data.items import read_item_labels

    (tmp_path / "gold.csv").write_text("item,label\ni0,1.0\ni1,0.0\ni2,1\n")
    items, labels = read_item_labels(tmp_path / "gold.csv", ["i0", "i1", "i2"], [0, 1])
    assert items.tolist() == [0, 1, 2] and labels.tolist() == [1, 0, 1]
    (tmp_path / "bad.csv").write_text("item,label\ni0,1.5\n")
    for spelled in ("1_0", "\uff11"):  # no number to pandas, as in the crowd labels: no class either
        (tmp_path / "odd.csv").write_text(f"item,label\ni0,{spelled}\n", encoding="utf-8")
        with pytest.raises(ValueError, match="not among the annotation classes"):
            read_item_labels(tmp_path / "odd.csv", ["i0"], [1, 10])
    with pytest.raises(ValueError, match="not among the annotation classes"):
        read_item_labels(tmp_path / "bad.csv", ["i0"], [0, 1])


def test_a_broken_image_link_is_named_in_a_warning(tmp_path):
    """A link to a missing image is skipped, as before, and now with a warning naming it
    (one item fewer had come without a word why)."""
    from PIL import Image

    from kdcrowd.data.items import list_image_files
    from kdcrowd.data.readers import InputWarning

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "b.png").symlink_to(tmp_path / "gone.png")
    with pytest.warns(InputWarning, match=r"skipped 1 link\(s\) to a missing file: 'b.png'"):
        files = list_image_files(tmp_path / "imgs")
    assert [f.name for f in files] == ["a.png"]


def test_image_ids_that_are_paths_match_the_images(tmp_path, monkeypatch):
    """Crowd labels naming images by path (an absolute path, ./a/b.png) never matched an
    image: the path relative to the folder matches, from the folder or from the working
    folder (./imgs/sub/x.png), an absolute path under the folder too; a path elsewhere
    matches by its trailing folders, file name or stem where one image has it. The ids
    take the labels' spelling; a name several images share matches none."""
    from PIL import Image

    from kdcrowd.data.items import list_image_files, match_image_ids

    root = tmp_path / "imgs"
    for rel in ("sub/im0.png", "sub/im1.png", "top.png", "a/x.png", "b/x.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / rel)
    files = list_image_files(root)
    rel = [f.relative_to(root).as_posix() for f in files]  # a/x.png b/x.png sub/im0.png sub/im1.png top.png
    monkeypatch.chdir(tmp_path)
    cases = {  # the labels' ids → the files they name
        (str(root / "sub/im0.png"), str(root / "a/x.png"), str(root / "top.png")): ["a/x.png", "sub/im0.png", "top.png"],
        ("./sub/im0.png", "./a/x.png", "./top"): ["a/x.png", "sub/im0.png", "top.png"],
        ("./imgs/sub/im0.png", "imgs/b/x.png"): ["b/x.png", "sub/im0.png"],  # from the working folder
        ("/elsewhere/data/sub/im1.png", "/elsewhere/b/x.png", "/elsewhere/top", "C:\\data\\im0.png"): ["b/x.png", "sub/im0.png", "sub/im1.png", "top.png"],
    }
    for wanted, named in cases.items():
        for style in ("auto", "stem", "name", "path"):
            got_style, ids = match_image_ids(files, root, list(wanted), style)
            assert sorted(set(ids.tolist()) & set(wanted)) == sorted(wanted), (style, wanted, ids)
            assert sorted(rel[ids.tolist().index(w)] for w in wanted) == named, (style, wanted, ids)
            assert len(set(ids.tolist())) == len(ids) and (got_style == style or style == "auto")
    # a relative path naming a file that is not there matches no other folder's file of that name
    # (sub/x.png is neither a/x.png nor b/x.png; other/top.png is not the folder's top.png)
    style, ids = match_image_ids(files, root, ["sub/x.png", "other/top.png", "sub/im0.png"], "path")
    assert "sub/x.png" not in ids.tolist() and "other/top.png" not in ids.tolist() and "sub/im0.png" in ids.tolist()
    # a file name two images share (x.png in a/ and b/), or two labels naming one image: no match
    style, ids = match_image_ids(files, root, ["/elsewhere/x.png", "/p/top.png", "/q/top.png", "im0"])
    assert style == "stem" and sorted(ids) == ["a/x", "b/x", "im0", "im1", "top"]
