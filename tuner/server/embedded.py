"""The tritonserver process tuner owns: free ports, explicit model control, its log.

`EmbeddedServer` runs a real `tritonserver` binary (`install.py` says which)
in a process group of its own, so that everything it starts (the Python
backend's stub processes) ends with it, whatever way the server exits.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tuner.errors import ServerError
from tuner.server.connection import Connection
from tuner.server.install import TritonInstall, embedded_install, server_env
from tuner.server.keeper import remove_shm_regions

READY_TIMEOUT_S = 90.0



def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: the server gets SIGKILL if tuner dies without stopping it.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


class EmbeddedServer:
    """A tritonserver process tuner owns: free ports, explicit model control."""

    def __init__(
        self,
        model_repository: Path,
        log_path: Path,
        install: TritonInstall | None = None,
        exit_timeout_s: int = 2,
        extra_args: tuple[str, ...] = (),
        grpc_port: int | None = None,
        probe: "Connection | None" = None,
        auto_complete: bool = False,
    ):
        self.model_repository = Path(model_repository)
        self.log_path = Path(log_path)
        self.install = install or embedded_install()
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = tuple(extra_args)
        self.grpc_port = grpc_port
        self.probe = probe  # TLS / headers the readiness check needs, when extra_args ask for them
        # Off unless a repository tuner did not write is served (`tuner serve`): with it on,
        # every model load first starts a Python-backend stub only to ask the model to
        # complete its config, 1.25 s a load measured here (resnet 1.51 -> 0.26 s,
        # synthetic 1.37 -> 0.11 s), and a sweep loads some 24 configs. tuner's own copies
        # of the bundled models carry complete configs, and candidates never rely on it
        # (config/candidates.py refuses a config that does).
        self.auto_complete = auto_complete
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self._keeper: subprocess.Popen | None = None
        self._keeper_pipe: int | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str | None:
        """host:port of the HTTP endpoint (load/http.py's wire); None before the server starts."""
        return f"127.0.0.1:{self.http_port}" if self.http_port else None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        cmd = [
            str(self.install.binary),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-http=true",
            "--log-info=true",
        ]
        if not self.auto_complete:
            cmd.append("--disable-auto-complete-config")
        if self.install.backend_dir is not None:
            cmd.append(f"--backend-directory={self.install.backend_dir}")
        cmd.append(f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}")
        return cmd + list(self.extra_args)

    @property
    def shm_prefix(self) -> str:
        """Names this server's Python-backend shared-memory regions (/dev/shm/<prefix><uuid>).

        A killed server leaves its regions behind (1 MiB each, seen by the dozen after a
        day of tests); a name of its own lets `stop` and the keeper remove exactly these."""
        return f"tuner_{os.getpid()}_{self.grpc_port}_"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "EmbeddedServer":
        last_err = None
        for _attempt in range(3):  # a picked port can be taken before the server binds it
            self.grpc_port = self.grpc_port or free_port()
            self.http_port = free_port()
            self.metrics_port = free_port()
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    self.command(),
                    stdout=self._log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=server_env(self.install),
                    preexec_fn=_die_with_parent,
                )
            except OSError as err:
                raise ServerError(f"cannot run {self.install.binary}: {err.strerror}") from None
            self._start_keeper()
            try:
                self._wait_ready(timeout_s)
                return self
            except ServerError as err:
                last_err = err
                self.stop()
                # A taken port, or a crash while starting (seen once: gRPC's poller
                # aborting at start-up), is worth another try; a timeout is not.
                if "address already in use" not in self.log_tail(20).lower() and "exited" not in str(err):
                    raise
                self.grpc_port = None
        raise last_err  # type: ignore[misc]

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        from dataclasses import replace

        probe = replace(self.probe, url=self.url) if self.probe else Connection(self.url)
        client = grpcclient.InferenceServerClient(self.url, **probe.client_kwargs())
        headers = probe.header_dict()
        try:
            while time.monotonic() < deadline:
                if self.proc is not None and not self.alive():
                    raise ServerError(
                        f"tritonserver exited with code {self.proc.returncode} while starting; "
                        f"log {self.log_path}: {self.log_tail(3, one_line=True)}"
                    )
                try:
                    if client.is_server_ready(headers=headers, client_timeout=1.0):
                        return
                except InferenceServerException:
                    pass
                time.sleep(0.1)
        finally:
            client.close()
        raise ServerError(
            f"tritonserver did not become ready within {timeout_s:.0f} s; log {self.log_path}: "
            f"{self.log_tail(3, one_line=True)}"
        )

    def _start_keeper(self) -> None:
        """A process that ends the server's stubs whenever the server exits (see keeper.py)."""
        read_fd, write_fd = os.pipe()
        try:
            self._keeper = subprocess.Popen(
                [sys.executable, "-m", "tuner.server.keeper", str(self.proc.pid), self.shm_prefix],
                stdin=read_fd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # outside the server's group, and not ended by Ctrl-C
            )
        except OSError:
            os.close(write_fd)
            self._keeper = None  # stop() still ends the group while tuner lives
        else:
            self._keeper_pipe = write_fd  # closed when tuner ends, however it ends
        finally:
            os.close(read_fd)

    def _stop_keeper(self) -> None:
        keeper, self._keeper = self._keeper, None
        if self._keeper_pipe is not None:
            os.close(self._keeper_pipe)
            self._keeper_pipe = None
        if keeper is not None:
            try:
                keeper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                keeper.kill()
                keeper.wait()

    def alive(self) -> bool:
        """Whether the server runs. An exited server is not reaped here: while its zombie
        lives, its process-group id cannot be given to a new process, so `stop` can still
        SIGKILL the group (its stubs) without hitting a stranger."""
        return self.proc is not None and self._running(self.proc)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and self._running(proc):
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                # not proc.wait(): reaping would free the group id before the SIGKILL below
                self._wait_exit(proc, self.exit_timeout_s + 5)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None and proc.returncode is None:
            try:  # the server and its backend stubs; its unreaped zombie keeps the group id ours
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self._stop_keeper()
        if proc is not None:
            remove_shm_regions(self.shm_prefix)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @staticmethod
    def _running(proc: subprocess.Popen) -> bool:
        if proc.returncode is not None:
            return False
        try:
            return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return proc.poll() is None

    @classmethod
    def _wait_exit(cls, proc: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while cls._running(proc):
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout_s)
            time.sleep(0.02)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_tail(self, n: int = 5, one_line: bool = False, since: int = 0) -> str:
        return log_tail(self.log_path, n, one_line=one_line, since=since)

    def __enter__(self) -> "EmbeddedServer":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def log_tail(path: Path, n: int = 5, one_line: bool = False, since: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    lines = [ln for ln in lines if ln.strip()][-n:]
    return " | ".join(ln.strip() for ln in lines) if one_line else "\n".join(lines)


def error_lines(path: Path, since: int, model: str = "") -> str:
    """The server log's error lines written since `since` (for load failures)."""
    try:
        with open(path, "rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    # Triton log lines start with a severity letter then the date (E1125 ...).
    errs = [ln.strip() for ln in lines if len(ln) > 1 and ln[0] == "E" and ln[1].isdigit()]
    if not errs:
        errs = [ln.strip() for ln in lines if "error" in ln.lower() or "failed" in ln.lower()]
    return " | ".join(errs[-3:])
