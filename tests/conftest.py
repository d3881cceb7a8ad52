import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the oracle and test helpers

SHARED = Path(os.environ.get("RWKV_VISION_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Path:
    """A folder for one test module's shared files, removed when the module ends (the files are large), unless a
    test failed meanwhile: as with tmp_path_retention_policy = "failed", what a failure left stays to look at."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (research-only data, never committed); skip when absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}")
    return data


@pytest.fixture(scope="module")
def loopback():
    """A loopback Hugging Face Hub (tests/hub_server.py) serving repository folders, for one test module."""
    from hub_server import LoopbackHub

    server = LoopbackHub()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(loopback, module_tmp):
    """A worker process whose huggingface_hub talks to ``loopback`` (HF_ENDPOINT is read at import)."""
    from hub_server import HubClient, client_env

    home = module_tmp / "hf_home"
    home.mkdir()
    worker = HubClient(client_env(loopback, home), home / "worker.log")
    worker.home = home
    yield worker
    worker.close()
