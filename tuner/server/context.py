"""A server to measure: a remote one by URL, or the embedded one with bundled models."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tuner.server.connection import Connection
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer
from tuner.server.install import prepare_repository

@dataclass
class ServerContext:
    """A server to measure: its control plane, and the process when tuner owns it."""

    url: str
    control: ServerControl
    embedded: EmbeddedServer | None = None

    @property
    def metrics_url(self) -> str | None:
        return self.embedded.metrics_url if self.embedded else None

    @property
    def connection(self) -> Connection:
        """URL, TLS and headers for load clients (follows a restarted server's URL)."""
        conn = self.control.connection
        if conn.url != self.url:
            conn = replace(conn, url=self.url)
        if self.embedded is not None and self.embedded.http_url:
            conn = replace(conn, http_url=self.embedded.http_url)
        return conn

    def describe(self) -> dict:
        md = self.control.metadata()
        conn = self.control.connection.describe()
        return {"url": self.url, "version": md.get("version", ""), "extensions": md.get("extensions", []),
                "embedded": self.embedded is not None, "tls": conn["tls"], "header_names": conn["header_names"]}


class open_server:
    """Context manager: a remote server by URL, or the embedded one with bundled models.

        with open_server(None, run_dir, ["synthetic"]) as srv: ...
    """

    def __init__(self, url: "str | Connection | None", run_dir: Path, bundled: list[str] | None = None,
                 model_repository: Path | None = None, ready_timeout_s: float = 5.0):
        self.url = url
        self.run_dir = Path(run_dir)
        self.bundled = bundled or []
        self.model_repository = model_repository
        self.ready_timeout_s = ready_timeout_s
        self.ctx: ServerContext | None = None

    def __enter__(self) -> ServerContext:
        if self.url:
            control = ServerControl(self.url)
            try:
                control.wait_ready(self.ready_timeout_s)
            except BaseException:
                control.close()
                raise
            self.ctx = ServerContext(control.url, control)
            return self.ctx
        repo = self.model_repository
        if repo is None:
            # tuner's own copy: a user's repository is never changed.
            repo = prepare_repository(self.run_dir / "model_repository", self.bundled)
        srv = EmbeddedServer(Path(repo).resolve(), self.run_dir / "tritonserver.log",
                             auto_complete=self.model_repository is not None)
        srv.start()
        self.ctx = ServerContext(srv.url, ServerControl(srv.url, srv.log_path), srv)
        return self.ctx

    def __exit__(self, *exc) -> None:
        if self.ctx is None:
            return
        self.ctx.control.close()
        if self.ctx.embedded is not None:
            self.ctx.embedded.stop()
