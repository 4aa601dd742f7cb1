"""Triton servers: the embedded one tuner starts, and any server reached by URL.

`EmbeddedServer` runs a real `tritonserver` binary: the one bundled in the
nvidia-pytriton wheel (CPU, Python backend), or one found on PATH (e.g. inside
NVIDIA's Triton container on a GPU host). `ServerControl` is the control plane
for any server, embedded or remote: readiness, model configs (apply a
candidate through the load API's config override, read it back, restore),
statistics. It never touches the server's files, so it works on a remote
server in explicit model-control mode.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from . import config as cfgmod
from .connection import Connection, as_connection
from .errors import ModelLoadError, ServerError

BUNDLED_MODELS_DIR = Path(__file__).parent / "models"
READY_TIMEOUT_S = 90.0


# ---------------------------------------------------------------- install ---

@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path | None
    env: dict[str, str] = field(default_factory=dict)
    source: str = "embedded"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuner"


def embedded_install() -> TritonInstall:
    """The tritonserver bundled in the nvidia-pytriton wheel, made runnable."""
    try:
        import pytriton  # noqa: F401  (only to locate the wheel's files)
    except ImportError:
        raise ServerError(
            "the embedded Triton needs the nvidia-pytriton wheel; run `pip install nvidia-pytriton` "
            "or pass --url to use a running server"
        ) from None
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    assert spec is not None and spec.submodule_search_locations
    pkg = Path(list(spec.submodule_search_locations)[0])
    ts = pkg / "tritonserver"
    binary = ts / "bin" / "tritonserver"
    libs = pkg.parent / "nvidia_pytriton.libs"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = ts / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not binary.exists() or not stub.exists():
        raise ServerError(
            f"the nvidia-pytriton wheel at {pkg} has no tritonserver for Python {pyver}; "
            "reinstall it with `pip install --force-reinstall nvidia-pytriton`"
        )
    # The Python backend looks for its stub beside libtriton_python.so, and the
    # wheel keeps stubs per Python version elsewhere: assemble a backend folder.
    backend_dir = _cache_dir() / f"backends-py{pyver}-{binary.stat().st_size}"
    py_dir = backend_dir / "python"
    if not (py_dir / "triton_python_backend_stub").exists():
        tmp = backend_dir.with_name(backend_dir.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ts / "backends", tmp)
        shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
        try:
            os.replace(tmp, backend_dir)
        except OSError:  # another process assembled it first
            shutil.rmtree(tmp, ignore_errors=True)
    env = {"LD_LIBRARY_PATH": os.pathsep.join([str(libs), sysconfig.get_config_var("LIBDIR") or ""])}
    return TritonInstall(binary=binary, backend_dir=backend_dir, env=env, source="embedded")


def path_install() -> TritonInstall | None:
    found = shutil.which("tritonserver")
    if not found:
        return None
    return TritonInstall(binary=Path(found), backend_dir=None, env={}, source="path")


def find_install(prefer: str = "auto") -> TritonInstall:
    """prefer: "embedded" (the wheel's binary), "path", or "auto" (PATH first)."""
    if prefer in ("auto", "path"):
        inst = path_install()
        if inst is not None:
            return inst
        if prefer == "path":
            raise ServerError("no tritonserver on PATH; install Triton or use the embedded server")
    return embedded_install()


def server_env(install: TritonInstall) -> dict[str, str]:
    env = dict(os.environ)
    # The Python-backend stub imports numpy through the `python` first on PATH
    # (it ignores PYTHONPATH); with numpy 2 it silently returns empty outputs.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for key, value in install.env.items():
        env[key] = os.pathsep.join(p for p in [value, env.get(key, "")] if p)
    return env


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


def prepare_repository(dest: Path, names: list[str]) -> Path:
    """Copy bundled models into a model repository folder of tuner's own."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = BUNDLED_MODELS_DIR / name
        if not (src / "config.pbtxt").exists():
            have = ", ".join(bundled_models())
            raise ServerError(f"no bundled model '{name}'; bundled models are: {have}")
        target = dest / name
        if not target.exists():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        prepare = getattr(_model_preparers(), "get")(name)
        if prepare is not None:
            prepare(target)
    return dest


def _model_preparers() -> dict:
    preparers = {}
    try:
        from .resnet_onnx import prepare_model_dir

        preparers["resnet"] = prepare_model_dir
    except ImportError:
        pass
    return preparers


def bundled_models() -> list[str]:
    return sorted(p.name for p in BUNDLED_MODELS_DIR.iterdir() if (p / "config.pbtxt").exists())


# ----------------------------------------------------------------- server ---

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
    ):
        self.model_repository = Path(model_repository)
        self.log_path = Path(log_path)
        self.install = install or embedded_install()
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = tuple(extra_args)
        self.grpc_port = grpc_port
        self.probe = probe  # TLS / headers the readiness check needs, when extra_args ask for them
        self.http_port: int | None = None
        self.metrics_port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

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
        if self.install.backend_dir is not None:
            cmd.append(f"--backend-directory={self.install.backend_dir}")
        return cmd + list(self.extra_args)

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
                if self.proc is not None and self.proc.poll() is not None:
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

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=self.exit_timeout_s + 5)
            except subprocess.TimeoutExpired:
                pass
            try:  # the server and its backend stubs
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        elif proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # orphaned stubs, if any
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

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


# ---------------------------------------------------------------- control ---

def _status(err: InferenceServerException) -> str:
    return str(err.status() or "")


def _message(err: InferenceServerException) -> str:
    return (err.message() or str(err)).strip()


class ServerControl:
    """Control-plane operations on any Triton server reached over gRPC."""

    def __init__(self, url: "str | Connection", log_path: Path | None = None, timeout_s: float = 30.0):
        self.connection = as_connection(url)
        self.url = self.connection.url
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.headers = self.connection.header_dict()
        try:
            self.client = grpcclient.InferenceServerClient(self.url, **self.connection.client_kwargs())
        except ServerError:
            raise
        except Exception as err:  # bad URL syntax
            raise ServerError(f"cannot use server URL '{self.url}': {err}; give host:port of Triton's gRPC endpoint") from None

    def close(self) -> None:
        self.client.close()

    def _refused(self, msg: str) -> ServerError | None:
        if "polling is enabled" in msg or "explicit model load" in msg.lower():
            return ServerError(f"Triton at {self.url} does not allow loading models; "
                               "start tritonserver with --model-control-mode=explicit")
        if "restricted" in msg.lower() and "header" in msg.lower():
            # Triton names the header it expects, never its value.
            return ServerError(f"Triton at {self.url} refused the request ({msg[:160]}); pass the header with "
                               "--header 'Name: value' or [server] headers in the profile")
        return None

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, headers=self.headers, client_timeout=self.timeout_s, **kwargs)
        except InferenceServerException as err:
            msg = _message(err)
            refused = self._refused(msg)
            if refused is not None:
                raise refused from None
            if "UNAVAILABLE" in _status(err) or "DEADLINE" in _status(err):
                raise ServerError(
                    f"Triton at {self.url} is unreachable ({what}: {msg[:120]}); "
                    "check the server is running and --url is its gRPC host:port"
                    + ("" if self.connection.uses_tls else " (use --ssl for a TLS endpoint)")
                ) from None
            raise

    def wait_ready(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            try:
                if self.client.is_server_ready(headers=self.headers, client_timeout=1.0):
                    return
                last = "server is live but not ready"
            except InferenceServerException as err:
                last = _message(err)[:120]
                refused = self._refused(_message(err))
                if refused is not None:
                    raise refused from None
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"Triton at {self.url} is not ready ({last}); check the server is running "
                    "and --url is its gRPC host:port (not the HTTP port)"
                    + ("" if self.connection.uses_tls else "; for a TLS endpoint pass --ssl or --root-certificates")
                )
            time.sleep(0.2)

    def metadata(self) -> dict:
        md = self._call("server metadata", self.client.get_server_metadata, as_json=True)
        return {"name": md.get("name", ""), "version": md.get("version", ""),
                "extensions": list(md.get("extensions", []))}

    def repository_models(self) -> dict[str, str]:
        """name -> state ("READY", "UNAVAILABLE", "" for not loaded)."""
        idx = self._call("repository index", self.client.get_model_repository_index, as_json=True)
        out: dict[str, str] = {}
        for m in idx.get("models", []):
            name = m.get("name", "")
            state = m.get("state", "")
            if out.get(name) != "READY":
                out[name] = state
        return out

    def check_model(self, model: str) -> None:
        models = self.repository_models()
        if model not in models:
            have = ", ".join(sorted(models)) or "none"
            raise ServerError(
                f"model '{model}' is not in the server's repository (it has: {have}); "
                "fix the model name in the profile or --model"
            )

    def is_loaded(self, model: str, version: str = "") -> bool:
        try:
            return bool(self.client.is_model_ready(model, version, headers=self.headers,
                                                   client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def check_version(self, model: str, version: str) -> None:
        if not version or self.is_loaded(model, version):
            return
        idx = self._call("repository index", self.client.get_model_repository_index, as_json=True)
        ready = sorted({m.get("version", "") for m in idx.get("models", [])
                        if m.get("name") == model and m.get("state") == "READY"} - {""})
        raise ServerError(
            f"version {version} of model '{model}' is not being served (ready versions: "
            f"{', '.join(ready) or 'none'}); fix [model] version in the profile, or the model's version_policy"
        )

    def model_config(self, model: str, version: str = "") -> cfgmod.ModelConfig:
        try:
            resp = self._call("model config", self.client.get_model_config, model, model_version=version)
        except InferenceServerException as err:
            raise ServerError(f"cannot read the config of '{model}': {_message(err)}") from None
        return resp.config

    def load(self, model: str, cfg: cfgmod.ModelConfig | None = None) -> cfgmod.ModelConfig:
        """Load `model` (with `cfg` as a full config override); return the config read back."""
        since = self._log_size()
        try:
            self._call(
                "load model",
                self.client.load_model,
                model,
                config=cfgmod.config_to_json(cfg) if cfg is not None else None,
            )
        except InferenceServerException as err:
            msg = _message(err)
            detail = self._log_errors(since, model)
            reason = f"{msg}" + (f" (server log: {detail})" if detail else "")
            raise ModelLoadError(f"'{model}' failed to load: {reason}") from None
        return self.model_config(model)

    def unload(self, model: str) -> None:
        try:
            self._call("unload model", self.client.unload_model, model)
        except InferenceServerException as err:
            raise ServerError(f"cannot unload '{model}': {_message(err)}") from None

    def statistics(self, model: str) -> dict:
        try:
            return self._call(
                "statistics", self.client.get_inference_statistics, model, as_json=True
            )
        except InferenceServerException as err:
            raise ServerError(f"cannot read the statistics of '{model}': {_message(err)}; is it loaded?") from None

    def _log_size(self) -> int:
        if self.log_path is None:
            return 0
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _log_errors(self, since: int, model: str) -> str:
        if self.log_path is None:
            return ""
        # The server writes the reason a moment after answering.
        time.sleep(0.05)
        return error_lines(self.log_path, since, model)


class ModelSession:
    """Apply candidate configs to one model and always put the original back.

        with ModelSession(control, "resnet") as s:
            s.apply(candidate_cfg)
        # the original config (or unloaded state) is restored here
    """

    def __init__(self, control: ServerControl, model: str, version: str = ""):
        self.control = control
        self.model = model
        self.version = version
        self.was_loaded = False
        self.original: cfgmod.ModelConfig | None = None

    def open(self) -> cfgmod.ModelConfig:
        self.control.check_model(self.model)
        self.was_loaded = self.control.is_loaded(self.model)
        if not self.was_loaded:
            self.control.load(self.model)
        self.original = self.control.model_config(self.model)
        try:
            self.control.check_version(self.model, self.version)
        except ServerError:
            self.restore()
            raise
        return self.original

    def apply(self, cfg: cfgmod.ModelConfig) -> cfgmod.ModelConfig:
        return self.control.load(self.model, cfg)

    def restore(self) -> None:
        if self.original is None:
            return
        if self.was_loaded:
            self.control.load(self.model, self.original)
        else:
            self.control.unload(self.model)

    def __enter__(self) -> "ModelSession":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


# ------------------------------------------------------------ open server ---

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
        from dataclasses import replace

        conn = self.control.connection
        return conn if conn.url == self.url else replace(conn, url=self.url)

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
        srv = EmbeddedServer(Path(repo).resolve(), self.run_dir / "tritonserver.log")
        srv.start()
        self.ctx = ServerContext(srv.url, ServerControl(srv.url, srv.log_path), srv)
        return self.ctx

    def __exit__(self, *exc) -> None:
        if self.ctx is None:
            return
        self.ctx.control.close()
        if self.ctx.embedded is not None:
            self.ctx.embedded.stop()
