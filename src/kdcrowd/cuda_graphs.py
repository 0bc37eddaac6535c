"""CUDA graphs of the backbones' training passes (:attr:`kdcrowd.training.TrainConfig.cuda_graph`).

A protocol step (ResNet-18 on 32-px images, batch 128, bf16) is host-bound: about 500
kernel launches, most of them in the backbone's forward and backward, take longer to
issue than to run (docs/RESULTS.md §7g). With ``cuda_graph`` the backbone's training-mode
forward and backward are each captured once as a CUDA graph
(:func:`torch.cuda.make_graphed_callables`) and replayed as one launch; the rest of the
step (the loss, the crowd model's worker parts, the optimiser) runs as before.

How :func:`~kdcrowd.training.fit` uses it (:class:`CudaGraphs`):

* the backbones are the modules the trainable holds under an attribute named
  ``backbone`` or ``backbone_<x>`` (a crowd model's, a student's, co-teaching's second
  network), outermost only. Each gets a :class:`GraphedForward` as its *instance*
  ``forward`` for the duration of the fit: the module itself stays where it is and keeps
  owning its parameters and buffers, so ``state_dict``, checkpoints, the best-state copies
  and every other reference to it are unchanged; the attribute is deleted when the fit
  ends (also after an error);
* a graph is captured during the first optimisation step of the fit, for each input
  signature a backbone sees there in training mode with gradients on (shape, strides,
  dtype, ``requires_grad`` and the autocast state: ``(128, 3, 32, 32)`` channels-last bf16
  for ``mv`` and Max-MIG, ``(256, 3, 32, 32)`` for annot-mix's joint pass over the batch and
  its mixed copy). That is after the data-dependent initialisation (airbench's whitening)
  and before the optimiser's first step. Later calls with the same signature replay it; any
  other call runs the module as usual: eval mode (validation, prediction), no-grad passes,
  the last, smaller batch of an epoch, a second call of the same signature within one step
  (the graph's saved activations must survive until that step's backward), and every call
  while the module is not as it was at capture (a submodule's training flag, a hook
  registered on any submodule or globally, a parameter or buffer replaced, e.g. by
  annot-mix's ``_running_stats_kept``);
* the capture runs under the caller's autocast settings with the autocast cache disabled
  (required by :func:`torch.cuda.make_graphed_callables`), on a clone of the real input
  with its memory format (channels-last). Its warm-up passes (:data:`WARMUP_ITERS`) run
  the module on that input: they leave the parameters and their ``.grad`` alone
  (``torch.autograd.grad``), and the buffers (batch-norm running statistics and counters)
  and torch's CPU and CUDA generators are restored afterwards, so the step that captured
  then replays its graph as if nothing had happened. The graph updates the batch-norm
  buffers in place, as the module does;
* the graphed forward also returns the input of the backbone's ``head`` (the penultimate
  features), which crowd models read through
  :meth:`~kdcrowd.models.base.CrowdModel._batch_logits_and_features` (annot-mix); its
  gradient is zero when the loss does not use it (annot-mix detaches it), which adds an
  exact zero to the head's input gradient.

What stays different from the eager step: nothing in what is computed (the same kernels
on the same inputs, in the same order); outputs of a replay are the graph's static tensors,
overwritten by the next replay of that graph (a step uses them within the step, as the
loop does). Whether a run with graphs equals the eager run bit for bit is measured by
``benchmarks/check_cuda_graph.py`` (CUDA kernels with atomics differ from run to run
anyway; the script also repeats the eager run to show that floor).

Refused with ``distributed`` (DDP's gradient hooks and buffer broadcasts run outside a
graph) and with ``compile`` (torch.compile has its own graphs); a no-op on the CPU, with
one note on stderr (:func:`note_without_cuda`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

from .config import _name as option_name

__all__ = ["CudaGraphs", "GraphedForward", "GraphStats", "Capture", "WARMUP_ITERS", "backbones_of", "call_signature", "capture_cuda_graph", "note_without_cuda"]

#: Warm-up passes of a capture (:func:`torch.cuda.make_graphed_callables`' default).
WARMUP_ITERS = 3

#: Attribute names under which a trainable holds its backbones (``backbone_b``: co-teaching).
BACKBONE_PREFIX = "backbone"

_NOTED: set[str] = set()


def note_without_cuda(device: torch.device) -> None:
    """One line on stderr, once per process and device type, saying that ``cuda_graph`` is
    ignored on ``device``."""
    if device.type in _NOTED:
        return
    _NOTED.add(device.type)
    print(f"note: {option_name('cuda_graph')} needs a CUDA device; training on {device.type} without CUDA graphs", file=sys.stderr)  # --cuda-graph on the command line


def backbones_of(module: nn.Module) -> list[nn.Module]:
    """The backbones of a trainable: its submodules held under an attribute named
    ``backbone`` or ``backbone_<x>`` (outermost only, each module once)."""
    out: list[nn.Module] = []
    prefixes: list[str] = []
    for name, m in module.named_modules(remove_duplicate=True):
        last = name.rsplit(".", 1)[-1]
        if not (last == BACKBONE_PREFIX or last.startswith(BACKBONE_PREFIX + "_")):
            continue
        if any(name.startswith(p + ".") for p in prefixes) or any(m is b for b in out):
            continue
        out.append(m)
        prefixes.append(name)
    return out


def call_signature(x: torch.Tensor) -> tuple[Any, ...]:
    """What a graph is captured for and replayed on: the input's shape, strides, dtype,
    device and ``requires_grad``, and the CUDA autocast state (enabled, dtype)."""
    return (tuple(x.shape), x.stride(), x.dtype, x.device, x.requires_grad, torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"))


class _Watch:
    """What a graph depends on besides its input: every submodule's training flag, the
    absence of hooks (on any submodule, or global ones), the identity of every parameter,
    buffer and child module, and the storage of every parameter and buffer.
    :meth:`holds` says whether all of it is as it was when this was made (some 20-40 µs for
    ResNet-18's 62 modules, once per call)."""

    def __init__(self, root: nn.Module) -> None:
        modules = list(root.modules())
        self.flags = [(m, m.training) for m in modules]
        self.objects: list[tuple[dict[str, Any], str, Any]] = [(d, k, v) for m in modules for d in (m._parameters, m._buffers, m._modules) for k, v in d.items()]
        self.tensors = [t for m in modules for d in (m._parameters, m._buffers) for t in d.values() if t is not None]
        self.pointers = [t.data_ptr() for t in self.tensors]

    def holds(self) -> bool:
        g = _nn_module
        if g._global_forward_hooks or g._global_forward_pre_hooks or g._global_backward_hooks or g._global_backward_pre_hooks:
            return False
        for m, training in self.flags:
            if m.training is not training or m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
                return False
        for d, k, v in self.objects:
            if d.get(k) is not v:
                return False
        return [t.data_ptr() for t in self.tensors] == self.pointers


class _Outputs(nn.Module):
    """What is captured: the backbone's own ``forward`` (not the graphed one installed on
    it), returning ``(logits, head input)``, or ``(logits,)`` when the backbone has no
    ``head`` module or does not call it. Holds the backbone as its submodule, so its
    parameters are the graph's inputs; it is attached to nothing else."""

    def __init__(self, backbone: nn.Module, eager: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.backbone = backbone
        self.eager = eager
        self.n_outputs = 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        head = getattr(self.backbone, "head", None)
        seen: list[torch.Tensor] = []
        handle = head.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0])) if isinstance(head, nn.Module) else None
        try:
            logits = self.eager(x)
        finally:
            if handle is not None:
                handle.remove()
        out = (logits, seen[-1]) if seen else (logits,)
        self.n_outputs = len(out)
        return out


