"""Checkpoints: one fingerprint of a training, one way to diff settings, one digest.

Two levels, one module:

* a training's file (:attr:`kdcrowd.training.TrainConfig.checkpoint`), written by
  :func:`kdcrowd.training.fit` after finished epochs (at most every
  :attr:`~kdcrowd.training.TrainConfig.checkpoint_interval` seconds, the last epoch and an
  interrupted training's last finished epoch always) as a :func:`training_checkpoint`
  (module, optimiser, schedule, every random generator, the history) written by
  :func:`write_training_checkpoint`, and read back with
  :func:`read_training_checkpoint`, which refuses a file written with other settings
  (:func:`training_fingerprint`);
* a run's folder (:class:`StageCheckpoints`): one such file per training stage and
  ``state.json`` recording the finished stages and the run's settings.

Settings are compared as JSON values with :func:`differences`; data and modules are
identified by :func:`digest` / :func:`data_digest` / :func:`module_digest` (defined with the
models, :mod:`kdcrowd.models._common`, whose pretrained networks key their feature cache by it). Every file
is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed as D
from .config import _name
from .io import atomic_file, finite_json, json_default, save_torch, write_json
from .models._common import module_digest

__all__ = [
    "CHECKPOINT_FORMAT",
    "StageCheckpoints",
    "data_digest",
    "differences",
    "digest",
    "json_plain",
    "module_digest",
    "read_training_checkpoint",
    "saved_seed",
    "save_training_checkpoint",
    "training_checkpoint",
    "training_fingerprint",
    "write_training_checkpoint",
]


def json_plain(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, numpy scalars numbers, NaN
    and infinities null as :func:`~kdcrowd.io.write_json` writes them, other objects their
    type's name)."""

    def default(o: Any) -> Any:
        try:
            return json_default(o)
        except TypeError:
            return f"<{type(o).__module__}.{type(o).__qualname__}>"

    return json.loads(json.dumps(finite_json(obj), default=default))


def differences(a: Any, b: Any, path: str = "", skip: Sequence[str] = ()) -> list[str]:
    """Readable differences between two JSON-like values (``path: old → new``), leaving out
    the dotted paths in ``skip``."""
    if path in skip:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys()) for d in differences(a.get(k, "(absent)"), b.get(k, "(absent)"), f"{path}.{k}" if path else k, skip)]
    return [] if a == b else [f"{path}: {a!r} → {b!r}"]


#: A difference of a run's settings that is one option of the doors: a training setting, a
#: KD-Crowd setting (``run.options.X`` repeats KD-Crowd's ``framework.X``; its backbone,
#: teacher options and student parameters are not options of their own) or a run's own.
_OPTION_PATH = re.compile(r"run\.train\.(\w+)|framework\.(?!(?:backbone|teacher_options|student_params)$)(\w+)|run\.(backbone|method|seed|dataset|workers)")


def named_differences(diffs: Sequence[str]) -> list[str]:
    """:func:`differences` of a run's settings with each option named as the door names it
    (``--lr: 0.001 → 0.002`` on the command line, ``lr: …`` for the estimator), once: the
    copy of a KD-Crowd option under ``run.options`` is left out; other paths as they are."""
    out: list[str] = []
    named: set[str] = set()
    for d in diffs:
        path, _, change = d.partition(": ")
        if m := _OPTION_PATH.fullmatch(path):
            key = next(g for g in m.groups() if g)
            d = f"{_name(key)}: {change}"
            named.add(f"{key}: {change}")
        elif path.startswith("run.options.") and f"{path.removeprefix('run.options.')}: {change}" in named:
            continue
        elif path == "framework.backbone" and any(x.startswith("run.backbone: ") for x in diffs):  # KD-Crowd's copy of the run's
            continue
        if d not in out:
            out.append(d)
    return out


