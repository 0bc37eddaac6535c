"""Data set loaders on the real files (skipped when absent), the IDX reader, and the
download-and-verify error paths (offline: the network is monkeypatched to fail)."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from kdcrowd.data import datasets as D
from kdcrowd.data.annotations import Annotations
from kdcrowd.data.datasets import CrowdDataset, DatasetNotFoundError, load_dataset, list_datasets, read_idx

ROOT = Path(os.environ.get("KDCROWD_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def _have(*rels: str) -> bool:
    return all((ROOT / r).is_file() for r in rels)


needs_labelme = pytest.mark.skipif(not _have("labelme/labelme_annotations.npz", "labelme/labelme_images_128_jpeg.npz", "labelme/labelme_bovw_features.npz"), reason=f"LabelMe files not under {ROOT}")
needs_cifar10n = pytest.mark.skipif(not _have("cifar10n/cifar10n_annotations.npz", "cifar10n/cifar10_train_images_first20000.npz"), reason=f"CIFAR-10N files not under {ROOT}")
needs_cifar10h = pytest.mark.skipif(not _have("cifar10h/cifar10h_counts_probs.npz", "cifar10h/cifar10_test_images.npz"), reason=f"CIFAR-10H files not under {ROOT}")
_FM = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
_have_fm = _have(*(f"fashion_mnist/{f}" for f in _FM)) or any(all((Path(d) / f).is_file() for f in _FM) for d in D.FASHION_MNIST_SYSTEM_DIRS)
needs_fashion = pytest.mark.skipif(not _have_fm, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def mv_accuracy(ann: Annotations, y: np.ndarray) -> float:
    """Majority vote with the lowest class index winning ties."""
    k = ann.n_classes
    counts = np.bincount(ann.item * k + ann.label, minlength=ann.n_items * k).reshape(ann.n_items, k)
    return float((counts.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def labelme() -> CrowdDataset:
    return load_dataset("labelme", root=ROOT)


@pytest.fixture(scope="module")
def cifar10n() -> CrowdDataset:
    return load_dataset("cifar10n", root=ROOT)


# ----------------------------------------------------------------------------- real data


@needs_labelme
def test_labelme_images(labelme):
    ds = labelme
    assert ds.x_train.shape == (1000, 128, 128, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_val.shape == (500, 128, 128, 3) and ds.x_test.shape == (1188, 128, 128, 3)
    assert ds.kind == "image" and ds.input_shape == (3, 128, 128) and ds.n_classes == 8
    assert ds.class_names[0] == "highway" and ds.class_names[7] == "opencountry"
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert y.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [89, 116, 131, 110, 138, 134, 128, 154]
    a = ds.annotations
    assert a.n_items == 1000 and a.n_workers == 59 and len(a.item) == 2547
    assert a.worker_ids.max() < 77  # worker id = column of the 77-column answer matrix
    assert np.bincount(a.item, minlength=1000).min() == 1
    assert mv_accuracy(a, ds.y_train) == pytest.approx(0.769, abs=0.0015)
    assert ds.true_transitions is None and ds.extra_test == {}
    assert "license" in ds.info and ds.x_train[:20].std() > 10  # decoded pixels, not zeros
    # the source archive repeats 2 training images in the test set; the caveats say which
    names = ds.info["filenames"]
    test_of = {x.tobytes(): names["test"][i] for i, x in enumerate(ds.x_test)}
    repeats = sorted((names["train"][i], test_of[x.tobytes()]) for i, x in enumerate(ds.x_train) if x.tobytes() in test_of)
    assert repeats == [("insidecity_urb992.jpg", "tallbuilding_urb992.jpg"), ("mountain_sclos4.jpg", "mountain_sharp59.jpg")]
    assert any("insidecity_urb992" in c and "mountain_sharp59" in c for c in ds.info["caveats"])


@needs_labelme
def test_labelme_bovw_matches_images(labelme):
    ds = load_dataset("labelme", root=ROOT, features="bovw")
    assert ds.x_train.shape == (1000, 200) and ds.x_train.dtype == np.float32
    assert ds.x_test.shape == (1188, 200) and ds.kind == "features" and ds.input_shape == (200,)
    np.testing.assert_array_equal(ds.y_test, labelme.y_test)
    np.testing.assert_array_equal(ds.annotations.label, labelme.annotations.label)
    small = load_dataset("labelme", root=ROOT, features="images", image_size=32)
    assert small.x_val.shape == (500, 32, 32, 3)
    with pytest.raises(ValueError, match="bovw"):
        load_dataset("labelme", root=ROOT, features="vgg16")


@needs_cifar10n
def test_cifar10n(cifar10n):
    ds = cifar10n
    assert ds.x_train.shape == (15000, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert len(ds.x_val) == 1000 and len(ds.x_test) == 4000
    a = ds.annotations
    assert a.n_items == 15000 and len(a.item) == 45000 and a.n_workers == 352  # of the 747, only 352 label the first 20 k images
    assert a.worker_ids.max() == 746
    assert (a.label == ds.y_train[a.item]).mean() == pytest.approx(0.82, abs=0.01)
    assert 0.89 < mv_accuracy(a, ds.y_train) < 0.93
    idx = ds.info["cifar_index"]
    every = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert len(np.unique(every)) == 20000
    assert ds.extra_test == {}  # the JPEG-degraded set only on request
    assert any("worker ids" in c for c in ds.info["caveats"])


@needs_cifar10n
@needs_cifar10h
def test_cifar10_with_simulated_workers(cifar10n):
    ds = load_dataset("cifar10", root=ROOT, workers="symmetric", seed=3, extra_test=True)
    np.testing.assert_array_equal(ds.x_train, cifar10n.x_train)  # same split as cifar10n
    np.testing.assert_array_equal(ds.y_test, cifar10n.y_test)
    a = ds.annotations
    assert a.n_items == 15000 and a.n_workers == 20 and len(a.item) == 45000
    assert ds.true_transitions.shape == (20, 10, 10)
    assert ds.info["workers"]["case"] == "symmetric" and ds.info["workers"]["seed"] == 3
    x, y = ds.extra_test["cifar10h_jpeg"]
    assert x.shape == (10000, 32, 32, 3) and y.shape == (10000,) and y.dtype == np.int64
    again = load_dataset("cifar10", root=ROOT, workers="symmetric", seed=3)
    np.testing.assert_array_equal(again.annotations.label, a.label)
    plain = load_dataset("cifar10", root=ROOT)
    assert plain.annotations is None and plain.true_transitions is None
    # Real annotations are replaced, and the replacement is recorded.
    sim = load_dataset("cifar10n", root=ROOT, workers="maxmig-low-2")
    assert sim.annotations.n_workers == 15 and "real_annotations" in sim.info


@needs_cifar10h
def test_cifar10h_counts_in_info():
    ds = load_dataset("cifar10h", root=ROOT)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (8000, 1000, 1000)
    assert ds.annotations is None and ds.y_train is not None
    counts, soft = ds.info["counts"], ds.info["soft_labels"]
    assert counts.shape == (10000, 10) and counts.sum() == 511000
    np.testing.assert_allclose(soft.sum(1), 1.0)
    np.testing.assert_array_equal(ds.info["soft_labels_by_split"]["test"], soft[ds.info["index"]["test"]])
    agree = (ds.info["counts_by_split"]["train"].argmax(1) == ds.y_train).mean()
    assert agree > 0.98
    assert any("JPEG" in c for c in ds.info["caveats"])


@needs_fashion
def test_fashion_mnist():
    ds = load_dataset("fashion-mnist", root=ROOT)
    assert ds.name == "fashion_mnist"
    assert ds.x_train.shape == (55000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_val.shape == (5000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.input_shape == (1, 28, 28) and ds.n_classes == 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert np.bincount(np.concatenate([ds.y_train, ds.y_val])).tolist() == [6000] * 10


def test_digits_and_worker_params():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1078, 64) and ds.x_train.dtype == np.float32
    assert (len(ds.x_val), len(ds.x_test)) == (359, 360)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0 and ds.kind == "features"
    sim = load_dataset("digits", workers="symmetric", worker_params={"n_workers": 5, "redundancy": 2}, seed=1)
    assert sim.annotations.n_workers == 5 and len(sim.annotations.item) == 2 * 1078
    assert sim.true_transitions.shape == (5, 10, 10)
    inst = load_dataset("digits", workers="instance")
    assert inst.annotations.n_items == 1078
    assert "digits" in repr(sim) and "symmetric" in repr(sim)


# ----------------------------------------------------------------------------- errors


def test_unknown_names_and_options():
    with pytest.raises(ValueError) as exc:
        load_dataset("imagenet")
    for name in list_datasets():
        assert name in str(exc.value)
    with pytest.raises(TypeError, match="split_seed"):
        load_dataset("digits", colour=True)
    with pytest.raises(ValueError, match="unknown worker case"):
        load_dataset("digits", workers="nope")
    with pytest.raises(ValueError, match="workers="):
        load_dataset("digits", worker_params={"n_workers": 3})


def test_workers_need_ground_truth(monkeypatch):
    def loader(root, *, split_seed=0, verify=True):
        ds = D._load_digits(root)
        return CrowdDataset("nogt", ds.x_train, ds.x_val, ds.x_test, None, ds.y_val, ds.y_test, None, ds.class_names)

    monkeypatch.setitem(D._REGISTRY, "nogt", ("no training truth", loader))
    assert load_dataset("nogt").y_train is None
    with pytest.raises(ValueError, match="no ground truth"):
        load_dataset("nogt", workers="symmetric")


def _no_network(*args, **kw):
    raise urllib.error.URLError("network unreachable (test)")


def test_missing_repack_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_urlopen", _no_network)
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("labelme", root=tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "labelme" / "labelme_annotations.npz") in msg
    assert str(tmp_path / "labelme" / "labelme_images_128_jpeg.npz") in msg
    assert "KDCROWD_DATA" in msg and "no public download" in msg
    assert isinstance(exc.value, FileNotFoundError)


def test_failed_download_error(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "_urlopen", _no_network)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", [])
    monkeypatch.setenv("KDCROWD_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("fashion_mnist")
    msg = str(exc.value)
    assert str(tmp_path / "fashion_mnist" / "train-images-idx3-ubyte.gz") in msg
    assert "failed" in msg and "network unreachable" in msg and "KDCROWD_DATA" in msg
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no partial downloads left


def test_fetch_verifies_and_renames_atomically(tmp_path):
    src = tmp_path / "src.bin"
    payload = os.urandom(3 << 20)
    src.write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    D._fetch(src.as_uri(), dest, sha256=good, md5=hashlib.md5(payload).hexdigest())
    assert dest.read_bytes() == payload
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(ValueError, match="checksum mismatch"):
        D._fetch(src.as_uri(), bad, sha256="0" * 64)
    assert not bad.exists() and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]


def test_a_data_root_that_cannot_be_written_is_named_as_such(tmp_path, monkeypatch):
    # the error blamed the download: "download from URL failed: [Errno 13] Permission denied"
    def refused(path, mode="w"):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(D, "atomic_file", refused)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", [])
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("fashion_mnist", root=tmp_path)
    msg = str(exc.value)
    assert "cannot write it to download it: Permission denied" in msg and "download from" not in msg and "KDCROWD_DATA" in msg


def test_fetch_names_a_download_cut_short(tmp_path, monkeypatch):
    # a server that closed the connection halfway was reported as a checksum mismatch
    import io

    class Cut(io.BytesIO):
        headers = {"Content-Length": "1000"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(D, "_urlopen", lambda url, timeout: Cut(b"x" * 400))
    dest = tmp_path / "cut.bin"
    with pytest.raises(ValueError, match="incomplete download of http://example/f: 400 of 1000 bytes"):
        D._fetch("http://example/f", dest, sha256="0" * 64)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_local_checksum_mismatch(tmp_path):
    for rel in ("labelme/labelme_annotations.npz", "labelme/labelme_bovw_features.npz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"not the real file")
    with pytest.raises(ValueError, match="verify=False"):
        load_dataset("labelme", root=tmp_path, features="bovw")


def test_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("KDCROWD_DATA", raising=False)
    assert D.data_root() == Path("~/.cache/kdcrowd").expanduser()
    monkeypatch.setenv("KDCROWD_DATA", str(tmp_path))
    assert D.data_root() == tmp_path
    assert D.data_root(tmp_path / "x") == tmp_path / "x"


def test_files_table_matches_local_copies():
    for rel, spec in D.FILES.items():
        assert spec.sha256 or (spec.url and spec.md5), rel
        if spec.sha256 and (ROOT / rel).is_file():
            assert D._digest(ROOT / rel) == spec.sha256, rel


# ----------------------------------------------------------------------------- IDX reader


def _write_idx(path: Path, arr: np.ndarray, code: int, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int32, 0x0C), (np.float32, 0x0D)])
@pytest.mark.parametrize("compress", [True, False])
def test_read_idx(tmp_path, dtype, code, compress):
    arr = (np.arange(2 * 3 * 4) * 7 % 251).astype(dtype).reshape(2, 3, 4)
    p = tmp_path / ("a.idx.gz" if compress else "a.idx")
    _write_idx(p, arr, code, compress)
    out = read_idx(p)
    assert out.shape == (2, 3, 4) and out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_rejects_bad_files(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)
    q = tmp_path / "short.idx"
    q.write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="bytes"):
        read_idx(q)
    # a cut download: gzip's EOFError ended the command with a bare "Aborted."
    z = tmp_path / "cut.idx.gz"
    _write_idx(z, np.arange(4000, dtype=np.uint8).reshape(40, 100), 0x08, True)
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(ValueError, match="damaged or incomplete"):
        read_idx(z)


def test_crowd_dataset_validates():
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    ann = Annotations(np.array([0, 1, 2]), np.array([0, 0, 1]), np.array([0, 1, 1]), n_items=3, n_classes=2)
    with pytest.raises(ValueError, match="annotations cover"):
        CrowdDataset("t", x, x, x, y, y, y, ann, ["a", "b"])
    with pytest.raises(ValueError, match="y_test"):
        CrowdDataset("t", x, x, x, y, y, y + 5, None, ["a", "b"])


@needs_cifar10n
def test_cifar10n_worst_label(cifar10n):
    """labels='worst': one label per image, CIFAR-10N's worse_label with the worker of a column that gave it."""
    ds = load_dataset("cifar10n", root=ROOT, labels="worst")
    ann, ann3 = ds.annotations, cifar10n.annotations
    assert ann.n_items == 15000 and len(ann.label) == 15000 and ds.info["labels"] == "worst"
    np.testing.assert_array_equal(ds.x_train, cifar10n.x_train)
    np.testing.assert_array_equal(np.sort(ann.item), np.arange(15000))
    # each (item, worker, label) of the worst set is one of the three annotations of that item
    three = set(zip(ann3.item.tolist(), ann3.worker_ids[ann3.worker].tolist(), ann3.label.tolist()))
    assert all(t in three for t in zip(ann.item.tolist(), ann.worker_ids[ann.worker].tolist(), ann.label.tolist()))
    acc_worst = (ann.label == ds.y_train[ann.item]).mean()
    acc_three = (ann3.label == cifar10n.y_train[ann3.item]).mean()
    assert 0.55 < acc_worst < 0.65 < acc_three  # the README: worse_label 59.8 % correct over all 50 k images
    with pytest.raises(ValueError, match="worst"):
        load_dataset("cifar10n", root=ROOT, labels="best")


