"""``TrainConfig.cuda_graph`` on the CPU: the option of every door, its errors and its note,
and the routing of :mod:`kdcrowd.cuda_graphs` with an injected stand-in for the CUDA graph
capture (which runs the captured module eagerly after warm-up passes that change its
batch-norm statistics and draw random numbers, as a real capture's warm-ups do)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from kdcrowd import cuda_graphs, training
from kdcrowd.checkpoint import training_fingerprint
from kdcrowd.cli import app
from kdcrowd.config import ConfigError
from kdcrowd.cuda_graphs import WARMUP_ITERS, CudaGraphs, backbones_of
from kdcrowd.doors import door_defaults, door_options
from kdcrowd.estimator import KDCrowdClassifier
from kdcrowd.methods import run_on_dataset
from kdcrowd.models.backbones import MLP
from kdcrowd.objectives import SupervisedObjective
from kdcrowd.students import CoTeachingStudent, StudentObjective
from kdcrowd.training import DeviceData, TrainConfig, fit

from test_methods import assert_same_numbers, cfg, tiny_dataset

runner = CliRunner()
CPU = torch.device("cpu")


class FakeCapture:
    """A stand-in for :func:`kdcrowd.cuda_graphs.capture_cuda_graph`: warm-up passes with
    side effects (batch-norm statistics, dropout's and an explicit draw of the CPU
    generator), then "replays" that run the captured module eagerly, counted."""

    def __init__(self) -> None:
        self.captured: list[tuple[int, ...]] = []
        self.replays = 0

    def __call__(self, outputs: nn.Module, sample: torch.Tensor) -> Callable[[torch.Tensor], tuple[torch.Tensor, ...]]:
        self.captured.append(tuple(sample.shape))
        params = [p for p in outputs.parameters() if p.requires_grad]
        for _ in range(WARMUP_ITERS):
            outs = [o for o in outputs(sample) if o.requires_grad]
            torch.autograd.grad(outs, params, [torch.randn_like(o) for o in outs], allow_unused=True)

        def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            self.replays += 1
            return outputs(x)  # type: ignore[no-any-return]

        return run


def _inject(monkeypatch: pytest.MonkeyPatch) -> FakeCapture:
    """``fit`` makes its graphs with a :class:`FakeCapture` on the CPU."""
    fake = FakeCapture()
    monkeypatch.setattr(training, "_cuda_graphs", lambda module, device, config: CudaGraphs(module, device, capture=fake) if config.cuda_graph else None)
    return fake


def _objective(seed: int = 0, d: int = 6, k: int = 3, n: int = 40) -> SupervisedObjective:
    torch.manual_seed(seed)
    net = MLP(d, k, hidden=(16,), dropout=0.3)
    return SupervisedObjective(net, torch.randint(0, k, (n,)))


# ----------------------------------------------------------------------------- the option


def test_cuda_graph_is_an_option_of_every_door_off_by_default() -> None:
    assert TrainConfig().cuda_graph is False
    assert "cuda_graph" in {o.name for o in door_options()} and door_defaults()["cuda_graph"] is False
    assert KDCrowdClassifier().get_params()["cuda_graph"] is False
    for command in ("run", "fit"):
        r = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert "--cuda-graph" in r.output, command


@pytest.mark.parametrize("other", [{"distributed": True}, {"compile": True}, {"distributed": True, "compile": True}])
def test_cuda_graph_with_distributed_or_compile_is_one_error_naming_both(other: dict) -> None:
    with pytest.raises(ConfigError) as e:
        TrainConfig(cuda_graph=True, **other)
    msg = str(e.value)
    assert msg.startswith("cuda_graph cannot be combined with") and all(k in msg for k in other), msg
    TrainConfig(cuda_graph=False, **other)  # each alone is fine


def test_the_command_line_names_the_flags(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", "--dataset", "tiny", "--out", str(tmp_path / "o"), "--epochs", "1", "--cuda-graph", "--compile"])
    assert r.exit_code == 2 and "--cuda-graph cannot be combined with --compile" in r.output and "Traceback" not in r.output, r.output


def test_a_checkpoint_resumes_with_cuda_graph_switched() -> None:
    data = DeviceData(torch.randn(8, 6).numpy(), None, None, None, None, CPU)
    on, off = (training_fingerprint(_objective(), data, TrainConfig(cuda_graph=g), "train", CPU) for g in (True, False))
    assert on == off and "cuda_graph" not in on["settings"]


def test_on_the_cpu_it_is_a_note_and_changes_nothing(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_graphs, "_NOTED", set())
    ds = tiny_dataset()
    plain, plain_out = run_on_dataset(ds, cfg("maxmig"))
    capsys.readouterr()
    runs = []
    for _ in range(2):
        c = cfg("maxmig")
        c.train = replace(c.train, cuda_graph=True)
        runs.append(run_on_dataset(ds, c))
    err = capsys.readouterr().err
    assert err.count("note: cuda_graph needs a CUDA device; training on cpu without CUDA graphs") == 1, err  # once per process
    from kdcrowd.config import cli_style, option_style

    monkeypatch.setattr(cuda_graphs, "_NOTED", set())
    with option_style(cli_style):  # the command line names its option
        cuda_graphs.note_without_cuda(CPU)
    assert "note: --cuda-graph needs a CUDA device" in capsys.readouterr().err
    for metrics, out in runs:
        assert_same_numbers(metrics, out.module.state_dict(), plain, plain_out.module.state_dict())
        assert out.fit.cuda_graphs == {}
        assert "forward" not in vars(out.module.model.backbone)


# ----------------------------------------------------------------------------- the routing


def test_backbones_are_found_by_attribute_name_outermost_once() -> None:
    obj = _objective()
    assert backbones_of(obj) == [obj.backbone]
    mk = lambda: MLP(6, 3, hidden=(8,))  # noqa: E731
    student = CoTeachingStudent(mk(), 40, 3, backbone_b=mk())
    so = StudentObjective(student, torch.zeros(40, dtype=torch.long), None, None, 0.0)
    assert backbones_of(so) == [student.backbone, student.backbone_b]
    assert backbones_of(nn.Sequential(nn.Linear(2, 2))) == []


def test_wrapping_leaves_the_state_dict_and_parameters_alone_and_is_undone() -> None:
    obj = _objective()
    keys = list(obj.state_dict())
    params = list(obj.parameters())
    graphs = CudaGraphs(obj, CPU, capture=FakeCapture())
    assert list(obj.state_dict()) == keys and list(obj.parameters()) == params
    assert isinstance(vars(obj.backbone)["forward"], cuda_graphs.GraphedForward) and "backbone" not in dict(obj.backbone.named_children())
    graphs.next_step()
    obj.training_loss(torch.randn(8, 6), torch.arange(8), 0).backward()
    assert list(obj.state_dict()) == keys and list(obj.parameters()) == params
    graphs.remove()
    assert "forward" not in vars(obj.backbone) and "graphed_logits_and_features" not in vars(obj.backbone)
    copy.deepcopy(obj)  # nothing of the graphs is left on it


def test_only_the_first_steps_signature_in_training_mode_with_gradients_replays() -> None:
    obj = _objective()
    bb = obj.backbone
    fake = FakeCapture()
    graphs = CudaGraphs(obj, CPU, capture=fake)
    stats = graphs.stats
    x8, x5 = torch.randn(8, 6), torch.randn(5, 6)
    bb(x8)  # before the first step: nothing is captured
    assert fake.captured == [] and stats.module_calls == 1
    graphs.next_step()
    bb(x8)
    assert fake.captured == [(8, 6)] and fake.replays == 1 and stats.graphs == 1
    bb(x8)  # a second call of the signature within the step: its saved activations must survive until the backward
    assert fake.replays == 1 and stats.module_calls == 2
    bb(x5)  # a new signature in the first step is captured too
    assert fake.captured == [(8, 6), (5, 6)] and fake.replays == 2
    graphs.next_step()
    bb(torch.randn(3, 6))  # after the first step: the module
    assert len(fake.captured) == 2 and fake.replays == 2
    bb(x8)
    bb(x5)
    assert fake.replays == 4
    graphs.next_step()
    with torch.no_grad():
        bb(x8)
    bb.eval()
    bb(x8)
    bb.train()
    assert fake.replays == 4  # no-grad and eval-mode passes run the module
    bb(x8.clone().requires_grad_())  # an input that needs its gradient: another signature
    assert fake.replays == 4
    bb(x8)
    assert fake.replays == 5 and stats.replays == 5 and stats.graphs == 2 and len(stats.signatures) == 2


@pytest.mark.parametrize("change", ["hook", "global-hook", "buffer-swapped", "submodule-mode", "parameter-storage"])
def test_a_module_changed_since_capture_runs_eagerly(change: str) -> None:
    obj = _objective()
    bb = obj.backbone
    fake = FakeCapture()
    graphs = CudaGraphs(obj, CPU, capture=fake)
    x = torch.randn(8, 6)
    graphs.next_step()
    bb(x)
    bn = next(m for m in bb.modules() if isinstance(m, nn.BatchNorm1d))
    lin = next(m for m in bb.modules() if isinstance(m, nn.Linear))
    undo: Callable[[], None]
    if change == "hook":
        undo = lin.register_forward_hook(lambda *a: None).remove
    elif change == "global-hook":
        undo = nn.modules.module.register_module_forward_pre_hook(lambda *a: None).remove
    elif change == "buffer-swapped":  # as annot-mix's _running_stats_kept does
        kept = bn.running_mean
        bn.running_mean = kept.clone()
        undo = lambda: setattr(bn, "running_mean", kept)  # noqa: E731
    elif change == "submodule-mode":
        bn.eval()
        undo = bn.train
    else:
        old = lin.weight.data
        lin.weight.data = old.clone()
        undo = lambda: setattr(lin.weight, "data", old)  # noqa: E731
    graphs.next_step()
    bb(x)
    assert fake.replays == 1
    undo()
    graphs.next_step()
    bb(x)
    assert fake.replays == 2


def test_the_capture_leaves_statistics_and_generators_as_they_were() -> None:
    """A step whose pass is captured then replayed equals the eager step: the warm-ups'
    batch-norm updates and random draws are undone."""
    obj = _objective()
    ref = copy.deepcopy(obj)
    graphs = CudaGraphs(obj, CPU, capture=FakeCapture())
    x = torch.randn(8, 6)
    outs = []
    for m in (ref, obj):
        torch.manual_seed(7)
        graphs.next_step()
        loss = m.training_loss(x, torch.arange(8), 0)
        loss.backward()
        outs.append((loss.detach(), torch.rand(3), {k: v.clone() for k, v in m.state_dict().items()}, [p.grad.clone() for p in m.parameters()]))
    (l0, r0, s0, g0), (l1, r1, s1, g1) = outs
    assert torch.equal(l0, l1) and torch.equal(r0, r1)
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))


def test_the_features_of_a_graphed_pass_are_the_heads_input() -> None:
    obj = _objective()
    bb = obj.backbone
    graphs = CudaGraphs(obj, CPU, capture=FakeCapture())
    x = torch.randn(8, 6)
    assert bb.graphed_logits_and_features(x) is None  # not captured (before the first step): the caller reads them its own way
    graphs.next_step()
    torch.manual_seed(1)
    logits, feats = bb.graphed_logits_and_features(x)
    assert feats.shape == (8, bb.feature_dim)
    torch.testing.assert_close(bb.head(feats), logits)
    assert bb.graphed_logits_and_features(x) is None  # once per step


@pytest.mark.parametrize("method,options", [("mv", {}), ("maxmig", {}), ("annot-mix", {}), ("annot-mix", {"joint_pass": False}), ("kdcrowd", {"teacher": "annot-mix", "student": "coteaching"})])
def test_runs_with_injected_graphs_equal_the_eager_runs_bit_for_bit(method: str, options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = tiny_dataset()  # 120 training items in batches of 32: the last one (24) runs the module
    eager, eager_out = run_on_dataset(ds, cfg(method, **options))
    fake = _inject(monkeypatch)
    c = cfg(method, **options)
    c.train = replace(c.train, cuda_graph=True)
    graphed, out = run_on_dataset(ds, c)
    assert_same_numbers(graphed, out.module.state_dict(), eager, eager_out.module.state_dict())
    stats = out.fit.cuda_graphs
    assert fake.replays > 0 and stats["graphs"] >= 1 and stats["replays"] > 0 and stats["module_calls"] > 0, stats
    if method == "annot-mix" and options.get("joint_pass", True):
        # each batch and its mixed copy in one pass (three labels per item here: 32 + 96 rows), 3 full steps of 4 per epoch
        assert stats["signatures"] == ["[128, 6] stride [6, 1] float32"] and stats == {**stats, "replays": 6, "module_calls": 2}, stats