#: ``capture(outputs, sample) -> run``: a function that runs ``outputs``' forward and
#: backward on inputs of ``sample``'s signature (:func:`capture_cuda_graph`; the tests
#: give a fake one on the CPU).
Capture = Callable[[nn.Module, torch.Tensor], Callable[[torch.Tensor], tuple[torch.Tensor, ...]]]


def capture_cuda_graph(outputs: nn.Module, sample: torch.Tensor) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
    """:func:`torch.cuda.make_graphed_callables` of ``outputs`` on ``sample`` (which becomes
    the graph's static input), under the caller's CUDA autocast settings with the autocast
    cache disabled; returns the graphed forward."""
    autocast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
    with autocast:
        graphed = torch.cuda.make_graphed_callables(outputs, (sample,), num_warmup_iters=WARMUP_ITERS, allow_unused_input=True)
    return graphed.forward  # type: ignore[no-any-return]  # the graphed forward, without Module.__call__


@dataclass
class _Graph:
    """One captured signature of a backbone."""

    run: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    outputs: nn.Module
    watch: _Watch
    has_features: bool
    last_step: int = -1

    def release(self) -> None:
        """Break the cycle :func:`torch.cuda.make_graphed_callables` leaves (the captured
        module's ``forward`` closes over the module), so that the graphs and their memory
        pool go when the last reference does, without waiting for the garbage collector."""
        vars(self.outputs).pop("forward", None)


@dataclass
class GraphStats:
    """How a fit's backbones ran: graphs captured, replays, and training passes (training
    mode, gradients on) that ran the module itself."""

    graphs: int = 0
    replays: int = 0
    module_calls: int = 0
    signatures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"graphs": self.graphs, "replays": self.replays, "module_calls": self.module_calls, "signatures": list(self.signatures)}


