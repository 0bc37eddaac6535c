"""The GPU fast path against the naive research-repository training loop, in one run.

    python benchmarks/speed.py --device cuda --out benchmarks/results/speed.json [--profile]
    python benchmarks/speed.py --quick --device cpu --out /tmp/speed.json      # smoke check

What it measures, on the 15,000 CIFAR-10N training images (``load_dataset("cifar10n")``;
random uint8 images of the same shape with simulated workers when the files are absent or
with ``--synthetic``; the JSON says which):

1. **Peak bf16 matmul** throughput of the device: an ``--peak-n``³ bf16 matrix product
   (8192 on CUDA), 3 warm-ups then 10 timed products.
2. **Same-model throughput** (images/second) of each backbone (``--backbones``, default
   ResNet-18 and FastCNN) by two paths:

   * *naive*: a ``torch.utils.data.DataLoader`` over a ``Dataset`` of uint8 HWC numpy
     images; each ``__getitem__`` pads by 4 (zeros), crops 32×32 at random, flips at
     random, converts to a float CHW tensor in [0, 1] and normalises (what
     torchvision's ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``, ``ToTensor``,
     ``Normalize`` do); ``num_workers`` (4 on a 16-core machine, fewer on small ones),
     ``pin_memory``, batch 128, fp32, channels-first, plain SGD (momentum 0.9), and a
     ``loss.item()`` every step (the usual running-loss logging);
   * *fast*: :func:`kdcrowd.training.fit` with :class:`~kdcrowd.training.DeviceData`
     (the data on the device as uint8, batches as index slices, batched on-device
     crop + flip, bf16 autocast, channels-last), batch 512, the same SGD.

   Timing: ``--warmup-steps`` naive steps / one warm-up epoch of ``fit``, then a fixed
   number of steps with ``torch.cuda.synchronize()`` before and after the timer. FLOPs of
   one training step (forward + backward) are counted with
   ``torch.utils.flop_counter.FlopCounterMode``; achieved TFLOP/s = FLOPs per image ×
   images/s, and its fraction of the measured bf16 peak.
3. **The complete KD-Crowd pipeline** (teacher Max-MIG, student GCE, MIG-KL distillation,
   stage 2) with the FastCNN backbone, by each path:

   * *fast*: ``kdcrowd.methods.run_on_dataset`` with ``TrainConfig(batch_size=512,
     lr=2e-3)`` for each of ``--fast-epochs`` (5, 10, 20); ``seconds`` and
     ``test_accuracy`` from its metrics;
   * *naive*: the same ``run_on_dataset`` with every stage's training loop replaced by a
     DataLoader-based loop (``naive_fit`` below: per-item CPU augmentation, fp32,
     channels-first, batch 128, ``loss.item()`` every step, per-epoch validation through
     a DataLoader) for ``--naive-epochs`` (20) epochs per stage; the objectives, models,
     optimiser (AdamW, cosine schedule, lr ``--naive-lr``) and everything between the
     stages are the library's own.

   ``time_to_accuracy_speedup`` = naive pipeline seconds / seconds of the fastest
   fast-path run (fewest epochs) whose test accuracy reaches the naive pipeline's.
   ``pipeline_seconds["naive_estimate"]`` is the cross-check estimate
   naive seconds per epoch (FastCNN throughput above) × epochs of the three stages.

4. **The clean-label ceiling** of ``--ceiling-backbone`` (e.g. ``airbench``): method
   ``clean`` (the backbone on the true training labels) with the airbench recipe
   (:func:`kdcrowd.training.airbench_config`: Nesterov SGD, triangular schedule, 64× BN-bias
   learning rate, label smoothing 0.2, alternating flips, translate-by-2, flip-and-translate
   TTA) at batch ``--ceiling-batch`` for every ``--ceiling-epochs`` × ``--ceiling-lr-scales``.
   Hyper-parameters are chosen on the validation split only: per epoch budget the learning
   rate with the best validation accuracy (final state), and overall ``selected``, the
   run with the best validation accuracy. ``time_to_target``: the training seconds of the
   fewest-epoch budget whose (validation-chosen) run reaches ``--ceiling-target`` (0.89)
   test accuracy, a reading of the test split, not a choice made with it.

   With ``--pipeline-recipes`` the pipeline of 3. runs once per recipe and epoch count:
   ``default`` (AdamW at ``--pipeline-lr``, cosine, the library's augmentation), ``airbench``
   (:func:`~kdcrowd.training.airbench_config` at ``--pipeline-batch``, learning rate times
   ``--pipeline-lr-scale``, no label smoothing: the crowd losses keep theirs) or
   ``airbench-adamw`` (the default optimiser with airbench's alternating flips,
   translate-by-2 and TTA). ``pipeline_selected`` is the run with the best validation
   accuracy of the final stage.

5. ``--profile``: ``torch.profiler`` over a few fast-path steps of ``--profile-backbone``;
   the top-15 CUDA kernels (``key_averages``) go into the JSON.

5. ``--commands ROW [ROW ...]``: the overhead around the training loop of whole commands
   (issue 15, "No overhead around the loop"), each run as a user runs it, in a fresh
   process, instead of parts 1-4:

   * ``fit-labelme-cpu``: ``kdcrowd fit`` with its defaults on LabelMe's 1,000 crowd-labelled
     items as bag-of-words features (the command of docs/RESULTS.md §6), ``--device cpu``;
     target wall <= 2 x training + 3 s;
   * ``run-cifar10n-resnet18-mv``: ``kdcrowd run --dataset cifar10n --method mv --backbone
     resnet18 --epochs 11`` on ``--device`` (the H200 row); target wall <= 1.3 x training.

   Per row: the wall time of the process (``--repeats`` runs, the fastest kept, all
   listed), the ``timings`` of its ``metrics.json`` (startup, data preparation, training,
   evaluation, report, writing, ...), the load average around each run, and whether the
   target is met. "training" is ``timings.training`` (the optimisation steps alone); for
   code without ``timings`` (``--src`` an older tree) it is the stages' training seconds,
   per-epoch evaluation and checkpoints included. ``--src DIR`` runs the commands from
   another source tree (e.g. the main branch, for a before/after pair); ``--label`` names
   the entry, and the entries of earlier labels in ``--out`` are kept::

       python benchmarks/speed.py --commands fit-labelme-cpu --src ../main/src --label before --repeats 3 --out benchmarks/results/overhead_cpu.json
       python benchmarks/speed.py --commands fit-labelme-cpu --label after --repeats 3 --out benchmarks/results/overhead_cpu.json
       python benchmarks/speed.py --commands run-cifar10n-resnet18-mv --device cuda --label after --out benchmarks/results/overhead_gpu.json

The JSON (``--out``) is rewritten atomically after every part, so an interrupted run keeps
what it finished; a part that fails records its error and the run goes on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from kdcrowd.io import write_json  # noqa: E402
from kdcrowd.methods import device_name, versions  # noqa: E402
from kdcrowd.training import resolve_device  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from kdcrowd import training  # noqa: E402
from kdcrowd.models.backbones import build_backbone  # noqa: E402
from kdcrowd.training import AIRBENCH_RECIPE, DeviceData, FitResult, TrainConfig, airbench_config, fit, seed_everything  # noqa: E402

PIPELINE_OPTIONS = {"teacher": "maxmig", "student": "gce", "kd": "mig-kl"}


# ----------------------------------------------------------------------------- utilities


def log(msg: str) -> None:
    print(f"[speed {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_num_workers() -> int:
    """4 DataLoader workers where there are cores for them, fewer on small machines (>= 1)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _safe_div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# ----------------------------------------------------------------------------- data


