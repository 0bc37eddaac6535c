"""The three doors (``kdcrowd run``, ``kdcrowd fit``, KDCrowdClassifier) take the same
method and training options, with the same names and defaults, generated from the
components' configurations; a misspelt option or a bad value is one clear error in each."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import typer.main
from typer.testing import CliRunner

from kdcrowd.cli import app
from kdcrowd.config import ConfigError
from kdcrowd.doors import KDCROWD_NOT_OPTIONS, TRAIN_NOT_OPTIONS, door_defaults, door_options
from kdcrowd.estimator import ESTIMATOR_ONLY, KDCrowdClassifier
from kdcrowd.framework import KDCrowd
from kdcrowd.methods import RunConfig, run_on_dataset
from kdcrowd.training import TrainConfig

from test_methods import tiny_dataset

runner = CliRunner()

#: Options one door has and the others do not (their inputs, outputs and ways of running).
RUN_ONLY = {"dataset", "out", "workers", "seed", "data_root", "dataset_option", "distributed", "sync_bn", "resume", "track_memorization", "help"}
FIT_ONLY = {"annotations", "out", "features", "images", "item_ids", "predict_features", "predict_images", "predict_item_ids", "classes",
            "truth", "image_size", "image_ids", "seed", "validation_fraction", "duplicates", "resume", "quiet", "help",
            "label_case", "item_column", "texts", "text_column", "predict_texts", "image_features", "format", "field", "multi_label", "include_rejected", "gold", "final_labels",
            "label_spreading", "spreading_neighbours", "spreading_alpha"}


def _cli_options(name: str) -> dict[str, object]:
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    out = {}
    for p in command.params:
        key = "model_options" if p.name == "model_option" else p.name
        default = p.default
        out[key] = None if key == "model_options" and default in ([], ()) else default
    return out


def _shared(options: dict[str, object], only: set[str]) -> dict[str, object]:
    return {k: v for k, v in options.items() if k not in only}


def test_run_fit_and_the_estimator_have_the_same_options_and_defaults() -> None:
    expected = door_defaults()
    run = _shared(_cli_options("run"), RUN_ONLY)
    fit = _shared(_cli_options("fit"), FIT_ONLY)
    est = _shared(KDCrowdClassifier().get_params(), set(ESTIMATOR_ONLY))
    assert run == expected
    assert fit == expected
    assert est == expected
    # one set of defaults, from docs/RESULTS.md ("Choosing the defaults", §6)
    assert (expected["method"], expected["teacher"], expected["student"], expected["kd"], expected["epochs"], expected["batch_size"]) == ("kdcrowd", "maxmig", "elr", "mig-kl", 30, 128)


def test_every_configuration_field_is_an_option_of_every_door() -> None:
    names = {o.name for o in door_options()}
    assert {f.name for f in fields(TrainConfig)} - set(TRAIN_NOT_OPTIONS) <= names
    assert {f.name for f in fields(KDCrowd)} - set(KDCROWD_NOT_OPTIONS) <= names
    for f in fields(TrainConfig):  # the defaults are the dataclasses' own
        if f.name in names:
            assert door_defaults()[f.name] == getattr(TrainConfig(), f.name), f.name
    for f in fields(KDCrowd):
        if f.name in names:
            assert door_defaults()[f.name] == getattr(KDCrowd(), f.name), f.name


def test_the_old_unreachable_settings_are_reachable() -> None:
    names = {o.name for o in door_options()}
    assert {"flip", "amp", "compile", "augment", "channels_last", "kd_prior", "tv_temperature", "kd_temperature", "final", "teacher_output", "stage2", "stage2_init"} <= names


# ----------------------------------------------------------------------------- misspelt options


def test_a_misspelt_option_of_the_command_line_names_the_right_one(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", "--dataset", "tiny", "--out", str(tmp_path), "--epoch", "3"])
    assert r.exit_code == 2 and "--epochs" in r.output
    r = runner.invoke(app, ["run", "--dataset", "tiny", "--out", str(tmp_path), "--method", "maxmig", "--model-option", "mgi_f=js"])
    assert r.exit_code == 2 and "did you mean 'mig_f'" in r.output and "Traceback" not in r.output


def test_a_misspelt_run_option_names_the_closest_key() -> None:
    ds = tiny_dataset()
    cfg = RunConfig(dataset="tiny", method="kdcrowd", train=TrainConfig(epochs=1, progress=False), options={"techer": "maxmig"})
    with pytest.raises(ConfigError, match="'techer'.*did you mean 'teacher'"):
        run_on_dataset(ds, cfg)
    cfg = RunConfig(dataset="tiny", method="maxmig", train=TrainConfig(epochs=1, progress=False), options={"mig-f": "js"})
    with pytest.raises(ConfigError, match="did you mean 'mig_f'"):
        run_on_dataset(ds, cfg)
    cfg = RunConfig(dataset="tiny", method="mv", train=TrainConfig(epochs=1, progress=False), options={"teacher": "maxmig"})
    with pytest.raises(ConfigError, match="method 'mv' takes no options"):
        run_on_dataset(ds, cfg)
    with pytest.raises(ConfigError, match="unknown method 'maxmg'; did you mean 'maxmig'"):
        run_on_dataset(ds, RunConfig(dataset="tiny", method="maxmg"))


def test_a_misspelt_estimator_option_names_the_closest_key() -> None:
    ds = tiny_dataset()
    clf = KDCrowdClassifier(method="maxmig", model_options={"mgi_f": "js"}, epochs=1, device="cpu")
    with pytest.raises(ConfigError, match="did you mean 'mig_f'"):
        clf.fit(ds.x_train, ds.annotations)
    with pytest.raises(ValueError, match="Invalid parameter 'epoch'"):  # scikit-learn's own check of set_params
        KDCrowdClassifier().set_params(epoch=3)


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize("params,message", [
    ({"epochs": -1}, "epochs must be at least 1; got -1"),
    ({"lr": -5.0}, "lr must be greater than 0.0; got -5.0"),
    ({"batch_size": 0}, "batch_size must be at least 2"),
    ({"optimizer": "adam"}, "optimizer must be one of adamw, sgd, radam; got 'adam' \\(did you mean 'radam'\\?\\)"),
    ({"kd": "mmd"}, "kd: unknown distillation loss 'mmd'"),
    ({"student": "gce", "method": "mv"}, "student is an option of method kdcrowd"),
    ({"lr": float("inf")}, "lr must be a finite number; got inf"),
    ({"random_state": -1}, "random_state must be in 0..4294967295"),
    ({"random_state": 2.5}, "random_state must be a whole number in 0..4294967295.*got 2.5"),
    ({"checkpoint_interval": 5.0}, "checkpoint_interval sets how often a fit checkpoints into checkpoint_dir; it goes with checkpoint_dir"),
    ({"random_state": "0"}, "random_state must be a whole number.*got '0'"),
    ({"model_options": {"kd_prio": "teacher"}}, "unknown model option 'kd_prio'; did you mean the option kd_prior\\?"),
    ({"student": "mixup", "model_options": {"student": "gce"}}, "model option 'student' is the option student"),
    ({"model_options": {"student_params": {"q": 0.5}}}, "student_params of student 'elr'.*'q'"),
    ({"student": "mixup", "model_options": {"student_params": {"alpha": 0}}}, "student_params of student 'mixup'.*alpha must be > 0"),
    ({"stages": 1, "final": "stage2"}, "final='stage2' needs stages=2"),
    ({"duplicates": "bogus"}, "duplicates='bogus' is not a policy"),
    # values of another type: refused as such (a string "no" was true, 2.5 epochs failed inside the training)
    ({"amp": "no"}, "amp must be true or false \\(or None\\); got 'no'"),
    ({"epochs": 2.5}, "epochs must be a whole number; got 2.5"),
    ({"lr": "0.01"}, "lr must be a number; got '0.01'"),
    ({"stages": True}, "stages must be one of 1, 2; got True"),
    ({"lambda2": True}, "lambda2 must be a number; got True"),
    ({"teacher": "foo"}, "teacher: unknown crowd model 'foo'"),
    ({"student": "foo"}, "student: unknown student 'foo'"),
    ({"device": "meta"}, "device must be cpu, cuda, cuda:N or auto; got 'meta'"),
    # the crowd models' options check themselves, before any data is read
    ({"method": "madl", "model_options": {"embed_dim": 0}}, "embed_dim must be at least 1; got 0"),
    ({"method": "geocrowdnet-f", "model_options": {"reg_weight": "x"}}, "reg_weight must be a number; got 'x'"),
    ({"method": "annot-mix", "model_options": {"dropout": 2}}, "dropout must be less than 1.0; got 2"),
    ({"method": "crowdar", "model_options": {"lmbda": 1.5}}, "lmbda must be at most 1.0; got 1.5"),
    ({"method": "unionnet", "model_options": {"epsilon": 1}}, "epsilon must be less than 1.0; got 1"),
    ({"method": "tracereg", "model_options": {"trace_weight": -1}}, "trace_weight must be at least 0.0; got -1"),
    ({"model_options": {"student_params": 5}}, "student_params must be a mapping"),
])
def test_the_estimator_refuses_bad_values_before_training(params: dict, message: str) -> None:
    ds = tiny_dataset()
    with pytest.raises(ConfigError, match=message):
        KDCrowdClassifier(**{"device": "cpu", **params}).fit(ds.x_train, ds.annotations)


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs must be at least 1; got 0"),
    (["--lr", "-5"], "--lr must be greater than 0.0; got -5.0"),
    (["--method", "mv", "--student", "gce"], "--student is an option of method kdcrowd"),
    (["--kd", "mmd"], "--kd: unknown distillation loss 'mmd'"),
    (["--method", "maxmg"], "--method: unknown method 'maxmg'; did you mean 'maxmig'"),
    (["--lr", "inf"], "--lr must be a finite number; got inf"),
    (["--seed", "-1"], "--seed must be at least 0; got -1"),
    (["--seed", str(2**32)], "--seed must be less than 4294967296"),
    (["--backbone", "resnet-18"], "--backbone: unknown backbone 'resnet-18'"),
    (["--student", "mixup", "--model-option", "student=gce"], "model option 'student' is the option --student"),
    (["--model-option", "kd_prio=teacher"], "unknown model option 'kd_prio'; did you mean the option --kd-prior?"),
    (["--model-option", 'student_params={"q": 0.5}'], "student_params of student 'elr'"),
    (["--stages", "1", "--final", "stage2"], "--final stage2 needs --stages 2"),
    (["--teacher", "foo"], "--teacher: unknown crowd model 'foo'"),
    (["--student", "foo"], "--student: unknown student 'foo'"),
    (["--device", "meta"], "--device must be cpu, cuda, cuda:N or auto"),
    (["--method", "madl", "--model-option", "embed_dim=0"], "embed_dim must be at least 1; got 0"),
])
def test_the_command_line_names_the_option_to_fix(tmp_path: Path, args: list[str], message: str) -> None:
    for command in (["run", "--dataset", "tiny", "--out", str(tmp_path / "run")], ["fit", "--annotations", str(tmp_path / "a.csv"), "--features", str(tmp_path / "x.npy"), "--out", str(tmp_path / "fit")]):
        r = runner.invoke(app, command + args)
        assert r.exit_code == 2, r.output
        assert message in " ".join(r.output.split()), r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "fit").exists()  # checked before anything is written


def test_config_values_are_checked_when_made() -> None:
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="stage2 must be one of reinit, finetune"):
        KDCrowd(stage2="fine-tune")
    with pytest.raises(ConfigError, match="unknown crowd model 'maxmg'; did you mean 'maxmig'"):
        KDCrowd(teacher="maxmg")
    with pytest.raises(ConfigError, match="crowd model 'maxmig' option 'f'; did you mean 'mig_f'"):
        KDCrowd(teacher="maxmig", teacher_options={"f": "js"})
    assert np.isclose(TrainConfig().lr, 1e-3)


# ----------------------------------------------------------------------------- safety


class _Planted:
    """An object whose unpickling would run code: it writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_predict_refuses_a_file_holding_a_pickled_object(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "ran"
    model = tmp_path / "model.pt"
    torch.save({"format": "kdcrowd.fit/1", "predictor": _Planted(str(marker))}, model)
    np.save(tmp_path / "x.npy", np.zeros((3, 4), dtype=np.float32))
    r = runner.invoke(app, ["predict", "--model", str(model), "--features", str(tmp_path / "x.npy"), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 2, r.output
    assert "objects other than tensors and plain values" in " ".join(r.output.split())
    assert not marker.exists()  # nothing in the file ran
    assert not (tmp_path / "p.csv").exists()


def test_only_user_errors_become_one_line_errors(tmp_path: Path, monkeypatch) -> None:
    """A RuntimeError (e.g. CUDA out of memory, an internal error) keeps its traceback."""
    import kdcrowd.methods

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(kdcrowd.methods, "run_on_dataset", boom)  # what `kdcrowd run` trains through once its data set is loaded
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--out", str(tmp_path / "o"), "--method", "mv", "--device", "cpu"])
    assert r.exit_code == 1 and isinstance(r.exception, RuntimeError)
    r = runner.invoke(app, ["run", "--dataset", "digits", "--out", str(tmp_path / "o"), "--method", "mv", "--device", "gpu0"])
    assert r.exit_code == 2 and "--device must be cpu, cuda, cuda:N or auto; got 'gpu0'" in r.output


def test_the_options_fit_and_the_estimator_share_have_one_default() -> None:
    fit = _cli_options("fit")
    for name in set(FIT_ONLY) & set(ESTIMATOR_ONLY):
        assert fit[name] == ESTIMATOR_ONLY[name], name
    assert {"image_features", "validation_fraction", "final_labels", "label_spreading", "spreading_neighbours", "spreading_alpha"} <= set(FIT_ONLY) & set(ESTIMATOR_ONLY)


def test_the_head_recipe_sets_only_the_options_left_at_their_defaults(tmp_path: Path) -> None:
    from kdcrowd.doors import FROZEN_FEATURE_HEAD, FROZEN_FEATURE_KD, apply_head_recipe, settings_from_options
    from kdcrowd.framework import KDCrowd

    shared = {k: getattr(TrainConfig(), k) for k in FROZEN_FEATURE_HEAD}
    assert door_defaults()["head_recipe"] == "auto"
    assert {k: apply_head_recipe({"head_recipe": "auto"}, frozen_features=True)[k] for k in FROZEN_FEATURE_HEAD} == FROZEN_FEATURE_HEAD
    assert apply_head_recipe({"head_recipe": "auto"}, frozen_features=False) == {"head_recipe": "auto"}
    assert apply_head_recipe({"head_recipe": "shared", **shared}, frozen_features=True) == {"head_recipe": "shared", **shared}
    given = apply_head_recipe({"head_recipe": "frozen-features", **shared, "lr": 3e-3}, frozen_features=False)
    assert given["lr"] == 3e-3 and given["epochs"] == FROZEN_FEATURE_HEAD["epochs"]  # a value given is kept
    _, _, train, _ = settings_from_options({"head_recipe": "frozen-features"}, seed=0, progress=False)
    assert (train.epochs, train.batch_size, train.lr, train.weight_decay) == tuple(FROZEN_FEATURE_HEAD[k] for k in ("epochs", "batch_size", "lr", "weight_decay"))
    assert FROZEN_FEATURE_HEAD != shared  # the recipe differs from the shared defaults
    # KD-Crowd's part of the recipe goes to method kdcrowd only: another method would refuse a KD-Crowd option
    assert apply_head_recipe({"head_recipe": "auto"}, frozen_features=True)["lambda2"] == FROZEN_FEATURE_KD["lambda2"] != KDCrowd().lambda2
    assert "lambda2" not in apply_head_recipe({"head_recipe": "auto", "method": "maxmig"}, frozen_features=True)
    assert apply_head_recipe({"head_recipe": "auto"}, frozen_features=True)["student"] == FROZEN_FEATURE_KD["student"] != KDCrowd().student
    assert "lambda2" not in apply_head_recipe({"head_recipe": "auto"}, frozen_features=True, kd={})  # a resumed run's own KD part: none
    older = apply_head_recipe({"head_recipe": "auto"}, frozen_features=True, kd={"lambda2": 10.0})  # a run of the ninth session's recipe
    assert older["lambda2"] == 10.0 and "student" not in older
    assert apply_head_recipe({"head_recipe": "auto", "student": "gce"}, frozen_features=True)["student"] == "gce"  # given: kept
    assert settings_from_options({"head_recipe": "frozen-features"}, seed=0, progress=False)[3]["lambda2"] == FROZEN_FEATURE_KD["lambda2"]
    assert settings_from_options({"head_recipe": "frozen-features", "lambda2": 3.0}, seed=0, progress=False)[3]["lambda2"] == 3.0  # given: kept
    assert settings_from_options({"head_recipe": "frozen-features", "method": "maxmig"}, seed=0, progress=False)[0] == "maxmig"
    with pytest.raises(ConfigError, match="head_recipe must be one of auto, shared, frozen-features; got 'frozen-feature' \\(did you mean 'frozen-features'\\?\\)"):
        settings_from_options({"head_recipe": "frozen-feature"}, seed=0, progress=False)
    r = runner.invoke(app, ["run", "--dataset", "tiny", "--out", str(tmp_path / "run"), "--head-recipe", "sometimes"])
    assert r.exit_code == 2 and "--head-recipe must be one of auto, shared, frozen-features" in " ".join(r.output.split()), r.output


def test_an_estimator_under_the_recipe_records_the_settings_it_trained_with(tmp_path: Path) -> None:
    """``head_recipe`` resolves options the estimator's parameters leave at their defaults: the
    model file (``trained_with``) and the report's method line name what trained (co-teaching,
    lr 1e-4), not the parameters (ELR, lr 1e-3); a recorded recipe naming an unknown setting is
    one clear error."""
    import torch

    from kdcrowd.doors import FROZEN_FEATURE_HEAD, FROZEN_FEATURE_KD, apply_head_recipe
    from kdcrowd.persist import save_model
    from kdcrowd.report.practitioner import _method_text

    ds = tiny_dataset(n=120, k=3, d=5)
    clf = KDCrowdClassifier(head_recipe="frozen-features", device="cpu", epochs=2).fit(ds.x_train, ds.annotations)
    save_model(tmp_path / "m.pt", clf)
    saved = torch.load(tmp_path / "m.pt")
    assert saved["config"]["student"] == KDCrowd().student != FROZEN_FEATURE_KD["student"]  # the parameter as given
    assert saved["trained_with"]["options"]["student"] == FROZEN_FEATURE_KD["student"] and saved["trained_with"]["options"]["lambda2"] == FROZEN_FEATURE_KD["lambda2"]
    assert saved["trained_with"]["train"]["lr"] == FROZEN_FEATURE_HEAD["lr"] and saved["trained_with"]["train"]["epochs"] == 2  # given: kept
    assert f"<code>{FROZEN_FEATURE_KD['student']}</code> student" in _method_text(clf) and "2 epochs per stage" in _method_text(clf)
    with pytest.raises(ConfigError, match="names settings this kdcrowd does not have: stduent"):
        apply_head_recipe({"head_recipe": "auto"}, frozen_features=True, kd={"stduent": "elr"})


def test_run_checks_its_distributed_settings_with_the_training_configuration(tmp_path: Path) -> None:
    """`kdcrowd run --distributed` builds its TrainConfig with distributed=True, so the pairs
    that configuration refuses are refused on the command line too (it used to set the flag
    after the check: --distributed --cuda-graph ran); --sync-bn is the door of sync_bn and
    goes with --distributed."""
    for extra, message in ((["--distributed", "--cuda-graph"], "--cuda-graph cannot be combined with --distributed"),
                           (["--sync-bn"], "--sync-bn synchronises BatchNorm across the processes of --distributed training"),
                           (["--checkpoint-interval", "5"], "--checkpoint-interval sets how often --resume checkpoints")):
        r = runner.invoke(app, ["run", "--dataset", "tiny", "--out", str(tmp_path / "run"), *extra])
        assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output
    assert not (tmp_path / "run").exists()
    assert TrainConfig(distributed=True, sync_bn=True).sync_bn
    with pytest.raises(ConfigError, match="sync_bn synchronises BatchNorm"):
        TrainConfig(sync_bn=True)


def test_an_option_given_without_the_one_it_goes_with_is_refused_at_its_default_too(tmp_path: Path) -> None:
    """Whether an option was given is asked of the command line, not guessed from its value:
    `kdcrowd run --checkpoint-interval 30` (the default, typed) without --resume, a KD-Crowd
    option at its default with another method, and fit's --image-size 32, --image-ids auto,
    --text-column text and --image-features auto without the items they are for passed,
    where any other value was refused. Each is one error line on stderr naming the option."""
    run = ["run", "--dataset", "tiny", "--out", str(tmp_path / "run")]
    fit = ["fit", "--annotations", str(tmp_path / "a.csv"), "--features", str(tmp_path / "x.npy"), "--out", str(tmp_path / "fit")]
    cases = [
        (run, ["--checkpoint-interval", "30"], "--checkpoint-interval sets how often --resume checkpoints"),
        (run, ["--checkpoint-interval", str(TrainConfig.checkpoint_interval)], "--checkpoint-interval sets how often --resume checkpoints"),
        (run, ["--method", "mv", "--student", KDCrowd.student], "--student is an option of method kdcrowd"),
        (fit, ["--method", "mv", "--student", KDCrowd.student], "--student is an option of method kdcrowd"),
        (fit, ["--image-size", "32"], "--image-size goes with --images"),
        (fit, ["--image-ids", "auto"], "--image-ids goes with --images"),
        (fit, ["--text-column", "text"], "--text-column goes with --texts"),
        (fit, ["--image-features", "auto"], "--image-features goes with --images"),
    ]
    for command, args, message in cases:
        r = runner.invoke(app, command + args)
        assert r.exit_code == 2, (args, r.output)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, r.stderr)
    assert not (tmp_path / "run").exists() and not (tmp_path / "fit").exists()
    # with --resume it is taken, at any value
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--method", "mv", "--epochs", "1", "--device", "cpu",
                            "--out", str(tmp_path / "resumable"), "--resume", "--checkpoint-interval", "30"])
    assert r.exit_code == 0, r.output


