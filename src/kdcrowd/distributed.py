"""Multi-GPU training through ``torch.distributed`` (one process per GPU, launched by ``torchrun``).

Turned on by :attr:`kdcrowd.training.TrainConfig.distributed`; every method and every
KD-Crowd stage then trains data-parallel, because they all go through
:func:`kdcrowd.training.fit`. From the command line::

    torchrun --nproc_per_node 4 -m kdcrowd run --distributed --dataset fashion_mnist \\
        --workers symmetric --method kdcrowd --out runs/kd4

How it works (details in :func:`kdcrowd.training.fit`):

* **Processes.** ``torchrun`` starts one process per GPU and sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
  :func:`init_from_env` joins the process group (NCCL for CUDA tensors and gloo for CPU
  tensors on a CUDA machine, gloo alone elsewhere) and selects ``cuda:LOCAL_RANK``.
  :func:`kdcrowd.training.resolve_device` then gives each process its own device.
* **Data.** Every rank holds the whole data set on its device (it is small next to GPU
  memory). Each epoch all ranks draw the same permutation (a generator used for nothing
  else, seeded identically); a *global* batch is ``batch_size × world_size`` consecutive
  items of it and each rank takes its contiguous shard, so ``batch_size`` means "per GPU"
  (and MIG^f's / Max-MIG's in-batch pairs are formed within a GPU's shard). A last global
  batch with fewer than 2 items per rank is merged into the one before, so every shard
  has at least 2 items. The learning rate is not rescaled with the number of GPUs.
* **Model.** The trainable module is wrapped for the backward pass only: DDP wraps a thin
  :class:`TrainingLoss` module whose ``forward(x, idx, epoch)`` is the module's
  ``training_loss``, so gradients are averaged across ranks in the backward pass.
  ``find_unused_parameters=False``: every parameter of the library's models gets a
  gradient at every step (worker parameters ``(M, K, K)`` are gathered by index, so the
  rows of absent workers get exact zeros); a user module that leaves parameters out can
  set ``ddp_find_unused_parameters = True``. Worker parameters are dense, so DDP
  all-reduces their whole gradient: ``M·K²`` numbers per step (10⁴ workers × 10 classes
  = 4 MB in fp32 per step, next to ResNet-18's 45 MB).
* **Buffers** are not broadcast at every step (DDP's ``broadcast_buffers=False``: the
  annotation and target buffers are large and constant). At the end of every epoch
  :func:`sync_buffers` makes them identical again: BatchNorm running statistics are
  averaged over ranks; per-item state (a floating-point buffer whose first dimension is
  the number of training items, such as ELR's temporal-ensemble targets) is merged row
  by row from the rank that owned the item this epoch (each item is in exactly one
  rank's shard per epoch, and such state is read and written only for the items of the
  batch, so the merged buffer equals single-process training with the global batch);
  any other floating-point buffer is taken from rank 0. Integer buffers (annotations,
  hard labels, BatchNorm's batch counter) never differ between ranks.
* **BatchNorm** normalises with each GPU's own batch statistics by default (per-GPU
  batches of 128+ give good statistics); ``TrainConfig.sync_bn`` converts BatchNorm
  layers to :class:`torch.nn.SyncBatchNorm` for the duration of :func:`fit` (CUDA only).
* **Evaluation** (validation accuracy, callbacks, the predictions a method takes from a
  trained model) is sharded: each rank predicts a contiguous slice of the items and the
  slices are all-gathered, so every rank gets the same predictions, history, best epoch
  and best state. Only rank 0 should write files (:func:`is_main`).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
from torch import nn

__all__ = [
    "init_from_env",
    "cleanup",
    "is_initialized",
    "launched",
    "is_main",
    "rank",
    "world_size",
    "local_rank",
    "local_device",
    "barrier",
    "all_reduce_mean",
    "all_reduce_sum",
    "broadcast_",
    "broadcast_buffers",
    "broadcast_object",
    "all_gather_object",
    "all_gather_rows",
    "TrainingLoss",
    "wrap",
    "sync_buffers",
    "convert_sync_batchnorm",
    "revert_sync_batchnorm",
]

_ENV = ("RANK", "WORLD_SIZE")


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def is_initialized() -> bool:
    """Whether a default process group exists in this process."""
    dist = _dist()
    return bool(dist.is_available() and dist.is_initialized())


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` are set)."""
    return all(k in os.environ for k in _ENV)


