"""The benchmark scripts run end to end on tiny sizes and write the JSON the docs are rendered from."""

import json
import os
import sys
from pathlib import Path

from rwkv_vision.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_wkv_benchmark_writes_json(tmp_path):
    out = tmp_path / "wkv.json"
    main(["benchmark", "wkv", "--T", "8", "33", "--C", "5", "--B", "1", "--repeats", "1", "--block-res", "32",
          "--out", str(out)])
    result = json.loads(out.read_text())
    backends = {r["backend"] for r in result["rows"]}
    assert "torch" in backends and len(result["rows"]) == 2 * len(backends)
    assert all(r["forward_ms"] > 0 and r["forward_backward_ms"] > 0 for r in result["rows"])
    assert result["copy_bandwidth_GBps"] > 0 and 0 < result["block_share"][0]["wkv_share"] < 1
    assert {(r["threads"], r["T"]) for r in result["forward_profile"]} >= {(1, 8), (1, 33)}
    assert all(r["ns_per_element"] > 0 for r in result["forward_profile"])


def test_growth_is_measured_in_a_fresh_process_with_only_the_given_allocator_setting(monkeypatch):
    import bench_wkv

    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # the caller's own setting must not reach the child
    r = bench_wkv.growth_ratios_in({"MALLOC_MMAP_THRESHOLD_": "1048576"}, 1, 5, "cpu", 2, 8, 32)
    assert r["pid"] != os.getpid() and r["malloc_env"] == {"MALLOC_MMAP_THRESHOLD_": "1048576"}
    assert r["fwd"] > 0 and r["fwd_bwd"] > 0


def test_growth_summary_takes_the_median_over_processes_with_settings_in_turn(monkeypatch):
    import bench_wkv

    calls = []

    def fake(env, B, C, device, repeats, short, long):
        calls.append(env)
        return {"fwd": 1.0 + len(calls), "fwd_bwd": 10.0 + len(calls)}

    monkeypatch.setattr(bench_wkv, "growth_ratios_in", fake)
    summary = bench_wkv.growth_summary(1, 5, "cpu", repeats=2, processes=3, short=8, long=32)
    assert calls == list(bench_wkv.MEMORY_ENVS.values()) * 3  # the settings take turns
    assert summary["time_ratio_T32_over_T8_fwd_bwd_per_process"] == [11.0, 14.0, 17.0]
    assert summary["time_ratio_T32_over_T8_fwd_bwd"] == 14.0 and summary["time_ratio_T32_over_T8_fwd"] == 5.0
    assert summary["time_ratio_T32_over_T8_fwd_bwd_fresh_memory_per_process"] == [13.0, 16.0, 19.0]


def test_model_benchmark_measures_a_point_in_a_subprocess(tmp_path):
    out = tmp_path / "models.json"
    main(["benchmark", "models", "--models", "rwkv_vit_tiny", "rwkv_vit_tiny_attention", "--res", "32",
          "--batch", "1", "--dtype", "fp32", "--train-res", "--ratio-res", "32", "--repeats", "3",
          "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["model"] for r in rows] == ["rwkv_vit_tiny", "rwkv_vit_tiny_attention"]
    assert all("error" not in r and r["images_per_s"] > 0 and r["peak_mem_MiB"] >= 0 for r in rows)
    (pair,) = result["pairs"]
    assert pair["repeats"] == 3 and pair["rwkv_ms"] > 0 and pair["attention_ms"] > 0
    assert result["summary"]["speed_rwkv_over_attention_32px_b1_fp32"] == pair["speed_ratio"] > 0