def test_student_params_are_checked_against_the_students_parameters() -> None:
    """student_params are refused when KDCrowd is made, before any teacher trains: a
    parameter the student does not take (named or a class), or a value its class refuses."""
    from kdcrowd.students import CEStudent

    class Tempered(CEStudent):
        def __init__(self, backbone, n_items, n_classes, temperature: float = 1.0) -> None:
            super().__init__(backbone, n_items, n_classes)
            self.temperature = temperature

    assert KDCrowd(student="gce", student_params={"q": 0.5}).student_params == {"q": 0.5}
    assert KDCrowd(student=Tempered, student_params={"temperature": 2.0}).student is Tempered
    with pytest.raises(ConfigError, match="student_params of student 'Tempered': unknown parameter 'q'; it takes temperature"):
        KDCrowd(student=Tempered, student_params={"q": 0.5})
    with pytest.raises(ConfigError, match="student_params of student 'coteaching': unknown parameter 'lam'; it takes forget_rate, t_k"):
        KDCrowd(student="coteaching", student_params={"lam": 1.0})
    with pytest.raises(ConfigError, match="student_params of student 'ce': unknown parameter 'q'; it takes none"):
        KDCrowd(student="ce", student_params={"q": 0.5})
    # out-of-range values, which only the losses had checked, after the teacher had trained
    for student, params, message in (("gce", {"q": 0.0}, r"q must be in \(0, 1\]; got 0.0"), ("gce", {"q": 1.5}, r"q must be in \(0, 1\]"),
                                      ("coteaching", {"forget_rate": 1.5}, r"forget_rate must be in \[0, 1\]; got 1.5"),
                                      ("coteaching", {"forget_rate": -0.3}, r"forget_rate must be in \[0, 1\]")):
        with pytest.raises(ConfigError, match=message):
            KDCrowd(student=student, student_params=params)