class GraphedForward:
    """A backbone's ``forward`` while a fit with ``cuda_graph`` runs (its instance
    attribute): replays the graph of a call's signature when :meth:`_route` allows it, else
    calls the backbone's own ``forward``. :meth:`logits_and_features` is installed as the
    backbone's ``graphed_logits_and_features``."""

    def __init__(self, backbone: nn.Module, owner: CudaGraphs) -> None:
        self.backbone = backbone
        self.owner = owner
        self.had_forward = "forward" in backbone.__dict__
        self.eager: Callable[..., torch.Tensor] = backbone.forward
        self.graphs: dict[tuple[Any, ...], _Graph] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        graph = self._route(args, kwargs, features=False)
        if graph is None:
            return self.eager(*args, **kwargs)
        return graph.run(args[0])[0]

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(logits, head input)`` from the graph of ``x``'s signature, or ``None`` when the
        call must run the module (the caller then reads the features its own way)."""
        graph = self._route((x,), {}, features=True)
        if graph is None:
            return None
        logits, feats = graph.run(x)
        return logits, feats

    def _route(self, args: tuple[Any, ...], kwargs: dict[str, Any], features: bool) -> _Graph | None:
        """The graph to replay for this call (captured now when allowed), or ``None``."""
        x = args[0] if len(args) == 1 and not kwargs else None
        if not (isinstance(x, torch.Tensor) and x.device == self.owner.device and self.backbone.training and torch.is_grad_enabled()):
            return None
        key = call_signature(x)
        graph = self.graphs.get(key)
        if graph is None and self.owner.capturing:
            watch = _Watch(self.backbone)
            if watch.holds():
                graph = self.graphs[key] = self._capture(x, watch)
                self.owner.stats.graphs += 1
                self.owner.stats.signatures.append(_describe(key))
        if graph is None or graph.last_step == self.owner.step or (features and not graph.has_features) or not graph.watch.holds():
            if not features:  # (a caller of logits_and_features then calls the module through forward)
                self.owner.stats.module_calls += 1
            return None
        graph.last_step = self.owner.step
        self.owner.stats.replays += 1
        return graph

    def _capture(self, x: torch.Tensor, watch: _Watch) -> _Graph:
        """Capture the backbone's forward and backward on a clone of ``x`` (see the module
        docstring), leaving its buffers and the global generators as they were."""
        outputs = _Outputs(self.backbone, self.eager)
        sample = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            sample.copy_(x)
        sample.requires_grad_(x.requires_grad)
        buffers = list(self.backbone.buffers())
        saved = [b.detach().clone() for b in buffers]
        cuda_gen = torch.cuda.default_generators[x.device.index if x.device.index is not None else torch.cuda.current_device()] if x.is_cuda else None
        cpu_state = torch.get_rng_state()
        cuda_state = cuda_gen.get_state() if cuda_gen is not None else None
        try:
            run = self.owner.capture(outputs, sample)
        except RuntimeError as e:
            raise RuntimeError(
                f"cuda_graph: the training pass of {type(self.backbone).__name__} on a {tuple(x.shape)} batch could not be captured as a "
                f"CUDA graph ({e}); a backbone whose forward or backward synchronises with the host or changes shapes cannot be graphed: "
                "train without cuda_graph"
            ) from e
        finally:
            with torch.no_grad():
                for b, s in zip(buffers, saved):
                    b.copy_(s)
            torch.set_rng_state(cpu_state)
            if cuda_gen is not None:
                cuda_gen.set_state(cuda_state)
        return _Graph(run, outputs, watch, has_features=outputs.n_outputs == 2)


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` as ``cuda:<current device>`` (a tensor's device always has its index)."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _describe(key: tuple[Any, ...]) -> str:
    shape, stride, dtype, _, requires_grad, amp, amp_dtype = key
    return f"{list(shape)} stride {list(stride)} {str(dtype).removeprefix('torch.')}" + (" requires_grad" if requires_grad else "") + (f" autocast {str(amp_dtype).removeprefix('torch.')}" if amp else "")


class CudaGraphs:
    """The graphed backbones of one :func:`~kdcrowd.training.fit` (see the module
    docstring). :meth:`next_step` before each optimisation step; :meth:`remove` at the end.

    Args:
        module: the trainable; its backbones are :func:`backbones_of` it.
        device: where the training runs; calls on other devices run the module.
        capture: how a graph is made (:func:`capture_cuda_graph`; the tests inject a fake
            one to check the routing on the CPU).
    """

    def __init__(self, module: nn.Module, device: torch.device, capture: Capture = capture_cuda_graph) -> None:
        self.device = _indexed(device)
        self.capture = capture
        self.step = 0
        self.stats = GraphStats()
        self.forwards: list[GraphedForward] = []
        for bb in backbones_of(module):
            fwd = GraphedForward(bb, self)
            self.forwards.append(fwd)
            bb.forward = fwd  # type: ignore[method-assign]  # an instance attribute: no new submodule, the same state dict
            bb.graphed_logits_and_features = fwd.logits_and_features  # type: ignore[assignment]

    @property
    def capturing(self) -> bool:
        """Whether calls with a new signature are captured (during the first step)."""
        return self.step == 1

    def next_step(self) -> None:
        """An optimisation step begins: each graph may replay once until the next one."""
        self.step += 1

    def remove(self) -> None:
        """Give every backbone its own ``forward`` back and drop the graphs."""
        for fwd in self.forwards:
            bb = fwd.backbone
            del bb.graphed_logits_and_features
            if fwd.had_forward:
                bb.forward = fwd.eager  # type: ignore[method-assign]
            else:
                del bb.forward
            for graph in fwd.graphs.values():
                graph.release()
            fwd.graphs.clear()
        self.forwards = []