def test_dataset_options_are_checked_by_type() -> None:
    """--dataset-option extra_test=False arrives as the text 'False' (only false is JSON),
    which had turned the extra test set on; a bool option takes a bool, an int option an int."""
    from kdcrowd.data.datasets import check_dataset_request

    with pytest.raises(TypeError, match="option extra_test must be true or false; got 'False'"):
        check_dataset_request("cifar10", extra_test="False")
    assert check_dataset_request("cifar10", extra_test=False) == "cifar10"


def test_a_damaged_archive_loaded_without_its_checksum_is_one_clear_error_and_image_size_is_checked(tmp_path):
    # with verify=False a damaged .npz raised zipfile.BadZipFile (a traceback on the command line);
    # image_size='abc' reached Pillow (TypeError), image_size=0 a Pillow message that named no option
    np.savez(tmp_path / "a.npz", x=np.arange(1000))
    raw = bytearray((tmp_path / "a.npz").read_bytes())
    (tmp_path / "cut.npz").write_bytes(bytes(raw[: len(raw) // 2]))
    raw[200] ^= 0xFF
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    (tmp_path / "pointer.npz").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")  # not an archive
    for name in ("cut.npz", "flipped.npz", "pointer.npz"):
        with pytest.raises(ValueError, match=rf"{name} is damaged or not a \.npz archive .*replace it"):
            D._load_npz(tmp_path / name)
    for bad, what in (("abc", "whole number"), (16.5, "whole number"), (0, "positive number of pixels")):
        with pytest.raises(TypeError, match=f"option image_size must be a {what}"):
            D.check_dataset_request("labelme", image_size=bad)
    assert D.check_dataset_request("labelme", image_size=32) == "labelme"


def test_a_wrong_archive_and_a_negative_seed_are_one_clear_error(tmp_path):
    # a readable .npz of other arrays (verify=false) raised a bare KeyError, an internal error on
    # the command line; split_seed=-1 reached numpy, whose message named no option
    root = tmp_path / "root"
    (root / "labelme").mkdir(parents=True)
    np.savez(root / "labelme" / "labelme_annotations.npz", x=np.arange(3))
    np.savez(root / "labelme" / "labelme_bovw_features.npz", x=np.arange(3))
    with pytest.raises(ValueError, match=r"labelme_annotations\.npz has no array '\w+' \(it holds 'x'\): it is not the file"):
        load_dataset("labelme", root=root, features="bovw", verify=False)
    with pytest.raises(TypeError, match="option split_seed must be 0 or more; got -1"):
        D.check_dataset_request("digits", split_seed=-1)
    assert D.check_dataset_request("digits", split_seed=0) == "digits"


def test_the_data_sets_advice_is_given_in_command_line_options_on_the_command_line(tmp_path):
    from kdcrowd.cli_checks import cli_message

    for rel in ("labelme/labelme_annotations.npz", "labelme/labelme_bovw_features.npz"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"not the real file")
    with pytest.raises(ValueError) as e:
        load_dataset("labelme", root=tmp_path, features="bovw")
    assert "add --dataset-option verify=false to load it anyway" in cli_message(str(e.value))
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("labelme", root=tmp_path / "none", features="bovw")
    assert "(or --data-root)" in cli_message(str(e.value)) and "root=" not in cli_message(str(e.value))