def test_values_that_stand_for_the_type_are_taken_as_it() -> None:
    """The type check keeps what users legitimately pass: a path or a torch device as text,
    0/1 (JSON) as a bool, a whole float (JSON 16.0) or a numpy integer as an int; each is
    stored as the type it stands for."""
    import torch

    from kdcrowd.methods import method_options

    c = TrainConfig(checkpoint=Path("ck"), device=torch.device("cpu"), augment=0, epochs=np.int64(3), crop_padding=2.0)
    assert (c.checkpoint, c.device, c.augment, c.epochs, c.crop_padding) == ("ck", "cpu", False, 3, 2)
    assert type(c.epochs) is int and type(c.crop_padding) is int and c.augment is False
    assert method_options("madl", {"embed_dim": 16.0}).embed_dim == 16
    assert method_options("maxmig", {"learn_prior": 0}).learn_prior is False
    with pytest.raises(ConfigError, match="augment must be true or false; got 2"):
        TrainConfig(augment=2)
    ds = tiny_dataset()
    clf = KDCrowdClassifier(method="mv", epochs=1, device=torch.device("cpu")).fit(ds.x_train, ds.annotations)
    assert clf.predict_proba(ds.x_train[:3]).shape == (3, ds.n_classes)


def test_numpy_scalars_are_typed_and_bounded_as_python_ones() -> None:
    """A numpy bool is a bool (numpy 2 names its type ``bool``, not ``bool_``: it had been
    refused, also from a GridSearchCV grid), and a numpy float meets a field's bounds (a
    float32 spreading_alpha of 1.5 had trained, where 1.5 is refused); each is stored as
    the Python scalar."""
    from kdcrowd.methods import method_options

    c = TrainConfig(augment=np.False_, amp=np.True_, momentum=np.float32(0.5))
    assert c.augment is False and c.amp is True and type(c.momentum) is float and c.momentum == 0.5
    assert method_options("maxmig", {"learn_prior": np.False_}).learn_prior is False
    for field, bad, word in (("momentum", 5.0, "less than 1.0"), ("warmup_epochs", -3.0, "at least 0.0"), ("lr", float("nan"), "finite")):
        for v in (bad, np.float32(bad), np.float64(bad)):
            with pytest.raises(ConfigError, match=f"{field} must be .*{word}"):
                TrainConfig(**{field: v})
    with pytest.raises(ConfigError, match="epochs must be a whole number; got np.True_"):
        TrainConfig(epochs=np.True_)
    with pytest.raises(ConfigError, match="spreading_alpha must be less than 1.0"):
        KDCrowdClassifier(method="mv", epochs=1, label_spreading="on", spreading_alpha=np.float32(1.5)).fit(tiny_dataset().x_train, tiny_dataset().annotations)


