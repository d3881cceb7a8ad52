import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the oracle and test helpers

SHARED = Path(os.environ.get("RWKV_VISION_SHARED", Path(__file__).resolve().parents[2] / "shared"))


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
def client(loopback, tmp_path_factory):
    """A worker process whose huggingface_hub talks to ``loopback`` (HF_ENDPOINT is read at import)."""
    from hub_server import HubClient, client_env

    home = tmp_path_factory.mktemp("hf_home")
    worker = HubClient(client_env(loopback, home), home / "worker.log")
    worker.home = home
    yield worker
    worker.close()
