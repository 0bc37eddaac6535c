"""Smoke runs of benchmarks/scale.py and benchmarks/speed.py at toy sizes on the CPU.

Only the structure of the result dictionaries is checked, never timings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

@pytest.fixture
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_simulate_distinct_workers(load_script):
    scale = load_script("benchmarks/scale")
    sim = scale.simulate(2000, 30, 5, 10, seed=3)
    w = sim["worker"].reshape(2000, 5)
    assert (np.sort(w, axis=1)[:, 1:] != np.sort(w, axis=1)[:, :-1]).all()  # distinct per item
    assert w.min() >= 0 and w.max() < 30
    assert sim["label"].min() >= 0 and sim["label"].max() < 10
    assert np.array_equal(sim["item"], np.repeat(np.arange(2000), 5))


def test_scale_smoke(load_script, tmp_path, keep_threads):
    scale = load_script("benchmarks/scale")
    out_path = tmp_path / "scale.json"
    out = scale.main(["--device", "cpu", "--sizes", "300", "600", "--workers", "40", "--ds-iters", "2", "--epochs-on-cpu", "--batch-size", "128", "--threads", "1", "--out", str(out_path)])
    assert json.loads(out_path.read_text())["results"] == json.loads(json.dumps(out["results"], default=str))
    for key in ("command", "versions", "device", "cpu_count", "results", "notes", "linearity"):
        assert key in out
    assert [r["n_items"] for r in out["results"]] == [300, 600]
    for r in out["results"]:
        assert "error" not in r
        assert r["n_annotations"] == 5 * r["n_items"]
        for key in ("data_layer_s", "mv_s", "ds_cpu_s", "ds_gpu_s", "ds_iters", "peak_mem_mb_data_layer", "peak_mem_mb_mv", "peak_mem_mb_ds_cpu", "epoch_maxmig_s", "epoch_crowdlayer_s", "gpu_peak_mb", "seconds_per_million_annotations"):
            assert key in r
        assert r["ds_iters"] == 2 and r["ds_gpu_s"] is None
        assert set(r["seconds_per_million_annotations"]) == {"data_layer", "mv", "ds_cpu", "ds_gpu"}
        assert r["seconds_per_million_annotations"]["data_layer"] == pytest.approx(r["data_layer_s"] / (r["n_annotations"] / 1e6))
    last = out["results"][-1]
    assert last["epoch_maxmig_s"] is not None and last["epoch_crowdlayer_s"] is not None
    assert out["results"][0]["epoch_maxmig_s"] is None


def test_scale_netease_preset_smoke(load_script, tmp_path, keep_threads, capsys):
    scale = load_script("benchmarks/scale")
    out_path = tmp_path / "ne.json"
    out = scale.main(["--preset", "netease", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out_path)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out_path)  # the path, last
    assert json.loads(out_path.read_text()) == out
    assert [(r["n_classes"], r["n_items"]) for r in out["results"]] == [(3, 2000), (3, 4000), (10, 2000), (10, 4000)]
    for r in out["results"]:
        assert "error" not in r and r["n_annotations"] == 6 * r["n_items"] and r["n_workers"] == 2413
        assert r["total_s"] == pytest.approx(r["data_layer_s"] + r["mv_s"] + r["ds_s"])
        assert 1 <= r["ds_iters"] <= 100 and r["ds_accuracy"] > 0.8 and r["mv_accuracy"] > 0.8
        assert len(r["loadavg_before_ds"]) == 3 and r["process_peak_rss_mb"] > 0
    assert out["summary"] == {} and out["classes"] == [3, 10]


def test_ds_distributed_one_rank_smoke(load_script, tmp_path, keep_threads):
    # without torchrun: one rank, which must equal the one-process reference exactly
    bench = load_script("benchmarks/ds_distributed")
    out = bench.main(["--device", "cpu", "--items", "2000", "--workers", "60", "--iters", "3", "--out", str(tmp_path / "dd.json")])
    assert json.loads((tmp_path / "dd.json").read_text()) == json.loads(json.dumps(out))
    assert out["world_size"] == 1 and out["iters"] == 3 and out["n_annotations"] == 12000
    assert out["labels_equal"] and out["same_iterations"] and out["transitions_max_abs_diff"] == 0.0
    assert out["sharded_accuracy"] > 0.8


def test_speed_smoke(load_script, tmp_path, keep_threads):
    speed = load_script("benchmarks/speed")
    out_path = tmp_path / "speed.json"
    out = speed.main([
        "--device", "cpu", "--synthetic", "--image-size", "8", "--n-train", "64", "--n-eval", "32",
        "--backbones", "fastcnn", "--warmup-steps", "1", "--naive-steps", "2", "--naive-batch", "16",
        "--fast-batch", "32", "--fast-steps", "2", "--fast-epochs", "1", "--naive-epochs", "1",
        "--pipeline-batch", "32", "--num-workers", "1", "--peak-n", "64", "--profile", "--profile-steps", "1",
        "--threads", "1", "--out", str(out_path),
    ])
    assert out_path.is_file()
    assert "errors" not in out, out.get("errors")
    for key in ("same_model_speedup", "time_to_accuracy_speedup", "pipeline_seconds", "pipeline_test_accuracy", "device", "tflops", "peak_bf16_tflops", "fraction_of_peak", "images_per_second", "command", "versions", "notes", "profile"):
        assert key in out
    assert out["data"]["synthetic"] is True
    assert set(out["images_per_second"]["fastcnn"]) == {"naive", "fast"}
    ips = out["images_per_second"]["fastcnn"]
    assert out["same_model_speedup"]["fastcnn"] == pytest.approx(ips["fast"] / ips["naive"])
    assert set(out["tflops"]["fastcnn"]) == {"naive", "fast"}
    for path in ("naive", "fast"):
        assert out["fraction_of_peak"]["fastcnn"][path] == pytest.approx(out["tflops"]["fastcnn"][path] / out["peak_bf16_tflops"])
        assert out["tflops"]["fastcnn"][path] == pytest.approx(ips[path] * out["flops_per_image"]["fastcnn"] / 1e12, rel=1e-6)
    assert {"fast", "naive", "naive_estimate", "fast_by_epochs"} <= set(out["pipeline_seconds"])
    assert out["pipeline_seconds"]["naive"] is not None and out["pipeline_seconds"]["fast"] is not None
    assert {"fast", "naive"} <= set(out["pipeline_test_accuracy"])
    assert len(out["profile"]["top15"]) > 0


def test_confusion_floor_on_simulated_workers(load_script):
    """Measured against the true labels, each worker's matrix is its empirical confusion, so its
    E_m against the empirical reference is only the eps smoothing, far below majority vote's;
    against the generating matrices it is not (sampling noise, which E_m's per-entry relative
    form magnifies)."""
    floor = load_script("benchmarks/confusion_floor")
    emp = floor.one_seed("digits", "symmetric", 0, {}, empirical_reference=True)
    gen = floor.one_seed("digits", "symmetric", 0, {})
    assert emp["E_m_true_labels"] < emp["E_m_majority_vote"] / 3
    assert gen["E_m_true_labels"] > emp["E_m_true_labels"] + 0.1
    assert emp["labels_per_worker_median"] == gen["labels_per_worker_median"] > 0