def test_fit_says_which_options_the_head_recipe_set(tmp_path: Path) -> None:
    """The recipe replaces options left at their shared defaults, also one typed by hand with
    that value (--lr 0.001): fit names each value it set, and how to keep one's own."""
    import pandas as pd

    ds = tiny_dataset()
    np.save(tmp_path / "x.npy", ds.x_train)
    a = ds.annotations
    pd.DataFrame({"item": a.item, "worker": a.worker, "label": a.label}).to_csv(tmp_path / "a.csv", index=False)
    r = runner.invoke(app, ["fit", "--annotations", str(tmp_path / "a.csv"), "--features", str(tmp_path / "x.npy"), "--out", str(tmp_path / "o"),
                            "--epochs", "1", "--head-recipe", "frozen-features", "--lr", "0.001", "--quiet"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "note: the frozen-features head recipe set" in text and "--lr 0.0001" in text and "--head-recipe shared" in text
    assert "--epochs" not in text.split("recipe set")[1].split("(")[0]  # a value given other than the default: kept, not named


def test_the_run_configuration_has_the_doors_default_method() -> None:
    # RunConfig().method was 'mv' while --method and the estimator default to kdcrowd
    from kdcrowd.doors import door_defaults
    from kdcrowd.methods import RunConfig

    assert RunConfig().method == door_defaults()["method"] == KDCrowdClassifier().method == "kdcrowd"


def test_a_distillation_setting_of_another_loss_is_warned_once(tmp_path: Path) -> None:
    """--kd-temperature with mig-*, --kd-prior with kl, --tv-temperature but with mig-tv changed
    nothing, silently: one warning line (a warning, so that a run started with one resumes)."""
    from kdcrowd.config import SettingWarning

    ds = tiny_dataset()
    for params, message in (({"kd_temperature": 5.0}, "kd_temperature=5.0 has no effect with kd='mig-kl': it is a setting of the distillation loss kl"),
                            ({"kd": "kl", "kd_prior": "teacher"}, "kd_prior='teacher' has no effect with kd='kl'"),
                            ({"tv_temperature": 3.0}, "tv_temperature=3.0 has no effect with kd='mig-kl': it is a setting of the distillation loss mig-tv")):
        with pytest.warns(SettingWarning, match=message):
            KDCrowdClassifier(device="cpu", epochs=1, stages=1, **params).fit(ds.x_train, ds.annotations)
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--device", "cpu", "--epochs", "1", "--stages", "1", "--kd", "kl", "--kd-prior", "teacher", "--out", str(tmp_path / "r")])
    out = " ".join(r.output.split())
    assert out.count("warning: --kd-prior teacher has no effect with --kd kl") == 1, r.output


class _Stop(Exception):
    """Raised by a stubbed training loop: the settings were checked (and warned of) before it."""


def _stop_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import kdcrowd.framework
    import kdcrowd.methods

    def stop(*args: object, **kwargs: object) -> None:
        raise _Stop(kwargs.get("desc", ""))

    monkeypatch.setattr(kdcrowd.framework, "fit", stop)
    monkeypatch.setattr(kdcrowd.methods, "fit", stop)


def _setting_warnings(params: dict, *args: object, **kwargs: object) -> list[str]:
    """The SettingWarnings of a fit of the estimator with ``params`` (training stubbed by :func:`_stop_training`)."""
    import warnings

    from kdcrowd.config import SettingWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(_Stop):
            KDCrowdClassifier(**{"device": "cpu", "epochs": 1, "batch_size": 32, **params}).fit(*args, **kwargs)
    return [str(w.message) for w in seen if issubclass(w.category, SettingWarning)]


@pytest.mark.parametrize("params, message", [
    ({"stages": 1, "lambda2": 5.0}, "lambda2=5.0 has no effect with stages=1: it is a setting of stage 2 (the role switch), which runs with stages=2"),
    ({"stages": 1, "stage2": "finetune"}, "stage2='finetune' has no effect with stages=1: it is a setting of stage 2"),
    ({"stages": 1, "stage2_init": "student"}, "stage2_init='student' has no effect with stages=1: it is a setting of stage 2"),
    ({"kd": "none", "lambda1": 5.0}, "lambda1=5.0 has no effect with kd='none': it weighs the distillation term of stage 1, which kd='none' leaves out "
                                     "(choose a distillation loss: mig-<f> or kl)"),
    ({"kd": "none", "lambda2": 5.0}, "lambda2=5.0 has no effect with kd='none': it weighs the distillation term of stage 2"),
])
def test_a_kd_crowd_setting_without_effect_is_warned_of_once(params: dict, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage-2 setting with one stage, and the distillation weights without a distillation
    loss, changed nothing, silently (the same labels to the bit): one SettingWarning, before
    anything trains, from KD-Crowd itself (every door: the Python API too)."""
    from kdcrowd.config import SettingWarning
    from kdcrowd.training import DeviceData

    _stop_training(monkeypatch)
    ds = tiny_dataset()
    warned = _setting_warnings(params, ds.x_train, ds.annotations)
    assert len(warned) == 1 and warned[0].startswith(message), warned
    with pytest.warns(SettingWarning, match=re.escape(message)), pytest.raises(_Stop):  # the framework's own fit says it (the Python API)
        KDCrowd(**params).fit(ds, DeviceData.from_dataset(ds, torch.device("cpu")), TrainConfig(device="cpu", progress=False))
    # the same settings at their defaults, or where they take effect, say nothing
    plain = {k: v for k, v in params.items() if k in ("stages", "kd")}
    assert _setting_warnings(plain, ds.x_train, ds.annotations) == []
    effective = {k: v for k, v in params.items() if k not in ("stages", "kd")}
    assert _setting_warnings(effective, ds.x_train, ds.annotations) == []


def test_a_kd_crowd_setting_without_effect_is_one_warning_line_on_the_command_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["run", "--dataset", "digits", "--workers", "symmetric", "--device", "cpu", "--epochs", "1", "--stages", "1", "--lambda2", "5",
                            "--out", str(tmp_path / "r")])
    out = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert out.count("warning: --lambda2 5.0 has no effect with --stages 1: it is a setting of stage 2 (the role switch), which runs with --stages 2") == 1, r.output


def _images(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8), np.arange(n) % 2


@pytest.mark.parametrize("params, items, message", [
    ({"method": "mv", "tta": "flip"}, "features", "tta='flip' has no effect on feature rows: its views are mirrored or shifted images"),
    ({"method": "maxmig", "tta": "flip-translate"}, "features", "tta='flip-translate' has no effect on feature rows"),
    ({"method": "mv", "tta": "flip", "flip": False}, "images", "tta='flip' has no effect with flip=False: its other view is the mirror image"),
    ({"method": "mv", "worker_lr_scale": 3.0}, "features", "worker_lr_scale=3.0 has no effect with method='mv': it scales the learning rate of a crowd model's worker "
                                                           "parameters, and method='mv' trains no crowd model"),
    ({"method": "ds", "worker_lr_scale": 3.0}, "features", "worker_lr_scale=3.0 has no effect with method='ds'"),
    ({"method": "maxmig", "gold_weight": 5.0}, "features", "gold_weight=5.0 has no effect without gold questions: it weighs the classifier's cross-entropy on the gold "
                                                          "questions' known labels"),
    ({"method": "mv", "gold_weight": 5.0}, "gold", "gold_weight=5.0 has no effect with method='mv': it weighs the classifier's cross-entropy on the gold questions' "
                                                   "known labels in a crowd model's loss, and method='mv' trains no crowd model"),
])
def test_a_training_setting_without_effect_is_warned_of_once(params: dict, items: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Test-time augmentation of feature rows (or tta flip without flips), the worker
    learning rate of a method without worker parameters, and the gold weight without gold
    questions or a crowd model changed nothing, silently: one SettingWarning from the runner
    every door goes through, before anything trains; none where the setting takes effect."""
    _stop_training(monkeypatch)
    ds = tiny_dataset()
    x, y = (ds.x_train, ds.annotations) if items != "images" else _images()
    gold = [0 if i % 4 == 0 else None for i in range(len(x))] if items == "gold" else None  # gold questions: every fourth item, of class 0
    warned = _setting_warnings({"image_features": "none", **params}, x, y, gold=gold)
    assert len(warned) == 1 and warned[0].startswith(message), warned
    # where they take effect: nothing to say
    for effective, xs, ys, g in (({"method": "mv", "tta": "flip"}, *_images(), None), ({"method": "mv", "tta": "flip-translate", "flip": False}, *_images(), None),
                                 ({"method": "maxmig", "worker_lr_scale": 3.0}, ds.x_train, ds.annotations, None),
                                 ({"method": "kdcrowd", "stages": 1, "worker_lr_scale": 3.0}, ds.x_train, ds.annotations, None),
                                 ({"method": "maxmig", "gold_weight": 5.0}, ds.x_train, ds.annotations, [0 if i % 4 == 0 else None for i in range(len(ds.x_train))])):
        assert _setting_warnings({"image_features": "none", **effective}, xs, ys, gold=g) == [], effective


def test_a_training_setting_of_a_crowd_model_warns_where_a_kd_crowd_run_trains_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KD-Crowd run over a teacher trained elsewhere, with one stage, trains no crowd model:
    worker_lr_scale changes nothing there."""
    from kdcrowd.config import SettingWarning
    from kdcrowd.methods import build_crowd_model
    from kdcrowd.training import DeviceData

    _stop_training(monkeypatch)
    ds = tiny_dataset()
    cfg = RunConfig(dataset="tiny", method="kdcrowd", train=TrainConfig(device="cpu", progress=False, worker_lr_scale=3.0), options={"teacher": "crowdlayer-mw", "stages": 1})
    teacher = build_crowd_model("crowdlayer-mw", ds, DeviceData.from_dataset(ds, "cpu"), cfg)
    with pytest.warns(SettingWarning, match=r"worker_lr_scale=3\.0 has no effect with method='kdcrowd': it scales .* and this KD-Crowd run trains no crowd model "
                                            r"\(its teacher is given trained, and stages=1 has no stage 2\)"), pytest.raises(_Stop):
        run_on_dataset(ds, cfg, pretrained_teacher=(teacher, None))


def test_a_training_setting_without_effect_is_one_warning_line_of_kdcrowd_fit(tmp_path: Path) -> None:
    from test_fit_command import make_problem

    prob = make_problem(tmp_path / "data")
    r = runner.invoke(app, ["fit", "--annotations", str(prob["root"] / "answers.csv"), "--features", str(prob["root"] / "X.csv"), "--out", str(tmp_path / "o"),
                            "--method", "mv", "--device", "cpu", "--epochs", "1", "--tta", "flip", "--predict-features", str(prob["root"] / "X_new.csv"), "--quiet"])
    out = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert out.count("warning: --tta flip has no effect on feature rows") == 1, r.output
    assert "unlabelled" not in out, r.output  # the items to predict, without label spreading, are predicted: no word about spreading them


def test_the_head_recipe_leaves_a_kd_crowd_setting_without_effect_at_its_default(tmp_path: Path) -> None:
    """The frozen-features recipe's lambda2 (stage 2's distillation weight) is not set where
    it has no effect (one stage, or no distillation loss): the recipe gives no warning, and a
    run checkpointed with it set (by an older kdcrowd) resumes, settings without effect being
    compared at their defaults."""
    import warnings

    from kdcrowd.config import SettingWarning
    from kdcrowd.doors import FROZEN_FEATURE_KD, apply_head_recipe, settings_from_options

    for moot in ({"stages": 1}, {"kd": "none"}):
        assert "lambda2" not in apply_head_recipe({"head_recipe": "frozen-features", **moot}, frozen_features=False)
        assert "lambda2" not in apply_head_recipe({"head_recipe": "auto", **moot}, frozen_features=True, kd={"lambda2": 10.0})
        assert settings_from_options({"head_recipe": "frozen-features", **moot}, seed=0, progress=False)[3]["lambda2"] == KDCrowd.lambda2
        assert apply_head_recipe({"head_recipe": "frozen-features", **moot}, frozen_features=False)["student"] == FROZEN_FEATURE_KD["student"]
    assert apply_head_recipe({"head_recipe": "frozen-features", "stages": 2}, frozen_features=False)["lambda2"] == FROZEN_FEATURE_KD["lambda2"]
    ds = tiny_dataset()
    ckpt = tmp_path / "ckpt"
    cfg = lambda **o: RunConfig(dataset="tiny", method="kdcrowd", checkpoint_dir=str(ckpt), options={"teacher": "crowdlayer-mw", "student": "ce", "stages": 1, **o},  # noqa: E731
                                train=TrainConfig(epochs=1, batch_size=32, device="cpu", progress=False))
    with pytest.warns(SettingWarning, match="lambda2=10.0 has no effect with stages=1"):
        first, _ = run_on_dataset(ds, cfg(lambda2=10.0))  # as the recipe of an older kdcrowd set it
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        again, _ = run_on_dataset(ds, cfg())  # the same run: resumed (finished: its stages are read back), not refused
    assert again["test_accuracy"] == first["test_accuracy"]
    with pytest.raises(ValueError, match=r"other settings \(lambda1: 1\.0 → 0\.5\)"):  # a setting with effect still differs
        run_on_dataset(ds, cfg(lambda1=0.5))


@pytest.mark.parametrize("params, items, message", [
    ({"method": "mv", "crop_padding": 3}, "features", "crop_padding=3 has no effect on feature rows: it is a setting of the images' training augmentation"),
    ({"method": "mv", "flip_schedule": "alternating"}, "features", "flip_schedule='alternating' has no effect on feature rows: it is a setting of the images' training augmentation"),
    ({"method": "maxmig", "flip": False}, "features", "flip=False has no effect on feature rows"),
    ({"method": "kdcrowd", "augment": False}, "features", "augment=False has no effect on feature rows"),
    ({"method": "mv", "crop_padding": 3, "augment": False}, "images", "crop_padding=3 has no effect with augment=False: it is a setting of the training augmentation, "
                                                                      "which augment=False leaves out (use augment=True)"),
    ({"method": "mv", "flip_schedule": "alternating", "augment": False}, "images", "flip_schedule='alternating' has no effect with augment=False"),
    ({"method": "mv", "flip_schedule": "alternating", "flip": False}, "images", "flip_schedule='alternating' has no effect with flip=False: it orders the training "
                                                                                "augmentation's mirror images, which flip=False leaves out"),
    ({"method": "mv", "flip": False, "augment": False}, "images", "flip=False has no effect with augment=False and tta='none'"),
    ({"method": "mv-soft", "label_smoothing": 0.2}, "features", "label_smoothing=0.2 has no effect with method='mv-soft': it smooths the cross-entropy on fixed hard "
                                                               "targets, and method='mv-soft' trains on soft targets, already distributions (use method='mv')"),
    ({"method": "maxmig", "label_smoothing": 0.2}, "features", "label_smoothing=0.2 has no effect with method='maxmig': it smooths the cross-entropy on fixed hard "
                                                              "targets, and method='maxmig' trains a crowd model"),
    ({"method": "kdcrowd", "label_smoothing": 0.2}, "features", "label_smoothing=0.2 has no effect with method='kdcrowd': it smooths the cross-entropy on fixed hard "
                                                               "targets, and KD-Crowd's stages keep their own losses"),
])
def test_an_augmentation_or_smoothing_setting_without_effect_is_warned_of_once(params: dict, items: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The images' augmentation settings on feature rows (the pixels' crop padding, flips
    and their schedule), crop padding and the flip schedule without the augmentation (or
    its flips), and label smoothing with a method whose targets it does not touch (soft
    targets, a crowd model's or KD-Crowd's own losses) changed nothing, silently: one
    SettingWarning from the runner every door goes through; none where they take effect."""
    _stop_training(monkeypatch)
    ds = tiny_dataset()
    x, y = (ds.x_train, ds.annotations) if items != "images" else _images()
    warned = _setting_warnings({"image_features": "none", **params}, x, y)
    assert len(warned) == 1 and warned[0].startswith(message), warned
    for effective, items in (({"method": "mv", "crop_padding": 3}, "images"), ({"method": "mv", "flip_schedule": "alternating"}, "images"),
                             ({"method": "mv", "flip": False}, "images"), ({"method": "mv", "augment": False}, "images"),
                             ({"method": "mv", "flip": False, "augment": False, "tta": "flip-translate"}, "images"),
                             ({"method": "mv", "label_smoothing": 0.2}, "features"), ({"method": "ds", "label_smoothing": 0.2}, "features")):
        xs, ys = (ds.x_train, ds.annotations) if items == "features" else _images()
        assert _setting_warnings({"image_features": "none", **effective}, xs, ys) == [], effective
    import warnings

    from kdcrowd.config import SettingWarning

    with warnings.catch_warnings(), pytest.raises(_Stop):  # clean (ground truth: not an estimator's method) smooths its hard targets too
        warnings.simplefilter("error", SettingWarning)
        run_on_dataset(ds, RunConfig(dataset="tiny", method="clean", train=TrainConfig(device="cpu", progress=False, label_smoothing=0.2)))


@pytest.mark.parametrize("method, moot", [("mv-soft", True), ("maxmig", True), ("kdcrowd", True), ("mv", False), ("ds", False)])
def test_label_smoothing_changes_the_labels_only_where_it_is_not_warned_of(method: str, moot: bool) -> None:
    """Where label_smoothing is warned of, a fit gives the same labels and predictions to the
    bit with and without it; where it is not (hard targets), the predictions differ."""
    import warnings

    ds = tiny_dataset()
    params = {"method": method, "device": "cpu", "epochs": 2, "batch_size": 32, **({"stages": 1} if method == "kdcrowd" else {})}
    fits = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for extra in ({}, {"label_smoothing": 0.3}):
            clf = KDCrowdClassifier(**params, **extra).fit(ds.x_train, ds.annotations)
            fits.append((clf.label_proba_, clf.predict_proba(ds.x_test)))
    (labels, test), (labels_smoothed, test_smoothed) = fits
    assert np.array_equal(test, test_smoothed) == moot
    if moot:
        assert np.array_equal(labels, labels_smoothed)


def test_an_augmentation_setting_on_feature_rows_is_one_warning_line_of_kdcrowd_fit(tmp_path: Path) -> None:
    """A boolean named by its flag (--no-flip)."""
    from test_fit_command import make_problem

    prob = make_problem(tmp_path / "data")
    r = runner.invoke(app, ["fit", "--annotations", str(prob["root"] / "answers.csv"), "--features", str(prob["root"] / "X.csv"), "--out", str(tmp_path / "o"),
                            "--method", "mv-soft", "--device", "cpu", "--epochs", "1", "--no-flip", "--label-smoothing", "0.1", "--quiet"])
    out = " ".join(r.output.split())
    assert r.exit_code == 0, r.output
    assert out.count("warning: --no-flip has no effect on feature rows") == 1, r.output
    assert out.count("warning: --label-smoothing 0.1 has no effect with --method mv-soft") == 1, r.output


def test_an_augmentation_setting_of_images_turned_into_frozen_features_is_warned_of(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images turned into frozen pretrained features before the training are feature rows:
    their augmentation settings change nothing, as test-time augmentation (the network's
    features stubbed: only where the rows come from matters)."""
    import kdcrowd.crowdfit

    _stop_training(monkeypatch)
    monkeypatch.setattr(kdcrowd.crowdfit.CrowdFit, "_frozen_features", lambda self, X: (X.reshape(len(X), -1)[:, :8].astype(np.float32), "efficientnet-lite0"))
    warned = _setting_warnings({"method": "mv", "crop_padding": 2, "flip": False}, *_images())
    why = "has no effect on feature rows: it is a setting of the images' training augmentation (it applies to images trained on as pixels)"
    assert warned == [f"flip=False {why}", f"crop_padding=2 {why}"], warned