def _first_root(explicit: str | None, files: tuple[str, ...]) -> Path | None:
    """The first folder holding every one of ``files``: ``--root``, ``$KDCROWD_DATA``, then
    ``shared/data`` or ``.data`` in the repository, ``../shared/data``, ``/work/shared/data``,
    ``~/.cache/kdcrowd``."""
    cands = [Path(explicit).expanduser()] if explicit else []
    if os.environ.get("KDCROWD_DATA"):
        cands.append(Path(os.environ["KDCROWD_DATA"]).expanduser())
    cands += [ROOT / "shared" / "data", ROOT / ".data", ROOT.parent / "shared" / "data", Path("/work/shared/data"), Path("~/.cache/kdcrowd").expanduser()]
    return next((c for c in cands if all((c / f).is_file() for f in files)), None)


def find_data_root(explicit: str | None) -> Path | None:
    """The first folder holding CIFAR-10N's files (see :func:`_first_root`)."""
    return _first_root(explicit, ("cifar10n/cifar10n_annotations.npz", "cifar10n/cifar10_train_images_first20000.npz"))


def synthetic_dataset(n_train: int, n_val: int, n_test: int, size: int = 32, seed: int = 0) -> Any:
    """Random uint8 images of CIFAR's shape with simulated workers (3 labels per image)."""
    from kdcrowd.data.datasets import CrowdDataset
    from kdcrowd.data.simulate import simulate_workers

    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    sim = simulate_workers(y[:n_train], "sparse", n_classes=10, seed=seed)
    tr, va = slice(0, n_train), slice(n_train, n_train + n_val)
    te = slice(n_train + n_val, n)
    return CrowdDataset("cifar10n-synthetic", x[tr], x[va], x[te], y[tr], y[va], y[te], sim.annotations, [f"class{k}" for k in range(10)], true_transitions=sim.transitions, info={"synthetic": True})


def subset_dataset(ds: Any, n_train: int | None, n_eval: int | None) -> Any:
    """The first ``n_train`` training items (with their annotations, reference labels and gold
    questions) and the first ``n_eval`` validation and test items; ``None`` keeps a split whole."""
    if n_train is None and n_eval is None:
        return ds
    cut = lambda a, s: None if a is None else a[s]  # noqa: E731
    kw: dict[str, Any] = {}
    if n_train is not None and n_train < len(ds.x_train):
        idx = np.arange(n_train)
        kw.update(x_train=ds.x_train[idx], y_train=cut(ds.y_train, idx), y_reference=cut(ds.y_reference, idx), gold=cut(ds.gold, idx),
                  annotations=None if ds.annotations is None else ds.annotations.subset_items(idx))
    if n_eval is not None:
        ev = slice(None, n_eval)
        kw.update(x_val=ds.x_val[ev], y_val=cut(ds.y_val, ev), x_test=ds.x_test[ev], y_test=cut(ds.y_test, ev))
    return replace(ds, **kw)


def warmup_subset(ds: Any) -> Any:
    """The first 2,048 training items (all validation and test items): a warm-up run's data."""
    return subset_dataset(ds, min(len(ds.x_train), 2048), None)


def load_data(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    info: dict[str, Any] = {}
    ds = None
    if not args.synthetic:
        root = find_data_root(args.root)
        if root is None:
            info["data_note"] = "cifar10n files not found (looked at --root, $KDCROWD_DATA, ./shared/data, ./.data, ../shared/data, /work/shared/data); used random uint8 images of the same shape with simulated workers"
        else:
            try:
                from kdcrowd.data.datasets import load_dataset

                ds = load_dataset("cifar10n", root=root)
                info["data_root"] = str(root)
            except Exception as exc:  # noqa: BLE001
                info["data_note"] = f"loading cifar10n from {root} failed ({type(exc).__name__}: {exc}); used random uint8 images with simulated workers"
    else:
        info["data_note"] = "--synthetic: random uint8 images with simulated workers"
    if ds is None:
        ds = synthetic_dataset(args.n_train or 15000, args.n_eval or 1000, args.n_eval or 4000, size=args.image_size, seed=args.seed)
        info["synthetic"] = True
    else:
        info["synthetic"] = False
    ds = subset_dataset(ds, args.n_train, args.n_eval)
    info.update({"dataset": ds.name, "n_train": int(len(ds.x_train)), "n_val": int(len(ds.x_val)), "n_test": int(len(ds.x_test)), "image_shape": list(ds.x_train.shape[1:])})
    return ds, info


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in [0, 1] units of uint8 HWC images (as DeviceData does)."""
    xf = x.reshape(-1, x.shape[-1]).astype(np.float64)
    mean = xf.mean(0) / 255.0
    std = np.maximum(xf.std(0), 1.0) / 255.0
    return mean.astype(np.float32), std.astype(np.float32)


# ----------------------------------------------------------------------------- the naive path


class NaiveImageDataset(torch.utils.data.Dataset):
    """uint8 HWC numpy images, augmented one at a time on the CPU (a research repo's loader).

    ``__getitem__`` returns ``(image, target, index)``: zero-padding by ``pad`` and a random
    crop, a random horizontal flip, ToTensor (CHW float in [0, 1]) and Normalize, as
    torchvision's transforms do, per item.
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray | None, mean: np.ndarray, std: np.ndarray, augment: bool = True, flip: bool = True, pad: int = 4) -> None:
        self.images = images
        self.targets = np.zeros(len(images), dtype=np.int64) if targets is None else np.asarray(targets, dtype=np.int64)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment, self.flip, self.pad = augment, flip, pad

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        img = self.images[i]
        if self.augment:
            h, w = img.shape[:2]
            p = self.pad
            padded = np.pad(img, ((p, p), (p, p), (0, 0)), mode="constant")
            top = int(torch.randint(0, 2 * p + 1, (1,)))
            left = int(torch.randint(0, 2 * p + 1, (1,)))
            img = padded[top : top + h, left : left + w]
            if self.flip and float(torch.rand(1)) < 0.5:
                img = img[:, ::-1]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0)
        x = (x - self.mean) / self.std
        return x, int(self.targets[i]), i


