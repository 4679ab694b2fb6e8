"""Shared fixtures: the benchmark data folder, a stand-in UMAP, and a local HTTP server for
download tests."""

from __future__ import annotations

import collections
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_ENV = "GRAPHCLUST_SHARED_DATA"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The benchmark folder: ``$GRAPHCLUST_SHARED_DATA``, else ``<repo root>/../shared/data``.

    Skips the test when neither exists (the data ship only with the development checkout).
    """
    candidates = []
    env = os.environ.get(SHARED_DATA_ENV, "").strip()
    if env:
        candidates.append(Path(env).expanduser())
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for folder in candidates:
        if folder.is_dir():
            return folder.resolve()
    pytest.skip("../shared/data not found: benchmark data ships only with the development checkout")


@pytest.fixture
def fake_umap(monkeypatch: pytest.MonkeyPatch):
    """Install a stand-in ``umap`` module: ``fake_umap(transform)`` makes ``UMAP(**kw)``
    record ``kw`` (the latest call's keys, and every call's ``kw`` in the list ``"calls"``)
    and ``fit_transform(F)`` record ``F.shape`` (key ``"shape"``) and return
    ``transform(F)`` (the identity by default). Returns the dict of what it saw.

    umap-learn is slow to import and compile (numba); the code around it is what is tested.
    """
    import sys
    import types

    def install(transform=lambda F: F) -> dict:
        seen: dict = {"calls": []}

        class FakeUMAP:
            def __init__(self, **kwargs):
                seen.update(kwargs)
                seen["calls"].append(dict(kwargs))

            def fit_transform(self, F):
                seen["shape"] = F.shape
                return transform(F)

        monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
        return seen

    return install


# --------------------------------------------------------------------------- HTTP server
class LocalFileServer:
    """Serves fixed bytes on 127.0.0.1 with scripted failures; answers at most ``max_requests``.

    ``add(path, body, drop_first=k)`` makes the first ``k`` requests for ``path``
    announce the full Content-Length, send half the body and close the
    connection (a dropped transfer); later requests get the whole body.
    """

    def __init__(self, max_requests: int = 20) -> None:
        self.max_requests = max_requests
        self.routes: dict[str, tuple[bytes, int, int]] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def add(self, path: str, body: bytes, *, drop_first: int = 0, status: int = 200) -> str:
        """Serve ``body`` at ``path``; return its URL."""
        self.routes[path] = (body, drop_first, status)
        return self.base_url + path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _respond(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.hits[handler.path] += 1
            count, total = self.hits[handler.path], sum(self.hits.values())
        if total > self.max_requests:
            handler.send_error(503, "request budget of the test server exhausted")
            return
        if handler.path not in self.routes:
            handler.send_error(404)
            return
        body, drop_first, status = self.routes[handler.path]
        if status != 200:
            handler.send_error(status)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if count <= drop_first:
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True  # the server closes the socket: a short read
            return
        handler.wfile.write(body)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.owner._respond(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def local_http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalFileServer]:
    """A :class:`LocalFileServer` on an ephemeral port, stopped after the test."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = LocalFileServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
