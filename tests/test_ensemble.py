"""KD-Crowd's ensemble of the student and stage 2 (``final="ensemble"``): its prediction
is the mean softmax of their networks, in every door (the runner's evaluation, the
estimator, a model file), and every two-stage run reports it beside the stages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kdcrowd import metrics as M
from kdcrowd.config import ConfigError
from kdcrowd.estimator import KDCrowdClassifier
from kdcrowd.framework import KDCrowd
from kdcrowd.methods import run_on_dataset
from kdcrowd.objectives import Ensemble, SupervisedObjective, predictor_networks
from kdcrowd.students import StudentObjective, build_student
from kdcrowd.training import predict_proba
from test_methods import cfg, tiny_dataset


def test_the_ensemble_averages_the_softmax_of_every_network() -> None:
    torch.manual_seed(0)
    make = lambda: nn.Linear(4, 3)  # noqa: E731
    plain = SupervisedObjective(make(), torch.zeros(5, dtype=torch.long))
    coteach = StudentObjective(build_student("coteaching", make, 5, 3), torch.zeros(5, dtype=torch.long), None, None, 0.0)
    ens = Ensemble([plain, coteach])
    nets = predictor_networks(ens)
    assert [id(n) for n in nets] == [id(plain.backbone), id(coteach.student.backbone), id(coteach.student.backbone_b)]
    x = torch.randn(7, 4)
    by_hand = sum(torch.softmax(n(x), -1) for n in nets) / 3  # each network once: the co-teaching student brings two
    torch.testing.assert_close(ens.predict_proba(x), by_hand)
    assert not torch.allclose(ens.predict_proba(x), (plain.predict_proba(x) + coteach.predict_proba(x)) / 2)
    # each member predicts as it predicts (a student with its own predict_proba keeps it)
    sharpened = SupervisedObjective(make(), torch.zeros(5, dtype=torch.long))
    sharpened.predict_proba = lambda x: torch.softmax(3 * sharpened.backbone(x), -1)  # type: ignore[method-assign]
    torch.testing.assert_close(Ensemble([sharpened, plain]).predict_proba(x), (sharpened.predict_proba(x) + plain.predict_proba(x)) / 2)
    # its state is its members', under members.<i>.
    state = Ensemble.state([plain.state_dict(), coteach.state_dict()])
    assert set(state) == set(ens.state_dict())
    ens.load_state_dict(state)
    with pytest.raises(ValueError, match="at least two"):
        Ensemble([plain])


@pytest.mark.parametrize("final", ["ensemble", "ensemble-all"])
def test_final_ensemble_needs_two_stages(final: str) -> None:
    with pytest.raises(ConfigError, match=f"final='{final}' needs stages=2"):
        KDCrowd(stages=1, final=final)


def test_the_ensemble_of_every_network_averages_the_teacher_the_student_and_stage2() -> None:
    """``final="ensemble-all"``: the teacher's classifier too, each member in the state the
    runner evaluates (its last epoch, then its validation-selected epoch)."""
    ds = tiny_dataset(case="hammer-spammer", seed=1)
    metrics, out = run_on_dataset(ds, cfg("kdcrowd", epochs=4, teacher="crowdlayer-mw", final="ensemble-all"))
    st = metrics["stages"]
    assert metrics["final_stage"] == "ensemble-all" and isinstance(out.module, Ensemble) and len(out.module.members) == 3
    assert set(st) == {"teacher", "student", "stage2", "ensemble", "ensemble-all"}
    for key in ("test_accuracy", "test_accuracy_val_selected", "val_last", "val_best"):
        assert metrics[key] == st["ensemble-all"][key], key
    # its training time is its three members'
    assert metrics["train_seconds"] == pytest.approx(st["teacher"]["seconds"] + st["student"]["seconds"] + st["stage2"]["seconds"]) and st["ensemble-all"]["seconds"] == 0
    teacher, student, stage2 = out.module.members
    data = out.data
    for state, key in (("best_state", "test_accuracy_val_selected"), ("final_state", "test_accuracy")):
        out.module.load_state_dict(getattr(out.fit, state))
        p = sum(predict_proba(m, data, data.x_test) for m in (teacher, student, stage2)) / 3
        assert metrics[key] == M.accuracy(p.numpy(), ds.y_test), key
    # the default run trains the same stages and reports this ensemble beside them
    default, _ = run_on_dataset(ds, cfg("kdcrowd", epochs=4, teacher="crowdlayer-mw"))
    assert all(default["stages"]["ensemble-all"][k] == st["ensemble-all"][k] for k in ("test_accuracy", "test_accuracy_val_selected", "val_last", "val_best"))
    # its members are the stages' own networks: the teacher member alone predicts as the teacher stage
    out.module.load_state_dict(out.fit.final_state)
    assert M.accuracy(predict_proba(teacher, data, data.x_test).numpy(), ds.y_test) == st["teacher"]["test_accuracy"]


def test_the_ensemble_of_every_network_needs_the_teachers_module(tmp_path) -> None:
    from kdcrowd.teacher_outputs import TeacherOutputs

    ds = tiny_dataset(n=120)
    fw = KDCrowd(teacher="crowdlayer-mw", final="ensemble-all")
    n, k = ds.x_train.shape[0], ds.n_classes
    uniform = np.full((n, k), 1 / k, np.float32)
    saved = TeacherOutputs(proba=uniform, posterior=uniform, transitions=np.tile(np.eye(k, dtype=np.float32), (ds.annotations.n_workers, 1, 1)), best_val_accuracy=None, fingerprint={})
    with pytest.raises(ValueError, match="final='ensemble-all' averages the teacher's network too.*use final='ensemble'"):
        fw.fit(ds, None, None, teacher_outputs=saved)  # refused before anything is read or trained


def test_the_runner_evaluates_the_ensemble_of_the_student_and_stage2() -> None:
    ds = tiny_dataset(case="hammer-spammer", seed=1)
    metrics, out = run_on_dataset(ds, cfg("kdcrowd", epochs=4, teacher="crowdlayer-mw", final="ensemble"))
    st = metrics["stages"]
    assert metrics["final_stage"] == "ensemble" and isinstance(out.module, Ensemble)
    for key in ("test_accuracy", "test_accuracy_val_selected", "val_last", "val_best"):
        assert metrics[key] == st["ensemble"][key], key
    # it trains nothing itself: the run's training time is its members', its stage's none
    assert metrics["train_seconds"] == st["student"]["seconds"] + st["stage2"]["seconds"] > 0 and st["ensemble"]["seconds"] == 0
    # and no epoch of its own: none is named (0 read as the untrained network)
    assert metrics["best_epoch"] is None and st["ensemble"]["best_epoch"] is None and metrics["history"] == []
    # by hand: the student's and stage 2's own predictions of the test items, averaged, in
    # their validation-selected states (which the run leaves them in)
    student, stage2 = out.module.members
    data = out.data
    p = (predict_proba(student, data, data.x_test) + predict_proba(stage2, data, data.x_test)) / 2
    assert metrics["test_accuracy_val_selected"] == M.accuracy(p.numpy(), ds.y_test)
    pv = (predict_proba(student, data, data.x_val) + predict_proba(stage2, data, data.x_val)) / 2
    assert metrics["val_best"] == pytest.approx(float((pv.argmax(1) == data.y_val).float().mean()))
    # the worker matrices are stage 2's; the default run trains the same stages and picks one of them
    default, d_out = run_on_dataset(ds, cfg("kdcrowd", epochs=4, teacher="crowdlayer-mw"))
    np.testing.assert_array_equal(out.transitions, d_out.transitions)
    assert default["final_stage"] in ("student", "stage2") and all(default["stages"]["ensemble"][k] == st["ensemble"][k] for k in ("test_accuracy", "test_accuracy_val_selected", "val_last", "val_best"))
    assert default["test_accuracy"] == st[default["final_stage"]]["test_accuracy"]


def test_the_estimator_and_its_model_file_predict_with_the_ensemble(tmp_path) -> None:
    from kdcrowd.persist import load_predictor, save_model

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 150)
    x = (rng.normal(0, 3, (3, 5))[y] + rng.normal(0, 1, (150, 5))).astype(np.float32)
    labels = np.stack([np.where(rng.random(150) < 0.7, y, rng.integers(0, 3, 150)) for _ in range(4)], 1)
    clf = KDCrowdClassifier(method="kdcrowd", teacher="crowdlayer-mw", student="coteaching", final="ensemble", backbone="mlp",
                            epochs=3, batch_size=32, lr=3e-3, device="cpu", validation_fraction=0.2).fit(x, labels)
    assert clf.metrics_["final_stage"] == "ensemble" and isinstance(clf.module_, Ensemble)
    assert len(predictor_networks(clf.module_)) == 3  # co-teaching's two networks and stage 2's
    assert clf.validation_["agreement"] == clf.metrics_["val_best"] and clf.validation_["best_epoch"] is None
    proba = clf.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1, atol=1e-5)
    save_model(tmp_path / "m.pt", clf)
    assert len(torch.load(tmp_path / "m.pt", weights_only=True)["predictor"]["state_dicts"]) == 3
    np.testing.assert_allclose(load_predictor(tmp_path / "m.pt")(x), proba, atol=1e-5)


def test_kdcrowd_runs_every_seed_a_run_takes_its_stages_wrapping_below_2_32() -> None:
    # seeds 2**32 - 2 and 2**32 - 1 trained the teacher, then refused the student's seed (+1 or +2)
    from dataclasses import replace

    from kdcrowd.framework import stage_seed

    assert [stage_seed(2**32 - 1, s) for s in (0, 1, 2)] == [2**32 - 1, 0, 1] and stage_seed(7, 2) == 9
    ds = tiny_dataset(n=120)
    c = cfg("kdcrowd", epochs=1, teacher="crowdlayer-mw")
    metrics, _ = run_on_dataset(ds, replace(c, seed=2**32 - 1, train=replace(c.train, seed=2**32 - 1)))
    assert set(metrics["stages"]) >= {"teacher", "student", "stage2"}