def naive_loader(images: np.ndarray, targets: np.ndarray | None, mean: np.ndarray, std: np.ndarray, batch_size: int, num_workers: int, device: torch.device, augment: bool = True, shuffle: bool = True, flip: bool = True) -> torch.utils.data.DataLoader:
    ds = NaiveImageDataset(images, targets, mean, std, augment=augment, flip=flip)
    # a trailing batch of one item would break in-batch-pair losses (Max-MIG); drop it then
    drop_last = shuffle and len(ds) % batch_size == 1
    kw: dict[str, Any] = {}
    if num_workers > 0:
        kw["persistent_workers"] = True
        if "fork" in torch.multiprocessing.get_all_start_methods():
            kw["multiprocessing_context"] = "fork"  # the Linux default before Python 3.14
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, pin_memory=device.type == "cuda", drop_last=drop_last, **kw)


def _forever(loader: torch.utils.data.DataLoader) -> Any:
    while True:
        yield from loader


def naive_throughput(backbone: str, images: np.ndarray, targets: np.ndarray, device: torch.device, batch_size: int, num_workers: int, steps: int, warmup: int, lr: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Images/s of the naive loop: DataLoader + per-item CPU augmentation, fp32, SGD, loss.item() per step."""
    torch.manual_seed(seed)
    mean, std = channel_stats(images)
    model = build_backbone(backbone, (images.shape[3], images.shape[1], images.shape[2]), 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loader = naive_loader(images, targets, mean, std, batch_size, num_workers, device)
    it = _forever(loader)
    model.train()
    running = 0.0

    def step() -> int:
        nonlocal running
        x, y, _ = next(it)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        return int(x.shape[0])

    for _ in range(warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    n_img = sum(step() for _ in range(steps))
    sync(device)
    sec = time.perf_counter() - t0
    del it, loader
    gc.collect()
    return {"images_per_second": n_img / sec, "seconds": sec, "steps": steps, "images": n_img, "batch_size": batch_size, "num_workers": num_workers, "precision": "fp32 (cuDNN TF32 convolutions at torch's default)" if device.type == "cuda" else "fp32"}


def fast_throughput(backbone: str, images: np.ndarray, targets: np.ndarray, device: torch.device, batch_size: int, steps: int, lr: float = 0.05, seed: int = 0, cuda_graph: bool = False,
                    compile: bool = False) -> dict[str, Any]:
    """Images/s of :func:`kdcrowd.training.fit` on DeviceData (one warm-up epoch, then whole epochs ≈ ``steps``);
    ``cuda_graph``: the backbone's passes as CUDA graphs (``TrainConfig.cuda_graph``; each fit captures its own);
    ``compile``: the step under torch.compile (``TrainConfig.compile``; compiled in the warm-up epoch, whose
    seconds are kept as ``warmup_seconds``)."""
    from kdcrowd.methods import SupervisedObjective

    torch.manual_seed(seed)
    data = DeviceData(images, None, None, None, None, device)
    n = data.n_train
    steps_per_epoch = len(training._batches(n, batch_size))
    epochs = max(1, round(steps / steps_per_epoch))
    model = build_backbone(backbone, data.input_shape, 10).to(device)
    obj = SupervisedObjective(model, torch.as_tensor(targets, dtype=torch.long, device=device)).to(device)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, optimizer="sgd", schedule="constant", device=str(device), progress=False, seed=seed, cuda_graph=cuda_graph, compile=compile)
    t0 = time.perf_counter()
    fit(obj, data, cfg)  # warm-up (kernel selection, allocator, compilation)
    warmup = time.perf_counter() - t0
    res = fit(obj, data, replace(cfg, epochs=epochs))
    out = {"images_per_second": epochs * n / res.seconds, "seconds": res.seconds, "steps": epochs * steps_per_epoch, "epochs": epochs, "images": epochs * n, "batch_size": batch_size,
           "precision": "bf16 autocast, channels_last" if device.type == "cuda" else "fp32 (no autocast on CPU)", "cuda_graph": cuda_graph and device.type == "cuda", "compile": compile, "warmup_seconds": warmup}
    del data, obj, model
    gc.collect()
    return out


def step_flops(backbone: str, shape: tuple[int, ...], device: torch.device, batch: int = 32) -> float:
    """FLOPs per image of one training step (forward + backward), by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_backbone(backbone, shape, 10).to(device).train()
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    with FlopCounterMode(display=False) as fc:
        loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
    return float(fc.get_total_flops()) / batch


def peak_matmul_tflops(device: torch.device, n: int, warmup: int = 3, reps: int = 10) -> dict[str, Any]:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(warmup):
        c = a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        c = a @ b
    sync(device)
    sec = time.perf_counter() - t0
    del a, b, c
    return {"tflops": 2 * n**3 * reps / sec / 1e12, "n": n, "reps": reps, "warmup": warmup, "seconds": sec}


# ----------------------------------------------------------------------------- pipelines


def make_naive_fit(ds: Any, device: torch.device, batch_size: int, lr: float | None, num_workers: int) -> Any:
    """A drop-in for :func:`kdcrowd.training.fit` that trains the way a research repo does.

    Same contract (``module.training_loss(x, idx, epoch)``, callbacks, best-state
    selection on validation accuracy, optimiser and schedule from the config), but the
    batches come from a DataLoader with per-item CPU augmentation, in fp32 and
    channels-first, with ``loss.item()`` every step and validation through a DataLoader.
    """
    mean, std = channel_stats(ds.x_train)
    x_tr, x_val, y_val = ds.x_train, ds.x_val, ds.y_val

    def naive_fit(module: nn.Module, data: DeviceData, config: TrainConfig, callbacks: Any = (), desc: str = "train") -> FitResult:
        cfg = replace(config, batch_size=batch_size, lr=config.lr if lr is None else lr)
        seed_everything(cfg.seed)
        opt = training._optimizer(module, cfg)
        train_loader = naive_loader(x_tr, None, mean, std, cfg.batch_size, num_workers, device, augment=cfg.augment, flip=cfg.flip)
        val_loader = naive_loader(x_val, y_val, mean, std, 256, num_workers, device, augment=False, shuffle=False) if x_val is not None and len(x_val) and y_val is not None else None
        sched = torch.optim.lr_scheduler.LambdaLR(opt, training._lr_lambda(cfg, len(train_loader)))
        log_ = training.EpochLog(module, callbacks, f"naive {desc}")
        t0 = time.perf_counter()
        for epoch in range(cfg.epochs):
            module.train()
            if hasattr(module, "on_epoch_start"):
                module.on_epoch_start(epoch)
            running, n_steps = 0.0, 0
            for x, _, idx in train_loader:
                x = x.to(device, non_blocking=True)
                idx = idx.to(device, non_blocking=True)
                loss = module.training_loss(x, idx, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item()
                n_steps += 1
            val = None
            if val_loader is not None:
                module.eval()
                correct = total = 0
                with torch.no_grad():
                    for x, y, _ in val_loader:
                        p = module.predict_proba(x.to(device, non_blocking=True))
                        correct += int((p.argmax(1).cpu() == y).sum())
                        total += int(y.numel())
                val = correct / max(1, total)
            log_.close(epoch, running / max(1, n_steps), val)
        sync(device)
        seconds = time.perf_counter() - t0
        del train_loader, val_loader
        gc.collect()
        log(f"    naive {desc}: {cfg.epochs} epochs in {seconds:.1f}s (val {log_.history[-1]['val_accuracy'] if log_.history else None})")
        return log_.result(seconds, cfg)

    return naive_fit


#: the training recipes of the pipeline (``--pipeline-recipes``)
PIPELINE_RECIPES = ("default", "airbench", "airbench-adamw")


def recipe_config(recipe: str, epochs: int, device: torch.device, batch_size: int, lr: float, seed: int, lr_scale: float = 1.0) -> TrainConfig:
    """The pipeline's TrainConfig under ``recipe`` (see :data:`PIPELINE_RECIPES`)."""
    common = dict(device=str(device), progress=False, seed=seed)
    if recipe == "default":
        return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, **common)
    if recipe == "airbench":  # no label smoothing: the crowd losses keep their own targets
        return airbench_config(epochs, batch_size, lr_scale=lr_scale, label_smoothing=0.0, **common)
    if recipe == "airbench-adamw":
        return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, **{k: AIRBENCH_RECIPE[k] for k in ("flip_schedule", "crop_padding", "tta")}, **common)
    raise ValueError(f"unknown recipe {recipe!r}; use one of {PIPELINE_RECIPES}")