def digest(*arrays: Any) -> str:
    """A BLAKE2 digest of arrays' dtypes, shapes and bytes (``None`` entries included as such)."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        if a.dtype == object:
            h.update(repr(a.tolist()).encode())
        elif a.size:
            h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def data_digest(ds: Any) -> dict[str, Any]:
    """What identifies a data set for resuming: its name, the number of training items, and
    a digest of the training features, the annotations and the validation split."""
    ann = ds.annotations
    parts = [ds.x_train, ds.x_val, ds.y_val]
    parts += [None] * 3 if ann is None else [ann.item, ann.worker, ann.label]
    if getattr(ds, "gold", None) is not None:  # gold questions change every stage's targets
        parts.append(ds.gold)
    return {"name": ds.name, "n_train": len(ds.x_train), "digest": digest(*parts)}


def saved_seed(directory: str | Path | None) -> int | None:
    """The seed of the run whose checkpoints ``directory`` holds (its ``state.json``, see
    :class:`StageCheckpoints`), or ``None`` (no folder, none saved, or not readable: the
    folder's own check says why when the run resumes)."""
    if directory is None:
        return None
    try:
        seed = json.loads((Path(directory) / "state.json").read_text())["settings"]["run"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


class StageCheckpoints:
    """The checkpoint folder of one run (:attr:`kdcrowd.methods.RunConfig.checkpoint_dir`).

    Each training stage gets its own file ``<dir>/<stage>.pt`` (:attr:`TrainConfig.checkpoint`,
    written by :func:`~kdcrowd.training.fit` after finished epochs), and ``<dir>/state.json``
    tells a person where the run is::

        {"method": "kdcrowd", "stages": ["teacher", "student", "stage2"],
         "stage": "student", "finished": ["teacher"], "complete": false,
         "files": {"teacher": "teacher.pt", ...}, "settings": {...}}

    ``settings`` is the run configuration (without the progress file, the checkpoint
    folder and the progress bar) and a digest of the data (:func:`data_digest`) plus
    ``identity`` (anything else the stages depend on, such as a pre-trained teacher's
    digest). A folder whose ``state.json`` has other settings is refused with a
    ``ValueError`` before anything trains (one of a finished run is replaced where
    ``replace_finished``); each stage's file also checks its own training
    settings. Without ``checkpoint_dir`` nothing is written and :meth:`train_config`
    returns the settings unchanged. With distributed training, rank 0 writes ``state.json``
    and every rank checks it.

    Args:
        directory: the folder (``None``: no checkpoints, :meth:`train_config` returns
            the settings unchanged).
        method: the run's method name (shown in ``state.json``).
        settings: the run's settings as plain values (what must agree to resume).
        ds: the data set it trains on.
        stages: the stages that train, in order (a reused pre-trained teacher is not one).
        identity: further JSON-serialisable settings the stages depend on.
        distributed: whether every rank constructs it (rank 0 writes, all check).
        free: paths of choices made after the stages trained (``"run.<setting>"`` of
            ``settings``, or a path into ``identity``, such as KD-Crowd's
            ``"framework.final"``): they may change when resuming, and ``state.json`` keeps
            the new value.
        compared: the settings as they are compared, from the plain settings (the saved
            ones and these), e.g. options with their defaults filled in, so that writing
            out a default is the same run; ``state.json`` keeps them as given.
        replace_finished: a finished run (``complete``) of other settings is replaced (its
            ``<stage>.pt`` files deleted) instead of refused: a new fit in the folder of an
            earlier one (the estimator's refits and model-selection clones). Never for a
            resume, which must not start afresh.
    """

    def __init__(
        self, directory: str | Path | None, method: str, settings: dict[str, Any], ds: Any, stages: Sequence[str],
        identity: dict[str, Any] | None = None, distributed: bool = False, free: Sequence[str] = (),
        compared: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        replace_finished: bool = False,
    ) -> None:
        self.dir = Path(directory) if directory else None
        self.replace_finished = replace_finished
        self.free = tuple(free)
        self.compared = compared or (lambda s: s)
        self.stages: list[str] = list(stages)
        self.finished: list[str] = []
        self.current: str | None = None
        self.method = method
        if self.dir is None:
            return
        self.settings = json_plain({"run": settings, "data": data_digest(ds), **(identity or {})})
        error = self._check()
        if distributed:
            errors = D.all_gather_object(error)
            error = error or next((f"another process refused {self.dir}: {e}" for e in errors if e), None)
        if error:
            raise ValueError(error)
        self._write()

    @property
    def state_file(self) -> Path | None:
        """``<dir>/state.json`` (``None`` without a checkpoint folder)."""
        return None if self.dir is None else self.dir / "state.json"

    def _check(self) -> str | None:
        path = self.state_file
        assert path is not None
        if not path.exists():
            return None
        try:
            old = json.loads(path.read_text())
            settings = old["settings"]
            finished = old.get("finished", [])
            if not isinstance(finished, list) or not all(isinstance(f, str) for f in finished):
                raise TypeError(f"'finished' is {finished!r}, not a list of stage names")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            return f"{path} cannot be read ({type(e).__name__}: {e}); delete {self.dir} (or use a fresh output folder) to start afresh"
        diffs = differences(self.compared(settings), self.compared(self.settings), skip=self.free)
        if diffs and not finished and not any(self.dir.glob("*.pt")):
            return None  # a run that saved nothing (stopped or refused before its first epoch): nothing to keep, its settings are replaced
        if diffs and self.replace_finished and old.get("complete") is True:  # a finished run resumes nothing: its stage files make way
            stages = old.get("stages") if isinstance(old.get("stages"), list) else []
            for stage in stages:
                if isinstance(stage, str) and re.fullmatch(r"[A-Za-z0-9_-]+", stage) and D.is_main():
                    (self.dir / f"{stage}.pt").unlink(missing_ok=True)
            return None
        if diffs:
            diffs = named_differences(diffs)
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
            return (
                f"checkpoint folder {self.dir} belongs to a run with other settings ({shown}); "
                f"resume with the settings it was started with (if a head recipe chose them and this kdcrowd's recipe differs: head recipe 'shared' "
                f"and each value as the run had it), or delete {self.dir} (or use a fresh output folder) to start afresh"
            )
        self.finished = [s for s in finished if s in self.stages]
        return None

    def _write(self) -> None:
        if self.dir is None or not D.is_main():
            return
        write_json(self.dir / "state.json", durable=True, obj={
            "method": self.method,
            "stages": self.stages,
            "stage": self.current,
            "finished": self.finished,
            "complete": all(s in self.finished for s in self.stages),
            "files": {s: f"{s}.pt" for s in self.stages},
            "settings": self.settings,
        })

    def train_config(self, stage: str, train: Any) -> Any:
        """``train`` with stage ``stage``'s checkpoint file; records that ``stage`` is training now."""
        if self.dir is None:
            return train
        self.current = stage
        self._write()
        return replace(train, checkpoint=str(self.dir / f"{stage}.pt"))

    def finish(self, stage: str) -> None:
        """Record that ``stage`` finished."""
        if self.dir is None:
            return
        if stage not in self.finished:
            self.finished.append(stage)
        self.current = None
        self._write()


CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout written by :func:`fit`."""

#: TrainConfig fields a resumed training may change: how it shows and saves its progress,
#: and whether its steps are launched as CUDA graphs (the same computation either way).
NOT_FINGERPRINTED = ("progress", "checkpoint", "checkpoint_interval", "cuda_graph")


def training_fingerprint(module: nn.Module, data: Any, config: Any, desc: str, device: torch.device) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed: the settings (without
    :data:`NOT_FINGERPRINTED`: the progress bar, the checkpoint path and interval, CUDA graphs), ``desc``, the training items, the device type, the
    number of processes, and the names and shapes of the module's state."""
    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_FINGERPRINTED}
    return {
        "settings": settings,
        "desc": desc,
        "n_train": data.n_train,
        "device_type": device.type,
        "world_size": D.world_size() if config.distributed else 1,
        "state": [[k, list(v.shape)] for k, v in module.state_dict().items()],
    }


def _fingerprint_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Readable differences between two fingerprints (``what: saved → now``): the settings
    and scalars through :func:`differences`, the module state summarised."""
    out = differences(saved.get("settings", {}), now["settings"])
    out += differences({k: saved.get(k) for k in ("desc", "n_train", "device_type", "world_size")}, {k: now[k] for k in ("desc", "n_train", "device_type", "world_size")})
    a_state = {k: tuple(v) for k, v in saved.get("state", [])}
    b_state = {k: tuple(v) for k, v in now["state"]}
    if a_state != b_state:
        changed = [k for k in a_state.keys() & b_state.keys() if a_state[k] != b_state[k]]
        parts = [f"{len(a_state)} → {len(b_state)} entries"]
        if a_state.keys() - b_state.keys():
            parts.append(f"gone: {sorted(a_state.keys() - b_state.keys())[:3]}")
        if b_state.keys() - a_state.keys():
            parts.append(f"new: {sorted(b_state.keys() - a_state.keys())[:3]}")
        parts += [f"{k} {a_state[k]} → {b_state[k]}" for k in sorted(changed)[:3]]
        out.append("module state (names and shapes): " + ", ".join(parts))
    return out


def rng_states(device: torch.device, gen: torch.Generator, aug_gen: torch.Generator) -> dict[str, Any]:
    """This process's random generators: torch's global CPU (and CUDA) generator, the
    permutation and augmentation generators, numpy's legacy global generator and Python's."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "gen": gen.get_state(),
        "aug_gen": aug_gen.get_state() if aug_gen is not gen else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_states(state: dict[str, Any], device: torch.device, gen: torch.Generator | None = None, aug_gen: torch.Generator | None = None) -> None:
    """Restore what :func:`_rng_states` saved (``gen``/``aug_gen`` when given)."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    if gen is not None:
        gen.set_state(state["gen"])
    if aug_gen is not None and aug_gen is not gen and state.get("aug_gen") is not None:
        aug_gen.set_state(state["aug_gen"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])


def _plain(obj: Any) -> Any:
    """``obj`` with numpy scalars as Python numbers, so the checkpoint loads with ``weights_only``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def training_checkpoint(
    module: nn.Module, opt: torch.optim.Optimizer, sched: Any, log: Any, epochs: int, config: Any,
    fingerprint: dict[str, Any], seconds: float, device: torch.device, gen: torch.Generator, aug_gen: torch.Generator,
    timings: dict[str, float] | None = None, keep: bool = False,
) -> dict[str, Any] | None:
    """The checkpoint of the state after ``epochs`` finished epochs, as :func:`save_training_checkpoint`
    writes it (``None`` on the ranks other than 0, which do not write).

    ``keep``: the tensors are copies (on their device), so the payload keeps this state
    while training goes on, to be written later (:attr:`kdcrowd.training.TrainConfig.checkpoint_interval`);
    otherwise it refers to the live state and must be written at once.
    Distributed: every rank's random generators are gathered (a collective call)."""
    rng = rng_states(device, gen, aug_gen)
    every_rng = D.all_gather_object(rng) if config.distributed else [rng]
    if config.distributed and not D.is_main():
        return None
    live = (lambda obj: _copied(obj)) if keep else (lambda obj: obj)
    return {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "epochs": epochs,
        "complete": epochs >= config.epochs,
        "seconds": seconds,
        "timings": dict(timings or {}),  # seconds per part of the loop (FitResult.timings)
        "module": live(module.state_dict()),
        "optimizer": live(opt.state_dict()),  # its per-parameter state dicts are the optimiser's own
        "scheduler": copy.deepcopy(sched.state_dict()) if keep else sched.state_dict(),
        "log": _plain(log.state()),  # new containers; the best state is replaced, never changed in place
        "rng": every_rng,  # new tensors
    }


def _copied(obj: Any) -> Any:
    """``obj`` with new dicts, lists and tuples and its tensors cloned (on their device)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return type(obj)((k, _copied(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_copied(v) for v in obj)
    return obj


def save_training_checkpoint(path: Path, payload: dict[str, Any] | None) -> None:
    """Write a :func:`training_checkpoint` to ``path`` atomically and durably (a reader, or a
    run killed while writing, sees the previous checkpoint or this one, never half a file);
    ``None`` (a rank that does not write) writes nothing."""
    if payload is None:
        return
    with atomic_file(path, "wb", durable=True) as f:
        save_torch(payload, f)


def write_training_checkpoint(path: Path, payload: dict[str, Any] | None, config: Any, epochs: int) -> None:
    """Write ``payload`` (a :func:`training_checkpoint` of the state after ``epochs``
    finished epochs) with :func:`save_training_checkpoint`. :func:`kdcrowd.training.fit`
    holds the payload as its pending one until this returns, so an interrupt just after the
    write writes the same state again, never an older copy over it.

    Distributed: rank 0 writes, and after the last epoch all ranks wait for the write (so
    the file is complete when :func:`fit` returns on any rank)."""
    save_training_checkpoint(path, payload)
    if config.distributed and epochs == config.epochs:  # the last write must be complete before fit returns;
        D.barrier()  # earlier ones are waited for by the next epoch's gradient all-reduce


def read_training_checkpoint(path: Path, fingerprint: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``None`` when there is none), checked against ``fingerprint``.

    Raises ``ValueError`` naming the file and the fix when it cannot be read or was written
    with other settings. Distributed: every rank reads it, and the ranks check that they all
    found the same checkpoint (a folder not shared between nodes would split them)."""
    distributed = fingerprint["world_size"] > 1
    saved: dict[str, Any] | None = None
    error: str | None = None
    fresh = "delete it (or its folder) to start this training afresh"
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            error = f"checkpoint {path} cannot be read: it holds something other than tensors and plain values ({str(e).splitlines()[0]}); {fresh}"
        except Exception as e:  # noqa: BLE001 - a truncated or damaged archive raises RuntimeError, EOFError, OSError, ...
            error = f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'damaged file'}); it is damaged or not a kdcrowd checkpoint: {fresh}"
        if saved is not None and not (isinstance(saved, dict) and saved.get("format") == CHECKPOINT_FORMAT and "fingerprint" in saved):
            error = f"checkpoint {path} is not a kdcrowd training checkpoint (format {CHECKPOINT_FORMAT}); {fresh}"
        elif saved is not None:
            diffs = _fingerprint_differences(saved["fingerprint"], fingerprint)
            if diffs:
                error = (
                    f"checkpoint {path} was written by a training with other settings ({'; '.join(diffs)}); "
                    f"resume with the settings it was started with, or delete {path.parent} (or use a fresh output folder) to start afresh"
                )
    if distributed:
        mine = -2 if error else (-1 if saved is None else int(saved["epochs"]))
        every = D.all_gather_rows(torch.tensor([mine], dtype=torch.int64, device=device)).tolist()
        if error is None and -2 in every:
            error = f"checkpoint {path}: another process could not use it (finished epochs per rank, -2 = error: {every}); see its error"
        elif error is None and len(set(every)) > 1:
            error = (
                f"checkpoint {path}: the {len(every)} processes found different checkpoints (finished epochs per rank, -1 = none: {every}); "
                "put the checkpoint folder on a file system every process sees"
            )
    if error:
        raise ValueError(error)
    return saved
