"""Test helpers for the model hub: a loopback Hugging Face Hub file server, a hub-client worker process, and a tiny
second architecture.

``LoopbackHub`` serves repository folders the way the Hub's ``/{repo_id}/resolve/{revision}/{filename}`` endpoint does
for ``huggingface_hub.hf_hub_download``: HEAD and GET, with ``X-Repo-Commit``, ``ETag`` (the sha256, as the Hub gives
for LFS files) and ``Content-Length``; 404 with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or
``EntryNotFound`` (the last with ``X-Repo-Commit``, which the client caches as a known-missing file). Revisions are
branch or tag names and 40-hex commit ids. Every request is recorded, so tests can tell a download from a cache hit.

``HubClient`` runs a Python process with ``HF_ENDPOINT`` pointed at the server (the client reads it at import, hence a
separate process) and executes snippets sent to it; ``huggingface_hub`` is the real one, never mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import torch
import torch.nn as nn

from rwkv_vision.hub import HubModel

TESTS = Path(__file__).resolve().parent
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)")


class LoopbackHub:
    """A Hub file server on 127.0.0.1 (free port, kept across ``stop``/``start``) serving repository folders."""

    def __init__(self):
        self.refs: dict[str, dict[str, str]] = {}        # repo -> {branch or tag: commit}
        self.commits: dict[str, dict[str, Path]] = {}    # repo -> {commit: folder}
        self.requests: list[tuple[str, str]] = []        # (method, unquoted path)
        self.port = 0
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, repo: str, folder: Path, ref: str = "main") -> str:
        """Publish ``folder`` as a new commit of ``repo`` and point ``ref`` at it; returns the commit id."""
        digest = hashlib.sha1(repo.encode())
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(folder)).encode() + hashlib.sha256(path.read_bytes()).digest())
        commit = digest.hexdigest()
        self.commits.setdefault(repo, {})[commit] = Path(folder)
        self.refs.setdefault(repo, {})[ref] = commit
        return commit

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and fragment in p)

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                self._serve(body=False)

            def do_GET(self):
                self._serve(body=True)

            def log_message(self, *args):  # keep test output quiet
                pass

            def _reply(self, status: int, headers: dict[str, str], data: bytes = b"", body: bool = True):
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, code: str, message: str, commit: str | None = None, body: bool = True):
                headers = {"X-Error-Code": code, "X-Error-Message": message}
                if commit:
                    headers["X-Repo-Commit"] = commit
                self._reply(404, headers, body=body)

            def _serve(self, body: bool):
                raw = urlsplit(self.path).path
                hub.requests.append((self.command, unquote(raw)))
                match = _RESOLVE.fullmatch(raw)
                if match is None:
                    return self._reply(400, {}, body=body)
                repo, revision, filename = (unquote(match[k]) for k in ("repo", "revision", "file"))
                if repo not in hub.commits:
                    return self._error("RepoNotFound", "Repository not found", body=body)
                commit = hub.refs[repo].get(revision, revision)
                if commit not in hub.commits[repo]:
                    return self._error("RevisionNotFound", f"Invalid rev id: {revision}", body=body)
                path = hub.commits[repo][commit] / filename
                if not path.is_file():
                    return self._error("EntryNotFound", f"{filename} does not exist", commit, body=body)
                data = path.read_bytes()
                self._reply(200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                                  "Content-Type": "application/octet-stream"}, data, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def client_env(hub: LoopbackHub, home: Path, offline: bool = False) -> dict[str, str]:
    """Environment of a hub client: the loopback endpoint, a private cache under ``home``, no token, no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_CACHE=str(home / "hub"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="10", HF_HUB_DOWNLOAD_TIMEOUT="30",
               NO_PROXY="127.0.0.1,localhost",
               # as many threads as this process: the same float reductions, so outputs compare exactly
               OMP_NUM_THREADS=str(torch.get_num_threads()))
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


class HubClient:
    """A worker process that executes Python snippets (``result = ...``) and answers with JSON:
    ``{"ok", "result"}`` or ``{"ok": False, "type", "message"}``, plus ``logs`` (rwkv_vision log messages)."""

    def __init__(self, env: dict[str, str], log_path: Path, timeout: float = 120.0):
        self.timeout = timeout
        self._log = open(log_path, "wb")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
                                   "import hub_server; hub_server.worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env)
        self._buffer = b""

    def run(self, code: str) -> dict:
        self._proc.stdin.write((json.dumps({"code": code}) + "\n").encode())
        self._proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self._proc.poll() is not None:
                raise RuntimeError(f"hub client worker gave no answer (exit code {self._proc.poll()}); "
                                   f"its stderr is in {self._log.name}")
            if select.select([self._proc.stdout], [], [], left)[0]:
                chunk = os.read(self._proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    continue
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._log.close()


def worker_main() -> None:
    """The worker side of :class:`HubClient` (stdin: one JSON request per line; stdout: one JSON reply per line)."""
    import logging
    import traceback

    import rwkv_vision
    from rwkv_vision import hub, registry
    from rwkv_vision.models import RWKVViT

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger("rwkv_vision")
    logger.addHandler(Collect())
    logger.setLevel(logging.INFO)
    out = sys.stdout
    sys.stdout = sys.stderr  # only replies go to the real stdout
    names = dict(torch=torch, rwkv_vision=rwkv_vision, hub=hub, registry=registry, RWKVViT=RWKVViT,
                 TinyDepth=TinyDepth, forward=forward, create_model=registry.create_model)
    for line in sys.stdin:
        messages.clear()
        scope = dict(names)
        try:
            exec(json.loads(line)["code"], scope)
            reply = {"ok": True, "result": scope.get("result")}
        except Exception as err:
            traceback.print_exc()
            reply = {"ok": False, "type": type(err).__name__, "message": str(err)}
        reply["logs"] = list(messages)
        out.write(json.dumps(reply) + "\n")
        out.flush()


@torch.no_grad()
def forward(model: nn.Module, shape=(2, 3, 32, 32), seed: int = 0) -> list:
    """``model`` on a fixed random input, as nested lists (float32 values survive JSON exactly)."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return model(x).float().tolist()


class TinyDepth(HubModel, pipeline_tag="depth-estimation"):
    """A second architecture for the hub tests: image [B, 3, H, W] -> depth [B, 1, H, W] in metres, in (0, max_depth).
    Its arguments are a tuple and a torch dtype, which config.json must give back as such."""

    def __init__(self, channels: tuple[int, int] = (4, 8), dtype: torch.dtype = torch.float32,
                 max_depth: float = 10.0):
        super().__init__()
        self.channels, self.dtype, self.max_depth = channels, dtype, max_depth
        self.body = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1, dtype=dtype), nn.ReLU(),
                                  nn.Conv2d(channels[0], channels[1], 3, padding=1, dtype=dtype), nn.ReLU(),
                                  nn.Conv2d(channels[1], 1, 1, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.max_depth * torch.sigmoid(self.body(x.to(self.dtype)))


# ---------------------------------------------------------------------------------------------------------------------
# Helpers shared by the hub test modules (the loopback and client fixtures are in conftest.py).


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """``model`` in eval mode with every floating tensor (BN statistics included) shifted by seeded noise:
    zero-initialised tensors such as pos_embed then matter, and two seeds give clearly different outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=g, dtype=tensor.dtype) * 0.05)
    return model.eval()


def ok(reply: dict):
    """The result of a worker call, or a failure showing the worker's error."""
    assert reply["ok"], f"{reply.get('type')}: {reply.get('message')}"
    return reply["result"]

