"""`rwkv-vision info` and `python -m rwkv_vision.info`: versions, device, and the WKV backend with its reason."""

import subprocess
import sys

import torch

from rwkv_vision.cli import main


def test_info_names_versions_and_the_backend(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch: {torch.__version__}" in out and "rwkv_vision: " in out
    backend_line = next(line for line in out.splitlines() if "WKV on cpu:" in line)
    assert backend_line.split("WKV on cpu:")[1].strip().split(":")[0] in ("cpp", "torch")


def test_info_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "rwkv_vision.info"], capture_output=True, text=True, check=True).stdout
    assert "WKV backend setting" in out and "WKV on cpu:" in out


def test_info_check_compares_the_backend_with_the_pytorch_path(capsys):
    assert main(["info", "--check"]) == 0
    assert "WKV check: ok" in capsys.readouterr().out


def test_bad_backend_settings_are_reported_not_raised(monkeypatch, capsys):
    monkeypatch.setenv("RWKV_VISION_WKV_BACKEND", "fast")
    assert main(["info"]) == 0
    assert "error: RWKV_VISION_WKV_BACKEND='fast' is not one of" in capsys.readouterr().out
    monkeypatch.setenv("RWKV_VISION_WKV_BACKEND", "cuda")  # forced, but cannot run on CPU tensors
    assert main(["info", "--check"]) == 1
    out = capsys.readouterr().out
    assert "WKV check: error:" in out and "cannot run on cpu" in out