def local_rank() -> int:
    """``LOCAL_RANK`` from the environment (0 when unset): this process's GPU on its node."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def init_from_env(backend: str | None = None, timeout: datetime.timedelta | None = None) -> None:
    """Join the process group described by ``torchrun``'s environment; a no-op when already joined.

    Args:
        backend: ``None`` → ``"cpu:gloo,cuda:nccl"`` when CUDA is available (NCCL for GPU
            tensors, gloo for CPU tensors), else ``"gloo"``; or any backend string of
            :func:`torch.distributed.init_process_group` (``"gloo"`` to train on the CPU).
        timeout: collective timeout (the backend's default when ``None``).

    Raises:
        RuntimeError: the environment has no ``RANK``/``WORLD_SIZE`` (not started by ``torchrun``).
    """
    if is_initialized():
        return
    if not launched():
        raise RuntimeError(
            "distributed training needs the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); "
            "launch with e.g. `torchrun --nproc_per_node 2 -m kdcrowd run --distributed ...`, or turn distributed off"
        )
    dist = _dist()
    cuda = torch.cuda.is_available()
    if backend is None:
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    kwargs: dict[str, Any] = {"backend": backend}
    if timeout is not None:
        kwargs["timeout"] = timeout
    if cuda and "nccl" in backend:
        lr = local_rank()
        if lr >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={lr} but only {torch.cuda.device_count()} CUDA device(s) are visible; start at most that many processes per node")
        torch.cuda.set_device(lr)
        kwargs["device_id"] = torch.device("cuda", lr)
    dist.init_process_group(**kwargs)


def cleanup() -> None:
    """Leave the process group (when there is one): wait for every rank, destroy the group,
    and free what still refers to its backend while the interpreter is whole.

    The wait is skipped while an exception is propagating (``cleanup`` called from a
    ``finally``): a rank that failed alone must not wait for ranks that will not come.
    Without the wait one rank could tear its connections down while another still used
    them; without the collection, gloo objects kept alive by Python references were freed
    at interpreter exit, where a joinable backend thread could abort the process
    (``terminate called without an active exception``: SIGABRT after a run that had
    succeeded, now and then in the two-rank CPU runs of ``tests/test_distributed.py``).
    """
    if is_initialized():
        import gc
        import sys

        if sys.exc_info()[0] is None:
            barrier()
        _dist().destroy_process_group()
        gc.collect()


def world_size() -> int:
    """Number of processes in the group (1 without a process group)."""
    return _dist().get_world_size() if is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return _dist().get_rank() if is_initialized() else 0


def is_main() -> bool:
    """Whether this is rank 0, the process that writes files and prints."""
    return rank() == 0


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if not is_initialized():
        return
    dist = _dist()
    if torch.cuda.is_available() and "nccl" in str(dist.get_backend()):
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks, in place; returns ``t`` (unchanged without a process group)."""
    if is_initialized() and world_size() > 1:
        _dist().all_reduce(t, op=_dist().ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Average ``t`` (floating point) over ranks, in place; returns ``t``."""
    n = world_size()
    if n > 1:
        all_reduce_sum(t)
        t.div_(n)
    return t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``t`` with rank ``src``'s value, in place; returns ``t``."""
    if is_initialized() and world_size() > 1:
        _dist().broadcast(t, src=src)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank."""
    if not (is_initialized() and world_size() > 1):
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` without a process group)."""
    if not (is_initialized() and world_size() > 1):
        return [obj]
    out: list[Any] = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``t`` along dimension 0, in rank order.

    The ranks may hold different numbers of rows (the other dimensions and the dtype must
    agree); every rank gets the same result.
    """
    n = world_size()
    if n == 1:
        return t
    dist = _dist()
    sizes = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    all_sizes = [torch.zeros_like(sizes) for _ in range(n)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s.item()) for s in all_sizes]
    longest = max(counts)
    padded = t.new_zeros((longest, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(n)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


class TrainingLoss(nn.Module):
    """What DDP runs forward: ``forward(x, idx, epoch) = module.training_loss(x, idx, epoch)``.

    DDP hooks the backward pass of what its ``forward`` computes; the trainables' forward
    is their prediction, so this thin module routes DDP's forward to the training loss.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.module.training_loss(x, idx, epoch)  # type: ignore[operator]


def wrap(module: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(TrainingLoss(module))`` on ``device`` (parameters broadcast from rank 0).

    Buffers are not broadcast at each forward (``broadcast_buffers=False``, or
    ``forward_sync_buffers=False`` in newer torch); call :func:`sync_buffers` at the end of
    each epoch instead.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    # No buffer broadcast at every forward; newer torch spells it forward_sync_buffers.
    no_sync = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters else {"broadcast_buffers": False}
    return DistributedDataParallel(
        TrainingLoss(module),
        device_ids=device_ids,
        find_unused_parameters=find_unused_parameters,
        gradient_as_bucket_view=True,
        **no_sync,
    )


@torch.no_grad()
def sync_buffers(module: nn.Module, n_items: int, owned: torch.Tensor | None) -> None:
    """Make ``module``'s floating-point buffers identical on every rank (end of an epoch).

    * BatchNorm running mean / variance: averaged over ranks.
    * Per-item state — a buffer whose first dimension is ``n_items``: row ``i`` is taken
      from the rank whose ``owned[i]`` is true (``owned``: ``(n_items,)`` bool, the items of
      this rank's shards this epoch; exactly one rank owns each item). Buffers that did not
      change come out unchanged.
    * Other floating-point buffers: rank 0's value.

    Integer and boolean buffers are left alone (they are constant or advance identically),
    and so are non-persistent buffers: the objectives register their inputs (labels, soft
    targets, the teacher's or the student's predictions) that way, they never change, and
    :func:`broadcast_buffers` aligned them once at the start.
    """
    if world_size() == 1:
        return
    done: set[int] = {id(b) for mod in module.modules() for name, b in mod.named_buffers(recurse=False) if name in mod._non_persistent_buffers_set}
    for mod in module.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            for b in (mod.running_mean, mod.running_var):
                if b is not None and id(b) not in done:
                    all_reduce_mean(b)
                    done.add(id(b))
    for _, b in module.named_buffers():
        if b is None or id(b) in done or not b.is_floating_point():
            continue
        done.add(id(b))
        if owned is not None and b.dim() >= 1 and b.shape[0] == n_items:
            mask = owned.to(b.device).view(-1, *([1] * (b.dim() - 1)))
            merged = torch.where(mask, b, torch.zeros((), dtype=b.dtype, device=b.device))
            b.copy_(all_reduce_sum(merged))
        else:
            broadcast_(b, src=0)


@torch.no_grad()
def broadcast_buffers(module: nn.Module) -> None:
    """Overwrite ``module``'s floating-point buffers with rank 0's (start of training).

    Floating-point state computed on each rank (soft targets from a GPU aggregation, say)
    can differ in the last bits between ranks when the computation used atomic adds.
    """
    if world_size() == 1:
        return
    for b in module.buffers():
        if b is not None and b.is_floating_point():
            broadcast_(b, src=0)


def convert_sync_batchnorm(module: nn.Module) -> bool:
    """Replace ``module``'s BatchNorm layers by :class:`torch.nn.SyncBatchNorm`, in place,
    sharing their parameters and buffers; returns whether any was replaced."""
    found = False
    for name, child in list(module.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            sync = nn.SyncBatchNorm.convert_sync_batchnorm(child)
            sync._kdcrowd_original_class = type(child)  # type: ignore[assignment]
            setattr(module, name, sync)
            found = True
        else:
            found = convert_sync_batchnorm(child) or found
    return found


def revert_sync_batchnorm(module: nn.Module) -> None:
    """Undo :func:`convert_sync_batchnorm`: ``SyncBatchNorm`` layers back to the BatchNorm
    class they replaced (``BatchNorm2d`` for ones it did not make), sharing parameters and buffers."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.SyncBatchNorm):
            cls = getattr(child, "_kdcrowd_original_class", nn.BatchNorm2d)
            bn = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.weight, bn.bias = child.weight, child.bias
            bn.running_mean, bn.running_var, bn.num_batches_tracked = child.running_mean, child.running_var, child.num_batches_tracked
            bn.train(child.training)
            setattr(module, name, bn)
        else:
            revert_sync_batchnorm(child)