def pipeline_config(ds: Any, epochs: int, device: torch.device, batch_size: int, lr: float, seed: int, backbone: str, recipe: str = "default", lr_scale: float = 1.0) -> Any:
    from kdcrowd.methods import RunConfig

    train = recipe_config(recipe, epochs, device, batch_size, lr, seed, lr_scale)
    return RunConfig(dataset=ds.name, method="kdcrowd", backbone=backbone, seed=seed, train=train, options=dict(PIPELINE_OPTIONS), track_memorization=False)


def best_val(metrics: dict[str, Any]) -> float | None:
    """The best validation accuracy of the (final stage's) training history."""
    vals = [r.get("val_accuracy") for r in metrics.get("history", []) or [] if r.get("val_accuracy") is not None]
    return max(vals) if vals else None


def _pipeline_summary(metrics: dict[str, Any], epochs: int) -> dict[str, Any]:
    stages = metrics.get("stages", {}) or {}
    return {
        "epochs": epochs,
        "seconds": metrics["seconds"],
        "test_accuracy": metrics.get("test_accuracy"),
        "test_accuracy_val_selected": metrics.get("test_accuracy_val_selected"),
        "best_val_accuracy": best_val(metrics),
        "final_stage": metrics.get("final_stage"),
        "stage_train_seconds": {k: v.get("seconds") for k, v in stages.items()},
        "stage_test_accuracy": {k: v.get("test_accuracy") for k, v in stages.items()},
    }


def run_fast_pipeline(ds: Any, epochs: int, device: torch.device, args: argparse.Namespace, recipe: str = "default") -> dict[str, Any]:
    from kdcrowd.methods import run_on_dataset

    cfg = pipeline_config(ds, epochs, device, args.pipeline_batch, args.pipeline_lr, args.seed, args.pipeline_backbone, recipe, args.pipeline_lr_scale)
    metrics, _ = run_on_dataset(ds, cfg)
    out = _pipeline_summary(metrics, epochs)
    out["recipe"] = recipe
    return out


