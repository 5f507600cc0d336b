"""A loopback stand-in for the Hugging Face Hub (and plain URLs), for end-to-end tests.

It answers the endpoints the real ``huggingface_hub`` client calls when selected with
HF_ENDPOINT: repo info, tree listing, paths-info (with Git LFS sha256 and size) and
``resolve/{revision}/{file}`` (HEAD and GET with the X-Repo-Commit / ETag / X-Linked-* headers
and Range support). ``/files/{name}`` serves plain downloads for ``url`` sources. Faults (HTTP
status, delay, truncation, tampered bytes) can be injected per path; every request's headers
are recorded so tests can check authentication.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_INFO_RE = re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$")
_TREE_RE = re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")
_PATHS_INFO_RE = re.compile(rf"^/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)$")
_RESOLVE_RE = re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_FILES_RE = re.compile(r"^/files/(?P<name>.+)$")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names


@dataclass
class Fault:
    status: int | None = None
    delay_s: float = 0.0
    truncate_to: int | None = None  # send the full Content-Length but only this many bytes
    replace_body: bytes | None = None  # same headers, different bytes (a tampered mirror)
    times: int | None = None  # None: forever
    stall_after: int | None = None  # send this many body bytes, then hang (a process to kill)
    method: str | None = None  # only requests with this method (None: all)
    headers: dict[str, str] = field(default_factory=dict)  # sent with ``status``


@dataclass
class HubFile:
    data: bytes
    lfs: bool = True

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class FakeRepo:
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    commits: dict[str, dict[str, HubFile]] = field(default_factory=dict)


class FakeHub:
    """State of the fake server; start it with ``running()``."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.url_files: dict[str, bytes] = {}
        self.faults: list[tuple[re.Pattern[str], Fault]] = []
        self.requests: list[RecordedRequest] = []
        self.required_token: str | None = None
        self.bytes_sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- content ---------------------------------------------------------------------------

    def add_commit(
        self, repo: str, files: dict[str, bytes | HubFile], *, revision: str = "main"
    ) -> str:
        """Add a commit with these files and point ``revision`` at it; returns the commit id."""
        entries = {
            path: content if isinstance(content, HubFile) else HubFile(content)
            for path, content in files.items()
        }
        seed = repo + revision + "".join(f"{p}:{f.sha256}" for p, f in sorted(entries.items()))
        commit = hashlib.sha1(
            f"{seed}{len(self.repos.get(repo, FakeRepo()).commits)}".encode()
        ).hexdigest()
        fake = self.repos.setdefault(repo, FakeRepo())
        fake.commits[commit] = entries
        fake.refs[revision] = commit
        return commit

    def add_url_file(self, name: str, data: bytes) -> str:
        self.url_files[name] = data
        return f"{self.url}/files/{name}"

    def fail(self, path_regex: str, fault: Fault) -> None:
        self.faults.append((re.compile(path_regex), fault))

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def paths_requested(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]

    # -- server ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeHub]:
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            for pattern, fault in self.faults:
                if fault.method not in (None, method):
                    continue
                if pattern.search(path) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    _is_head = False

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        # A client that stops reading early (the GGUF header read, a killed pull) breaks the
        # connection; socketserver would print that as a traceback into the test's output.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    # -- dispatch --------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        self._is_head = method == "HEAD"
        split = urlsplit(self.path)
        path = unquote(split.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.hub._record(RecordedRequest(method, self.path, headers))
        body = b""
        if method == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = self.hub._take_fault(path, method)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.status is not None:
            self._send_json(fault.status, {"error": "injected"}, fault.headers)
            return
        token = self.hub.required_token
        if token is not None and not path.startswith("/files/"):  # noqa: SIM102
            if self.headers.get("Authorization") != f"Bearer {token}":
                self._send_json(
                    401,
                    {"error": "Invalid credentials"},
                    {"X-Error-Message": "Invalid credentials in Authorization header"},
                )
                return
        try:
            if method == "POST" and (match := _PATHS_INFO_RE.match(path)):
                self._paths_info(match, body)
            elif method == "GET" and (match := _TREE_RE.match(path)):
                self._tree(match)
            elif method == "GET" and (match := _INFO_RE.match(path)):
                self._repo_info(match)
            elif method in ("GET", "HEAD") and (match := _RESOLVE_RE.match(path)):
                self._resolve(match, method, fault)
            elif method in ("GET", "HEAD") and (match := _FILES_RE.match(path)):
                self._url_file(match["name"], method, fault)
            else:
                self._send_json(404, {"error": f"no route for {method} {path}"})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # -- Hub API ---------------------------------------------------------------------------

    def _commit(self, repo: str, revision: str | None) -> tuple[str, dict[str, HubFile]] | None:
        fake = self.hub.repos.get(repo)
        if fake is None:
            self._send_json(
                404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            )
            return None
        commit = fake.refs.get(revision or "main", revision or "main")
        if commit not in fake.commits:
            self._send_json(
                404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"}
            )
            return None
        return commit, fake.commits[commit]

    def _repo_info(self, match: re.Match[str]) -> None:
        found = self._commit(match["repo"], match["rev"])
        if found is None:
            return
        commit, files = found
        query = parse_qs(urlsplit(self.path).query)
        siblings = []
        for path, hub_file in sorted(files.items()):
            sibling: dict[str, object] = {"rfilename": path}
            if query.get("blobs") in (["True"], ["true"]):
                sibling.update(self._file_meta(hub_file))
            siblings.append(sibling)
        self._send_json(
            200,
            {
                "id": match["repo"],
                "modelId": match["repo"],
                "sha": commit,
                "private": False,
                "siblings": siblings,
                "tags": ["gguf"],
            },
        )

    @staticmethod
    def _file_meta(hub_file: HubFile) -> dict[str, object]:
        meta: dict[str, object] = {"size": len(hub_file.data), "blobId": hub_file.git_oid}
        if hub_file.lfs:
            meta["lfs"] = {
                "sha256": hub_file.sha256,
                "size": len(hub_file.data),
                "pointerSize": 134,
            }
        return meta

    @staticmethod
    def _tree_entry(path: str, hub_file: HubFile) -> dict[str, object]:
        entry: dict[str, object] = {
            "type": "file",
            "path": path,
            "size": len(hub_file.data),
            "oid": hub_file.git_oid,
        }
        if hub_file.lfs:
            entry["lfs"] = {"oid": hub_file.sha256, "size": len(hub_file.data), "pointerSize": 134}
        return entry

    def _tree(self, match: re.Match[str]) -> None:
        found = self._commit(match["repo"], match["rev"])
        if found is None:
            return
        _, files = found
        prefix = (match["path"] or "").strip("/")
        entries = [
            self._tree_entry(path, hub_file)
            for path, hub_file in sorted(files.items())
            if not prefix or path.startswith(prefix + "/")
        ]
        self._send_json(200, entries)

    def _paths_info(self, match: re.Match[str], body: bytes) -> None:
        found = self._commit(match["repo"], match["rev"])
        if found is None:
            return
        _, files = found
        form = parse_qs(body.decode())
        if not form and body.startswith(b"{"):
            form = {k: v if isinstance(v, list) else [v] for k, v in json.loads(body).items()}
        wanted = form.get("paths", [])
        self._send_json(200, [self._tree_entry(p, files[p]) for p in wanted if p in files])

    def _resolve(self, match: re.Match[str], method: str, fault: Fault | None) -> None:
        found = self._commit(match["repo"], match["rev"])
        if found is None:
            return
        commit, files = found
        hub_file = files.get(match["path"])
        if hub_file is None:
            self._send_json(
                404,
                {"error": "Entry not found"},
                {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit},
            )
            return
        headers = {"X-Repo-Commit": commit, "ETag": f'"{hub_file.etag}"'}
        if hub_file.lfs:
            headers["X-Linked-Etag"] = f'"{hub_file.sha256}"'
            headers["X-Linked-Size"] = str(len(hub_file.data))
        self._send_bytes(hub_file.data, method, headers, fault, key=match["path"])

    def _url_file(self, name: str, method: str, fault: Fault | None) -> None:
        data = self.hub.url_files.get(name)
        if data is None:
            self._send_json(404, {"error": "not found"})
            return
        self._send_bytes(data, method, {}, fault, key=name)

    # -- responses -------------------------------------------------------------------------

    def _send_bytes(
        self, data: bytes, method: str, headers: dict[str, str], fault: Fault | None, *, key: str
    ) -> None:
        if fault is not None and fault.replace_body is not None:
            data = fault.replace_body
        status, start, end = 200, 0, len(data)
        range_header = self.headers.get("Range")
        if range_header and (parsed := re.fullmatch(r"bytes=(\d+)-(\d*)", range_header)):
            start = int(parsed[1])
            end = min(len(data), int(parsed[2]) + 1) if parsed[2] else len(data)
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        self.send_response(status)
        for name, value in {
            **headers,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        if method == "HEAD":
            return
        payload = data[start:end]
        if fault is not None and fault.truncate_to is not None:
            payload = payload[: fault.truncate_to]
            self.close_connection = True
        if fault is not None and fault.stall_after is not None:
            self.wfile.write(payload[: fault.stall_after])
            self.wfile.flush()
            with self.hub._lock:
                self.hub.bytes_sent[key] = self.hub.bytes_sent.get(key, 0) + fault.stall_after
            time.sleep(60)  # until the client is killed; the thread is a daemon
            self.close_connection = True
            return
        sent = 0
        for offset in range(0, len(payload), 64 << 10):
            chunk = payload[offset : offset + (64 << 10)]
            self.wfile.write(chunk)
            sent += len(chunk)
            with self.hub._lock:
                self.hub.bytes_sent[key] = self.hub.bytes_sent.get(key, 0) + len(chunk)
        self.wfile.flush()

    def _send_json(
        self, status: int, payload: object, headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {
            **(headers or {}),
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        if not self._is_head:  # a body after HEAD would be read as the next response
            self.wfile.write(body)
