"""The benchmark scripts run end to end on tiny sizes and write the JSON the docs are rendered from."""

import json

from rwkv_vision.cli import main


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