def run_ceiling(ds: Any, epochs: int, lr_scale: float, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Method ``clean`` (true training labels) with the airbench recipe: one run."""
    from kdcrowd.methods import RunConfig, run_on_dataset

    train = airbench_config(epochs, args.ceiling_batch, lr_scale=lr_scale, device=str(device), progress=False, seed=args.seed)
    cfg = RunConfig(dataset=ds.name, method="clean", backbone=args.ceiling_backbone, seed=args.seed, train=train, track_memorization=False)
    metrics, _ = run_on_dataset(ds, cfg)
    hist = metrics.get("history") or []
    return {
        "epochs": epochs,
        "lr_scale": lr_scale,
        "lr": train.lr,
        "batch_size": train.batch_size,
        "train_seconds": _train_seconds(metrics),
        "seconds": metrics["seconds"],
        "final_val_accuracy": hist[-1]["val_accuracy"] if hist else None,
        "best_val_accuracy": best_val(metrics),
        "test_accuracy": metrics.get("test_accuracy"),
        "test_accuracy_val_selected": metrics.get("test_accuracy_val_selected"),
    }


def _train_seconds(metrics: dict[str, Any]) -> float | None:
    """The training time (FitResult.seconds) of a single-stage method run."""
    v = metrics.get("train_seconds")
    return float(v) if v is not None else None


def ceiling_section(ds: Any, device: torch.device, args: argparse.Namespace, out: dict[str, Any], save: Any, section: Any) -> None:
    """Section 4: the clean-label ceiling grid, chosen on validation accuracy only."""
    if ds.y_train is None:
        raise ValueError("the clean-label ceiling needs the training ground truth")
    runs: list[dict[str, Any]] = []
    out["ceiling"] = {"backbone": args.ceiling_backbone, "target": args.ceiling_target, "runs": runs}
    if device.type == "cuda":  # kernel selection and allocator warm-up, not timed
        section("ceiling_warmup", lambda: run_ceiling(warmup_subset(ds), 1, 1.0, device, args))
    for e in sorted(set(args.ceiling_epochs)):
        for s in args.ceiling_lr_scales:
            r = section(f"ceiling_{e}_{s}", lambda e=e, s=s: run_ceiling(ds, e, s, device, args))
            if r:
                runs.append(r)
                log(f"ceiling {args.ceiling_backbone}, {e} epochs, lr x{s}: train {r['train_seconds']:.2f}s, val {r['final_val_accuracy']:.4f}, test {r['test_accuracy']:.4f}")
            save()
    # per budget, the lr with the best final validation accuracy; overall the best one
    per_budget: dict[str, Any] = {}
    for e in sorted({r["epochs"] for r in runs}):
        cands = [r for r in runs if r["epochs"] == e and r["final_val_accuracy"] is not None]
        if cands:
            per_budget[str(e)] = max(cands, key=lambda r: r["final_val_accuracy"])
    out["ceiling"]["per_budget_val_chosen"] = per_budget
    chosen = list(per_budget.values())
    out["ceiling"]["selected"] = max(chosen, key=lambda r: (r["final_val_accuracy"], -r["epochs"])) if chosen else None
    hit = next((per_budget[k] for k in sorted(per_budget, key=int) if (per_budget[k]["test_accuracy"] or 0) >= args.ceiling_target), None)
    out["ceiling"]["time_to_target"] = None if hit is None else {"epochs": hit["epochs"], "lr_scale": hit["lr_scale"], "train_seconds": hit["train_seconds"], "seconds": hit["seconds"], "test_accuracy": hit["test_accuracy"]}


def run_naive_pipeline(ds: Any, epochs: int, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """The same run_on_dataset call with every stage's fit replaced by :func:`make_naive_fit`."""
    from kdcrowd import framework
    from kdcrowd.methods import run_on_dataset

    if not hasattr(framework, "fit"):
        raise RuntimeError("kdcrowd.framework no longer imports `fit`; cannot swap in the naive loop")
    cfg = pipeline_config(ds, epochs, device, args.pipeline_batch, args.pipeline_lr, args.seed, args.pipeline_backbone)
    original, naive = framework.fit, make_naive_fit(ds, device, args.naive_batch, args.naive_lr, args.num_workers)
    calls: list[str] = []

    def counted(*a: Any, **k: Any) -> FitResult:
        calls.append(k.get("desc", ""))
        return naive(*a, **k)

    framework.fit = counted
    try:
        metrics, _ = run_on_dataset(ds, cfg)
    finally:
        framework.fit = original
    trained = sorted(k for k, v in (metrics.get("stages") or {}).items() if v.get("history"))  # not the ensemble, which trains nothing
    if len(calls) != len(trained):  # a stage trained outside framework.fit would be timed on the fast path
        raise RuntimeError(f"the naive loop trained {len(calls)} stage(s) ({calls}) of {trained}")
    out = _pipeline_summary(metrics, epochs)
    out["batch_size"] = args.naive_batch
    out["lr"] = args.naive_lr if args.naive_lr is not None else args.pipeline_lr
    return out


# ----------------------------------------------------------------------------- profile


def _attr(evt: Any, *names: str) -> float:
    for n in names:
        v = getattr(evt, n, None)
        if v is not None:
            return float(v)
    return 0.0


def profile_fast(ds: Any, device: torch.device, backbone: str, batch_size: int, steps: int) -> dict[str, Any]:
    """torch.profiler over ``steps`` fast-path steps (one fit epoch on steps × batch items)."""
    from torch.profiler import ProfilerActivity, profile

    from kdcrowd.methods import SupervisedObjective

    n = min(len(ds.x_train), steps * batch_size)
    x = ds.x_train[:n]
    y = ds.y_train[:n] if ds.y_train is not None else np.zeros(n, dtype=np.int64)
    data = DeviceData(x, None, None, None, None, device)
    model = build_backbone(backbone, data.input_shape, 10).to(device)
    obj = SupervisedObjective(model, torch.as_tensor(y, dtype=torch.long, device=device)).to(device)
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=0.05, optimizer="sgd", schedule="constant", device=str(device), progress=False)
    fit(obj, data, cfg)  # warm-up
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fit(obj, data, cfg)
    sync(device)
    avgs = prof.key_averages()
    if device.type == "cuda":
        kernels = [e for e in avgs if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
        key = ("self_device_time_total", "self_cuda_time_total", "device_time_total", "cuda_time_total")
    else:
        kernels = list(avgs)
        key = ("self_cpu_time_total", "cpu_time_total")
    if not kernels:  # a profiler build that does not tag kernels: anything with self device time
        kernels = [e for e in avgs if _attr(e, *key) > 0]
    kernels.sort(key=lambda e: _attr(e, *key), reverse=True)
    total = sum(_attr(e, *key) for e in kernels) or 1.0
    top = [{"name": e.key, "count": int(e.count), "self_time_us": _attr(e, *key), "percent": 100.0 * _attr(e, *key) / total, "mean_us": _attr(e, *key) / max(1, e.count)} for e in kernels[:15]]
    table = None
    for sort_by in (("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ("self_cpu_time_total",)):
        try:
            table = avgs.table(sort_by=sort_by, row_limit=15)
            break
        except Exception:  # noqa: BLE001
            continue
    return {"backbone": backbone, "batch_size": batch_size, "steps": len(training._batches(n, batch_size)), "what": "CUDA kernels" if device.type == "cuda" else "CPU ops (no CUDA here)", "total_self_time_us": total, "top15": top, "table": table}


# ----------------------------------------------------------------------------- driver


# ----------------------------------------------------------------------------- 5. command overhead

#: The rows of issue 15's table measured by ``--commands``: (target factor, target seconds added, what it is).
COMMAND_ROWS: dict[str, tuple[float, float, str]] = {
    "fit-labelme-cpu": (2.0, 3.0, "kdcrowd fit, defaults, LabelMe's 1,000 crowd-labelled items as bag-of-words features, CPU"),
    "run-cifar10n-resnet18-mv": (1.3, 0.0, "kdcrowd run, CIFAR-10N, ResNet-18, majority vote, 11 epochs"),
}


def _labelme_feature_files(data_root: Path, folder: Path) -> tuple[Path, Path, Path]:
    """LabelMe's bag-of-words training features and truths as the files of docs/RESULTS.md §6
    (``lm_X.csv`` with an item column, ``lm_gold.csv``), and the crowd labels' file."""
    import pandas as pd

    src = data_root / "labelme"
    d = np.load(src / "labelme_bovw_features.npz")
    X = d["X_train"]
    f = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    f.insert(0, "item", range(len(X)))
    f.to_csv(folder / "lm_X.csv", index=False)
    pd.DataFrame({"item": range(len(X)), "label": d["y_train"]}).to_csv(folder / "lm_gold.csv", index=False)
    return src / "labelme_answers_long.csv.gz", folder / "lm_X.csv", folder / "lm_gold.csv"


def _command_training_seconds(metrics: dict[str, Any]) -> tuple[float | None, str]:
    """(training seconds, where they come from) of a command's ``metrics.json``."""
    t = metrics.get("timings")
    if t and t.get("training") is not None:
        return float(t["training"]), "timings.training (optimisation steps only)"
    stages = metrics.get("stages") or {}
    if stages:
        return float(sum(float(v.get("seconds") or 0.0) for v in stages.values())), "sum of the stages' seconds (per-epoch evaluation and checkpoints included)"
    if metrics.get("train_seconds") is not None:
        return float(metrics["train_seconds"]), "train_seconds (per-epoch evaluation included)"
    return None, "none"


def command_rows(args: argparse.Namespace) -> dict[str, Any]:
    """Part 5: the rows of ``args.commands``, each run ``args.repeats`` times as a fresh process."""
    import subprocess
    import tempfile

    src = Path(args.src).resolve() if args.src else ROOT / "src"
    root = find_labelme_root(args.root)
    root = None if root is None else Path(root).resolve()  # the commands run in a temporary folder
    rows = list(COMMAND_ROWS) if "all" in args.commands else args.commands
    prev: dict[str, Any] = {}
    if args.out.exists():
        try:

            prev = json.loads(args.out.read_text())
        except ValueError:
            prev = {}
    entry: dict[str, Any] = {"src": str(src), "versions": versions(), "cpu_count": os.cpu_count(), "python": sys.executable, "rows": {}}
    env = {**os.environ, "PYTHONPATH": str(src) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    with tempfile.TemporaryDirectory(prefix="kdcrowd-overhead-") as tmp:
        work = Path(tmp)
        for row in rows:
            factor, plus, what = COMMAND_ROWS[row]
            if row == "fit-labelme-cpu":
                if root is None:
                    raise SystemExit("--commands fit-labelme-cpu needs the labelme data (labelme/labelme_bovw_features.npz): give --root")
                answers, feats, gold = _labelme_feature_files(root, work)
                argv = ["fit", "--annotations", str(answers), "--features", str(feats), "--truth", str(gold), "--device", "cpu"]
            else:
                argv = ["run", "--dataset", "cifar10n", "--method", "mv", "--backbone", "resnet18", "--epochs", "11", "--device", args.device]
                if args.root:
                    argv += ["--data-root", str(Path(args.root).resolve())]  # the commands run in a temporary folder
            runs = []
            for i in range(args.repeats):
                out_dir = work / f"{row}-{i}"
                cmd = [sys.executable, "-m", "kdcrowd", *argv, "--out", str(out_dir)]
                load0 = os.getloadavg()
                t = time.perf_counter()
                proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
                wall = time.perf_counter() - t
                rec: dict[str, Any] = {"wall": wall, "returncode": proc.returncode, "loadavg_before": load0, "loadavg_after": os.getloadavg()}
                if proc.returncode != 0:
                    rec["stderr_tail"] = proc.stderr[-3000:]
                else:

                    m = json.loads((out_dir / "metrics.json").read_text())
                    training, source = _command_training_seconds(m)
                    rec.update(training=training, training_source=source, timings=m.get("timings"), seconds=m.get("seconds"), device=m.get("device"))
                    if training is not None:
                        rec["target_wall"] = factor * training + plus
                        rec["target_met"] = wall <= rec["target_wall"]
                log(f"{row} #{i + 1}: wall {wall:.2f}s" + (f", training {rec['training']:.2f}s, target {rec['target_wall']:.2f}s" if rec.get("target_wall") is not None else f" (exit {proc.returncode})"))
                runs.append(rec)
            done = [r for r in runs if r["returncode"] == 0]
            best = min(done, key=lambda r: r["wall"]) if done else None
            entry["rows"][row] = {
                "what": what,
                "command": "PYTHONPATH=" + str(src) + " python -m kdcrowd " + " ".join(argv) + " --out OUT",
                "target": f"wall <= {factor:g} x training" + (f" + {plus:g} s" if plus else ""),
                "fastest": best,
                "runs": runs,
            }
    prev.setdefault("rows_measured", {})
    prev["command"] = " ".join(["python", "benchmarks/speed.py", *sys.argv[1:]])
    prev["rows_measured"][args.label] = entry
    prev["notes"] = [
        "wall: the process measured from outside (fresh Python, imports included), the fastest of the repeats; timings: that run's metrics.json "
        "(parts add up to timings.wall, process start to metrics.json written). Load average: the machine may be shared; compare runs at a similar load.",
    ]
    write_json(args.out, prev)
    return prev


def find_labelme_root(explicit: str | None) -> Path | None:
    """The first folder holding ``labelme/labelme_bovw_features.npz`` (see :func:`_first_root`)."""
    return _first_root(explicit, ("labelme/labelme_bovw_features.npz",))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.json")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--root", default=None, help="data root holding cifar10n/ (else searched, see find_data_root)")
    ap.add_argument("--synthetic", action="store_true", help="random uint8 images with simulated workers instead of CIFAR-10N")
    ap.add_argument("--image-size", type=int, default=32, help="side of the synthetic images")
    ap.add_argument("--n-train", type=int, default=None, help="use only the first N training items")
    ap.add_argument("--n-eval", type=int, default=None, help="use only the first N validation and test items")
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "fastcnn"])
    ap.add_argument("--naive-batch", type=int, default=128)
    ap.add_argument("--fast-batch", type=int, default=512)
    ap.add_argument("--num-workers", type=int, default=None, help="DataLoader workers of the naive path (default min(4, cpus-1))")
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--naive-steps", type=int, default=200)
    ap.add_argument("--fast-steps", type=int, default=200, help="about this many timed fast-path steps (whole epochs)")
    ap.add_argument("--peak-n", type=int, default=None, help="matrix side of the bf16 peak (8192 on CUDA)")
    ap.add_argument("--pipeline-backbone", default="fastcnn")
    ap.add_argument("--pipeline-batch", type=int, default=512)
    ap.add_argument("--pipeline-lr", type=float, default=2e-3)
    ap.add_argument("--naive-lr", type=float, default=1e-3, help="AdamW learning rate of the naive pipeline at its batch size")
    ap.add_argument("--fast-epochs", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--pipeline-recipes", nargs="+", default=["default"], choices=PIPELINE_RECIPES, help="training recipes of the fast pipeline (each with every --fast-epochs)")
    ap.add_argument("--pipeline-lr-scale", type=float, default=1.0, help="airbench recipe: multiplier of its learning rate")
    ap.add_argument("--ceiling-backbone", default=None, help="run the clean-label ceiling grid with this backbone and the airbench recipe (section 4)")
    ap.add_argument("--ceiling-epochs", type=int, nargs="+", default=[8, 12, 16])
    ap.add_argument("--ceiling-lr-scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--ceiling-batch", type=int, default=512)
    ap.add_argument("--ceiling-target", type=float, default=0.89)
    ap.add_argument("--naive-epochs", type=int, default=20)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-pipeline", action="store_true")
    ap.add_argument("--skip-naive-pipeline", action="store_true", help="only estimate the naive pipeline (seconds per epoch × epochs)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compile", action="store_true", help="the fast path's throughput with TrainConfig.compile (torch.compile of the step, compiled in the warm-up epoch)")
    ap.add_argument("--cuda-graph", action="store_true", help="the fast path's throughput with TrainConfig.cuda_graph (the backbone's training passes as CUDA graphs; the capture happens in each fit's first step, inside its time)")
    ap.add_argument("--profile-backbone", default="fastcnn")
    ap.add_argument("--profile-steps", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="a small version (subset of the data, few steps and epochs)")
    ap.add_argument("--commands", nargs="+", choices=[*COMMAND_ROWS, "all"], default=None, help="part 5 only: time these commands as fresh processes (see the module docstring)")
    ap.add_argument("--src", default=None, help="with --commands: the source tree the commands run from (default: this repository's src)")
    ap.add_argument("--label", default="current", help="with --commands: the name of this measurement in --out (other labels there are kept)")
    ap.add_argument("--repeats", type=int, default=1, help="with --commands: runs per row (the fastest is kept)")
    args = ap.parse_args(argv)
    args._given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in (argv if argv is not None else sys.argv[1:]) if a.startswith("--")}
    if args.num_workers is None:
        args.num_workers = default_num_workers()
    return args


#: ``--quick`` settings (flags given explicitly win): a toy run on the CPU, a short one on CUDA.
QUICK_CPU = {"n_train": 256, "n_eval": 128, "warmup_steps": 1, "naive_steps": 3, "fast_steps": 4, "fast_epochs": [1, 2], "naive_epochs": 1, "profile_steps": 2, "naive_batch": 32, "fast_batch": 64, "pipeline_batch": 64, "ceiling_epochs": [1, 2], "ceiling_batch": 64}
QUICK_CUDA = {"warmup_steps": 5, "naive_steps": 50, "fast_steps": 60, "fast_epochs": [2, 5], "naive_epochs": 5, "peak_n": 4096}


def apply_quick(args: argparse.Namespace, device: torch.device) -> None:
    if args.quick:
        for k, v in (QUICK_CUDA if device.type == "cuda" else QUICK_CPU).items():
            if k not in args._given:
                setattr(args, k, v)
    args.fast_epochs = sorted(set(args.fast_epochs))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.commands:
        return command_rows(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    apply_quick(args, device)
    if args.peak_n is None:
        args.peak_n = 8192 if device.type == "cuda" else 512
    dev_name = device_name(device)
    t_all = time.perf_counter()
    out: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/speed.py", *(sys.argv[1:] if argv is None else argv)]),
        "versions": versions(),
        "device": dev_name,
        "cpu_count": os.cpu_count(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")},
        "same_model_speedup": {},
        "images_per_second": {},
        "throughput_detail": {},
        "flops_per_image": {},
        "tflops": {},
        "peak_bf16_tflops": None,
        "fraction_of_peak": {},
        "pipeline_seconds": {},
        "pipeline_test_accuracy": {},
        "time_to_accuracy_speedup": None,
        "errors": {},
        "notes": [],
    }
    notes = out["notes"]

    def save() -> None:
        out["wall_seconds"] = time.perf_counter() - t_all
        write_json(args.out, out)

    def section(name: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - record and go on
            log(f"{name} FAILED: {type(exc).__name__}: {exc}")
            out["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return None
        finally:
            save()

    log(f"device {dev_name}; torch {torch.__version__}; {os.cpu_count()} CPUs; naive DataLoader workers {args.num_workers}")
    ds, info = load_data(args)
    out["data"] = info
    if info.get("synthetic"):
        notes.append("DATA: " + info.get("data_note", "synthetic data") + ". Throughput numbers are valid; accuracies are meaningless (random images).")
    log(f"data: {ds!r}")
    save()

    # 1. the device's bf16 peak
    pk = section("peak", lambda: peak_matmul_tflops(device, args.peak_n))
    if pk:
        out["peak_bf16_tflops"] = pk["tflops"]
        out["peak_detail"] = pk
        log(f"bf16 peak ({args.peak_n}^3 matmul): {pk['tflops']:.1f} TFLOP/s")

    # 2. same-model throughput
    y_tr = ds.y_train if ds.y_train is not None else np.zeros(len(ds.x_train), dtype=np.int64)
    shape = (ds.x_train.shape[3], ds.x_train.shape[1], ds.x_train.shape[2])
    if not args.skip_throughput:
        for bb in args.backbones:
            fl = section(f"flops_{bb}", lambda bb=bb: step_flops(bb, shape, device))
            out["flops_per_image"][bb] = fl
            nv = section(f"naive_{bb}", lambda bb=bb: naive_throughput(bb, ds.x_train, y_tr, device, args.naive_batch, args.num_workers, args.naive_steps, args.warmup_steps, seed=args.seed))
            if nv:
                log(f"{bb} naive: {nv['images_per_second']:,.0f} images/s ({nv['steps']} steps of {nv['batch_size']}, {nv['num_workers']} workers)")
            fs = section(f"fast_{bb}", lambda bb=bb: fast_throughput(bb, ds.x_train, y_tr, device, args.fast_batch, args.fast_steps, seed=args.seed, cuda_graph=args.cuda_graph, compile=args.compile))
            if fs:
                log(f"{bb} fast:  {fs['images_per_second']:,.0f} images/s ({fs['steps']} steps of {fs['batch_size']})")
            ips = {"naive": nv["images_per_second"] if nv else None, "fast": fs["images_per_second"] if fs else None}
            out["images_per_second"][bb] = ips
            out["throughput_detail"][bb] = {"naive": nv, "fast": fs}
            out["same_model_speedup"][bb] = _safe_div(ips["fast"], ips["naive"])
            tf = {k: (fl * v / 1e12 if (fl is not None and v is not None) else None) for k, v in ips.items()}
            out["tflops"][bb] = tf
            out["fraction_of_peak"][bb] = {k: _safe_div(v, out["peak_bf16_tflops"]) for k, v in tf.items()}
            if out["same_model_speedup"][bb] is not None:
                log(f"{bb}: fast/naive = {out['same_model_speedup'][bb]:.2f}x; TFLOP/s fast {tf['fast']:.2f}, naive {tf['naive']:.2f}")
            save()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        notes.append(
            f"Same-model throughput: naive = DataLoader over uint8 HWC numpy images, per-item zero-pad-4 random crop + flip + ToTensor + Normalize in __getitem__, "
            f"num_workers={args.num_workers}, pin_memory on CUDA, batch {args.naive_batch}, fp32 channels-first (cuDNN may use TF32 for convolutions, torch's default), "
            f"SGD momentum 0.9, loss.item() every step; {args.warmup_steps} warm-up + {args.naive_steps} timed steps. "
            f"fast = kdcrowd.training.fit on DeviceData, batch {args.fast_batch}, bf16 autocast + channels_last on CUDA, the same SGD, one warm-up epoch then whole epochs (about {args.fast_steps} steps); its time includes fit's per-epoch bookkeeping (no validation data). "
            "Both ends of every timed interval are synchronised with torch.cuda.synchronize()."
        )
        notes.append("TFLOP/s = FLOPs per image of one training step (forward + backward, FlopCounterMode: convolutions and matmuls only) × images/s; fraction_of_peak = that / peak_bf16_tflops (an 8192^3 bf16 matmul, 3 warm-ups, 10 timed). The naive path runs in fp32/TF32, so its fraction of the bf16 peak is an upper bound on what it could reach, not a like-for-like efficiency.")

    # 4. the clean-label ceiling (before the pipelines: the shorter rows first)
    if args.ceiling_backbone:
        section("ceiling", lambda: ceiling_section(ds, device, args, out, save, section))
        sel = (out.get("ceiling") or {}).get("selected")
        if sel:
            log(f"ceiling selected on validation: {sel['epochs']} epochs, lr x{sel['lr_scale']}: val {sel['final_val_accuracy']:.4f}, test {sel['test_accuracy']:.4f}, train {sel['train_seconds']:.2f}s; time to {args.ceiling_target}: {out['ceiling']['time_to_target']}")
        notes.append(
            f"Clean-label ceiling: method clean (true training labels) with backbone {args.ceiling_backbone} and kdcrowd.training.airbench_config (Nesterov SGD momentum 0.85, lr 1.5 x batch/1024 x lr_scale, "
            f"L2 0.0153/11.5, BN biases at 64x lr, triangular schedule with 1/5 warm-up, label smoothing 0.2, alternating flips, translate 2, flip+translate TTA), batch {args.ceiling_batch}, "
            f"epochs {args.ceiling_epochs} x lr scales {args.ceiling_lr_scales}. Per epoch budget the lr scale is chosen on the final validation accuracy; 'selected' is the best validation run. "
            "train_seconds = FitResult.seconds (the epochs with their per-epoch validation); seconds = the whole run_on_dataset (data placement and test evaluation too). "
            f"time_to_target = the fewest-epoch validation-chosen run with test accuracy >= {args.ceiling_target} (a reading of the test split)."
        )
        save()

    # 3. pipelines
    if not args.skip_pipeline:
        fast_runs: dict[int, dict[str, Any]] = {}
        recipe_runs: list[dict[str, Any]] = []
        if device.type == "cuda":
            for rc in args.pipeline_recipes:
                section(f"pipeline_warmup_{rc}", lambda rc=rc: run_fast_pipeline(warmup_subset(ds), 1, device, args, rc))
        for rc in args.pipeline_recipes:
            for e in args.fast_epochs:
                r = section(f"fast_pipeline_{rc}_{e}" if len(args.pipeline_recipes) > 1 else f"fast_pipeline_{e}", lambda e=e, rc=rc: run_fast_pipeline(ds, e, device, args, rc))
                if r:
                    recipe_runs.append(r)
                    if rc == args.pipeline_recipes[0]:
                        fast_runs[e] = r
                    log(f"fast pipeline ({rc}), {e} epochs/stage: {r['seconds']:.1f}s (stages {sum(v or 0 for v in r['stage_train_seconds'].values()):.1f}s), test accuracy {r['test_accuracy']:.4f}, val-selected {r['test_accuracy_val_selected']}, best val {r['best_val_accuracy']} (final: {r['final_stage']})")
                out["pipeline_fast_runs"] = {str(k): v for k, v in fast_runs.items()}
                out["pipeline_recipe_runs"] = recipe_runs
                save()
        valued = [r for r in recipe_runs if r.get("best_val_accuracy") is not None]
        out["pipeline_selected"] = max(valued, key=lambda r: (r["best_val_accuracy"], -r["epochs"])) if valued else None
        if out["pipeline_selected"]:
            ps = out["pipeline_selected"]
            log(f"pipeline selected on validation: {ps['recipe']}, {ps['epochs']} epochs/stage: {ps['seconds']:.1f}s, test {ps['test_accuracy']:.4f} (val-selected {ps['test_accuracy_val_selected']})")
        naive = None
        if not args.skip_naive_pipeline:
            naive = section("naive_pipeline", lambda: run_naive_pipeline(ds, args.naive_epochs, device, args))
            if naive:
                log(f"naive pipeline, {args.naive_epochs} epochs/stage: {naive['seconds']:.1f}s, test accuracy {naive['test_accuracy']:.4f}")
                out["pipeline_naive_run"] = naive
        # estimate from the naive FastCNN throughput
        est = None
        pb = args.pipeline_backbone
        nv_ips = (out["images_per_second"].get(pb) or {}).get("naive")
        if nv_ips:
            est = len(ds.x_train) / nv_ips * 3 * args.naive_epochs
        same = fast_runs.get(args.naive_epochs)
        out["pipeline_seconds"] = {
            "fast": same["seconds"] if same else None,
            "naive": naive["seconds"] if naive else None,
            "naive_estimate": est,
            "fast_by_epochs": {str(k): v["seconds"] for k, v in fast_runs.items()},
        }
        out["pipeline_test_accuracy"] = {
            "fast": same["test_accuracy"] if same else None,
            "naive": naive["test_accuracy"] if naive else None,
            "fast_by_epochs": {str(k): v["test_accuracy"] for k, v in fast_runs.items()},
        }
        out["pipeline_same_epochs_speedup"] = _safe_div(naive["seconds"] if naive else est, same["seconds"] if same else None)
        target_acc = naive["test_accuracy"] if naive else None
        tta = None
        if target_acc is not None:
            for e in sorted(fast_runs):
                if fast_runs[e]["test_accuracy"] is not None and fast_runs[e]["test_accuracy"] >= target_acc:
                    tta = e
                    break
        out["time_to_accuracy"] = {"target_test_accuracy": target_acc, "fast_epochs_reaching_it": tta, "fast_seconds": fast_runs[tta]["seconds"] if tta else None, "naive_seconds": naive["seconds"] if naive else None}
        out["time_to_accuracy_speedup"] = _safe_div(naive["seconds"], fast_runs[tta]["seconds"]) if (tta and naive) else None
        notes.append(
            f"Pipeline = KD-Crowd with options {PIPELINE_OPTIONS} (teacher Max-MIG, GCE student, MIG-KL distillation, stage 2), backbone {args.pipeline_backbone}, through kdcrowd.methods.run_on_dataset; "
            f"pipeline_seconds are its metrics['seconds'] (placing the data on the device, the three stages, the predictions between them, and test evaluation). track_memorization=False in both paths (the student's pseudo-label memorization callback still runs in both). "
            f"fast: recipes {args.pipeline_recipes} (default = TrainConfig(batch_size={args.pipeline_batch}, lr={args.pipeline_lr}, AdamW, cosine); airbench = airbench_config at batch {args.pipeline_batch}, lr x{args.pipeline_lr_scale}, no label smoothing; airbench-adamw = default + alternating flips, translate 2, flip+translate TTA) for {args.fast_epochs} epochs per stage; pipeline_selected = best final-stage validation accuracy over recipes and epochs. "
            f"naive: the same call with kdcrowd.framework.fit swapped for a DataLoader loop (naive_fit in this script: per-item CPU augmentation, fp32, channels-first, batch {args.naive_batch}, AdamW lr {args.naive_lr}, cosine, loss.item() each step, validation through a DataLoader each epoch) for {args.naive_epochs} epochs per stage; everything between the stages is the library's (GPU) code in both. "
            "pipeline_seconds['naive_estimate'] = (training images / naive FastCNN images/s) × 3 stages × naive epochs, the simple estimate, for comparison with the measured naive run. "
            "time_to_accuracy_speedup = naive seconds / seconds of the fewest-epoch fast run whose test accuracy (final state) reaches the naive run's; null if none does. Accuracies are from single runs (seed 0), so differences of a few tenths of a percent are noise."
        )

    # 4. profile
    if args.profile:
        pr = section("profile", lambda: profile_fast(ds, device, args.profile_backbone, args.fast_batch, args.profile_steps))
        if pr:
            out["profile"] = pr
            log(f"profile ({pr['what']}), top 5: " + "; ".join(f"{t['name'][:50]} {t['percent']:.1f}%" for t in pr["top15"][:5]))

    if not out["errors"]:
        del out["errors"]
    save()
    log(f"done in {out['wall_seconds']:.1f}s -> {args.out}")
    return out


if __name__ == "__main__":
    main()
