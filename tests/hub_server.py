"""Test helpers for the model hub: a loopback Hugging Face Hub server, a hub-client worker process, and a tiny second
architecture.

``LoopbackHub`` serves repository folders the way the Hub's ``/{repo_id}/resolve/{revision}/{filename}`` endpoint does
for ``huggingface_hub.hf_hub_download``: HEAD and GET, with ``X-Repo-Commit``, ``ETag`` (the sha256, as the Hub gives
for LFS files) and ``Content-Length``; 404 with ``X-Error-Code`` ``RepoNotFound``, ``RevisionNotFound`` or
``EntryNotFound`` (the last with ``X-Repo-Commit``, which the client caches as a known-missing file). Revisions are
branch or tag names and 40-hex commit ids. It also takes uploads as ``huggingface_hub`` sends them for ``create_repo``,
``upload_folder`` / ``create_commit`` (small files, sent inline: no LFS or Xet transfer) and ``create_branch``, so that
``push_to_hub`` can be tested end to end (see :class:`LoopbackHub`). Every request is recorded, so tests can tell a
download from a cache hit, and see the token that was sent.

``HubClient`` runs a Python process with ``HF_ENDPOINT`` pointed at the server (the client reads it at import, hence a
separate process) and executes snippets sent to it; ``huggingface_hub`` is the real one, never mocked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import torch
import torch.nn as nn

from rwkv_vision.hub import HubModel

TESTS = Path(__file__).resolve().parent
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)")
# The upload side of the API, matched on the raw (still quoted) path: revisions come quoted with safe="".
_API = [(method, kind, re.compile(pattern)) for method, kind, pattern in [
    ("POST", "create", r"/api/repos/create"),
    ("POST", "validate_yaml", r"/api/validate-yaml"),
    ("GET", "whoami", r"/api/whoami-v2"),
    ("GET", "info", r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?"),
    ("GET", "tree", r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<revision>[^/]+)(?:/(?P<path>.+))?"),
    ("POST", "preupload", r"/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<revision>[^/]+)"),
    ("POST", "commit", r"/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<revision>[^/]+)"),
    ("POST", "branch", r"/api/models/(?P<repo>[^/]+/[^/]+)/branch/(?P<revision>[^/]+)"),
]]
_WRITES = {"create", "preupload", "commit", "branch"}  # need "Authorization: Bearer <token>", as on the Hub
# What the Hub commits to a new repository.
GITATTRIBUTES = b"*.bin filter=lfs diff=lfs merge=lfs -text\n*.pt filter=lfs diff=lfs merge=lfs -text\n" \
                b"*.pth filter=lfs diff=lfs merge=lfs -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as a regular file's ``oid``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An error answer of the loopback Hub: status, ``X-Error-Code``, message (``X-Error-Message`` and the JSON body's
    ``error``) and other fields of the body."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class LoopbackHub:
    """A Hub server on 127.0.0.1 (free port, kept across ``stop``/``start``) serving repository folders, and taking
    uploads the way ``huggingface_hub``'s ``create_repo`` / ``upload_folder`` / ``create_commit`` / ``create_branch``
    send them.

    Downloads: ``/{repo}/resolve/{revision}/{file}`` (HEAD, GET). Uploads (all need ``Authorization: Bearer``; 401
    without, or with a token outside ``tokens`` when that is set): ``POST /api/repos/create`` (a new repository has one
    commit with ``.gitattributes`` on main; 409 if it exists), ``POST /api/models/{repo}/preupload/{revision}`` (every
    file "regular", i.e. sent base64 in the commit itself, never LFS/Xet; ``oid`` = git blob id of the file already at
    that revision, so unchanged files are skipped by the client), ``POST /api/models/{repo}/commit/{branch}`` (ndjson:
    header, ``file`` with base64 content, ``deletedFile``, ``deletedFolder``; ``parentCommit`` checked, 412 if stale;
    404 RevisionNotFound for a branch that does not exist, as on the Hub), ``POST /api/models/{repo}/branch/{branch}``.
    Reads: ``GET /api/models/{repo}[/revision/{rev}]`` (repo info: sha, private, siblings), ``GET
    /api/models/{repo}/tree/{rev}[/{path}]``, ``GET /api/whoami-v2``, ``POST /api/validate-yaml`` (the card's YAML
    front matter must parse to a mapping). A private repository answers 401 RepoNotFound to requests without a token.

    Every commit is a new folder (the parent's files plus the changes) under a temporary store, with a new 40-hex id
    and its branch moved; ``history`` keeps each commit's parent and message.
    """

    def __init__(self):
        self.refs: dict[str, dict[str, str]] = {}        # repo -> {branch or tag: commit}
        self.commits: dict[str, dict[str, Path]] = {}    # repo -> {commit: folder}
        self.history: dict[str, dict[str, dict]] = {}    # repo -> {commit: {"parent", "summary", "description"}}
        self.private: dict[str, bool] = {}               # repo -> created private
        self.requests: list[tuple[str, str]] = []        # (method, unquoted path)
        self.authorization: list[str | None] = []        # the Authorization header of each recorded request
        self.bodies: list[bytes] = []                    # the body of each recorded request (b"" for none)
        self.tokens: set[str] | None = None              # accepted tokens; None: any bearer token
        self.user = "loopback-user"                      # whoami name, namespace of repo ids without one
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.RLock()
        self._store = tempfile.TemporaryDirectory(prefix="loopback-hub-")  # uploaded snapshots; gone with the hub
        self._serial = 0

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
        with self._lock:
            self.commits.setdefault(repo, {})[commit] = Path(folder)
            self.refs.setdefault(repo, {})[ref] = commit
            self.history.setdefault(repo, {})[commit] = {"parent": None, "summary": f"add {folder}", "description": ""}
        return commit

    def count(self, method: str, fragment: str = "") -> int:
        return sum(1 for m, p in self.requests if m == method and fragment in p)

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        """The files of ``repo`` at ``revision`` (branch, tag or commit), by path."""
        folder = self.commits[repo][self.refs[repo].get(revision, revision)]
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    # -- commits ------------------------------------------------------------------------------------------------------

    def _resolve(self, repo: str, revision: str) -> str:
        if repo not in self.commits:
            raise HubError(404, "Repository not found", "RepoNotFound")
        commit = self.refs[repo].get(revision, revision)
        if commit not in self.commits[repo]:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _commit(self, repo: str, branch: str, parent: str | None, files: dict[str, bytes],
                deleted: list[str], summary: str, description: str = "") -> str:
        """A new commit on ``branch``: the files of ``parent`` less ``deleted`` (files or folders) plus ``files``."""
        with self._lock:
            old = self.files(repo, parent) if parent else {}
            for gone in deleted:
                prefix = gone.rstrip("/") + "/"
                hits = [p for p in old if p == gone or p.startswith(prefix)]
                if not hits:
                    raise HubError(404, f"A file with this name doesn't exist: {gone}", "EntryNotFound")
                for p in hits:
                    del old[p]
            old.update(files)
            self._serial += 1
            digest = hashlib.sha1(f"{repo}\0{parent}\0{self._serial}\0{summary}".encode())
            for path, data in sorted(old.items()):
                digest.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
            commit = digest.hexdigest()
            folder = Path(self._store.name) / repo.replace("/", "--") / commit
            for path, data in old.items():
                (folder / path).parent.mkdir(parents=True, exist_ok=True)
                (folder / path).write_bytes(data)
            folder.mkdir(parents=True, exist_ok=True)  # an empty tree is a folder too
            self.commits.setdefault(repo, {})[commit] = folder
            self.refs.setdefault(repo, {})[branch] = commit
            self.history.setdefault(repo, {})[commit] = {"parent": parent, "summary": summary,
                                                         "description": description}
            return commit

    # -- API ----------------------------------------------------------------------------------------------------------

    def _api(self, kind: str, args: dict[str, str], query: dict[str, list[str]], body: bytes,
             token: str | None) -> tuple[int, object]:
        """Answer one API request: (status, JSON value); raises HubError."""
        repo, revision = args.get("repo"), args.get("revision")
        if repo is not None and self.private.get(repo) and token is None:
            raise HubError(401, "Repository not found", "RepoNotFound")  # the Hub hides private repos so
        if kind == "whoami":
            if token is None:
                raise HubError(401, "Invalid username or password.")
            return 200, {"type": "user", "name": self.user, "auth": {"type": "access_token",
                                                                     "accessToken": {"role": "write"}}}
        if kind == "validate_yaml":
            return self._validate_yaml(json.loads(body or b"{}").get("content", ""))
        if kind == "create":
            payload = json.loads(body or b"{}")
            if payload.get("type", "model") != "model":
                raise HubError(400, "the loopback hub holds model repositories only")
            name = f"{payload.get('organization') or self.user}/{payload['name']}"
            with self._lock:
                if name in self.commits:
                    raise HubError(409, "You already created this model repo", url=f"{self.url}/{name}")
                self.private[name] = payload.get("visibility") == "private" or bool(payload.get("private"))
                self._commit(name, "main", None, {".gitattributes": GITATTRIBUTES}, [], "initial commit")
            return 200, {"url": f"{self.url}/{name}", "name": name, "id": name}
        if kind == "info":
            commit = self._resolve(repo, revision or "main")
            return 200, {"id": repo, "modelId": repo, "sha": commit, "private": self.private.get(repo, False),
                         "siblings": [{"rfilename": p} for p in self.files(repo, commit)]}
        if kind == "tree":
            commit = self._resolve(repo, revision)
            under = (args.get("path") or "").strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries, folders = [], set()
            for path, data in self.files(repo, commit).items():
                if under and not path.startswith(under + "/"):
                    continue
                rest = path[len(under) + 1:] if under else path
                if "/" in rest:
                    parts = rest.split("/")
                    for depth in range(1, len(parts) if recursive else 2):
                        folders.add("/".join(([under] if under else []) + parts[:depth]))
                    if not recursive:
                        continue
                entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)})
            entries += [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()}
                        for f in sorted(folders)]
            return 200, entries
        if kind == "preupload":
            if repo not in self.commits:
                raise HubError(404, "Repository not found", "RepoNotFound")
            payload = json.loads(body or b"{}")
            try:  # like the Hub, a branch that does not exist yet is no error here (only at commit)
                present = self.files(repo, self._resolve(repo, revision))
            except HubError:
                present = {}
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                    "oid": git_blob_id(present[f["path"]]) if f["path"] in present else None}
                                   for f in payload.get("files", [])]}
        if kind == "branch":
            payload = json.loads(body or b"{}")
            start = self._resolve(repo, payload.get("startingPoint") or "main")
            with self._lock:
                if revision in self.refs[repo]:
                    raise HubError(409, f"Reference already exists: refs/heads/{revision}")
                self.refs[repo][revision] = start
            return 200, {}
        if kind == "commit":
            return self._commit_request(repo, revision, query, body)
        raise AssertionError(kind)

    def _commit_request(self, repo: str, branch: str, query: dict, body: bytes) -> tuple[int, object]:
        if query.get("create_pr", ["0"])[0] not in ("0", "", "false"):
            raise HubError(400, "the loopback hub does not open pull requests")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header, files, deleted = lines[0]["value"], {}, []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if not path or path.startswith("/") or ".." in path.split("/"):
                raise HubError(400, f"invalid path in repo: {path!r}")
            if key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, f"{path}: only base64 file content is accepted")
                files[path] = base64.b64decode(value["content"], validate=True)
            elif key in ("deletedFile", "deletedFolder"):
                deleted.append(path if key == "deletedFile" else path.rstrip("/") + "/")
            else:  # lfsFile: never asked for, preupload answers "regular" for every file
                raise HubError(400, f"{path}: {key} operations are not supported by the loopback hub (no LFS/Xet)")
        with self._lock:
            if repo not in self.commits:
                raise HubError(404, "Repository not found", "RepoNotFound")
            if branch not in self.refs[repo]:  # the Hub commits to existing branches only
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = self.refs[repo][branch]
            if header.get("parentCommit") not in (None, head):
                raise HubError(412, f"A commit has happened since {header['parentCommit']}: the head of {branch} "
                                    f"is {head}")
            commit = self._commit(repo, branch, head, files, deleted, header.get("summary", ""),
                                  header.get("description", ""))
        return 200, {"success": True, "commitOid": commit, "commitUrl": f"{self.url}/{repo}/commit/{commit}",
                     "hookOutput": ""}

    @staticmethod
    def _validate_yaml(content: str) -> tuple[int, object]:
        import yaml

        match = re.match(r"---\r?\n(.*?)\r?\n---\r?\n", content, re.S)
        if match is None:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
        try:
            data = yaml.safe_load(match[1])
        except yaml.YAMLError as err:
            return 400, {"errors": [{"message": f"YAML parse error: {err}"}], "warnings": []}
        if not isinstance(data, dict):
            return 400, {"errors": [{"message": "the YAML metadata must be a mapping"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    # -- server -------------------------------------------------------------------------------------------------------

    def start(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self):
                self._handle(body=False)

            def do_GET(self):
                self._handle(body=True)

            def do_POST(self):
                self._handle(body=True)

            def log_message(self, *args):  # keep test output quiet
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline().strip():  # trailers
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

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

            def _token(self) -> str | None:
                scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
                return token.strip() or None if scheme.lower() == "bearer" else None

            def _handle(self, body: bool):
                parts = urlsplit(self.path)
                raw = parts.path
                data = self._read_body()  # always, so that a keep-alive connection stays in step
                with hub._lock:
                    hub.requests.append((self.command, unquote(raw)))
                    hub.authorization.append(self.headers.get("Authorization"))
                    hub.bodies.append(data)
                if raw.startswith("/api/"):
                    return self._serve_api(raw, parse_qs(parts.query, keep_blank_values=True), data, body)
                if self.command == "POST":
                    return self._reply(405, {}, body=body)
                self._serve(raw, body)

            def _serve_api(self, raw: str, query: dict, data: bytes, body: bool):
                for method, kind, pattern in _API:
                    match = pattern.fullmatch(raw)
                    if match and method == (self.command if self.command != "HEAD" else "GET"):
                        break
                else:
                    return self._json(404, {"error": f"no such endpoint: {self.command} {raw}"}, body)
                args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                token = self._token()
                try:
                    if kind in _WRITES and token is None:
                        raise HubError(401, "You must be authenticated (Authorization: Bearer <token>) to do this")
                    if token is not None and hub.tokens is not None and token not in hub.tokens:
                        raise HubError(401, "Invalid credentials in Authorization header")
                    status, value = hub._api(kind, args, query, data, token)
                except HubError as err:
                    headers = {"X-Error-Message": err.message}
                    if err.code:
                        headers["X-Error-Code"] = err.code
                    return self._json(err.status, {"error": err.message, **err.extra}, body, headers)
                self._json(status, value, body)

            def _json(self, status: int, value, body: bool, headers: dict[str, str] | None = None):
                self._reply(status, {"Content-Type": "application/json", **(headers or {})},
                            json.dumps(value).encode(), body)

            def _serve(self, raw: str, body: bool):
                match = _RESOLVE.fullmatch(raw)
                if match is None:
                    return self._reply(400, {}, body=body)
                repo, revision, filename = (unquote(match[k]) for k in ("repo", "revision", "file"))
                if repo not in hub.commits:
                    return self._error("RepoNotFound", "Repository not found", body=body)
                if hub.private.get(repo) and self._token() is None:
                    return self._reply(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not "
                                             "found"}, body=body)
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

