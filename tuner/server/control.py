"""The control plane of any Triton, embedded or remote, over gRPC.

Readiness, server metadata, the repository index, model configs (apply a
candidate through the load API's full config override, read it back),
load/unload and statistics. It never touches the server's files, so it works
on a remote server in explicit model-control mode. tritonclient's errors are
mapped here into tuner's one exception family.
"""

from __future__ import annotations

import time
from pathlib import Path

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tuner import config as cfgmod
from tuner.errors import ModelLoadError, ServerError
from tuner.server.connection import Connection, as_connection
from tuner.server.embedded import error_lines

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
        last, live = "", False
        while True:
            try:
                if self.client.is_server_ready(headers=self.headers, client_timeout=1.0):
                    return
                last, live = "server is live but not ready", True
            except InferenceServerException as err:
                last, live = _message(err)[:120], False
                refused = self._refused(_message(err))
                if refused is not None:
                    raise refused from None
            if time.monotonic() >= deadline:
                if live:
                    last += self._unready_models()
                raise ServerError(
                    f"Triton at {self.url} is not ready ({last}); check the server is running "
                    "and --url is its gRPC host:port (not the HTTP port)"
                    + ("" if self.connection.uses_tls else "; for a TLS endpoint pass --ssl or --root-certificates")
                )
            time.sleep(0.2)

    def _unready_models(self) -> str:
        """A live server is ready only while every model it holds is: the ones that are not, and why."""
        try:
            models = self._index()
        except (InferenceServerException, ServerError):
            return ""
        bad = [f"'{m.get('name', '')}' {m.get('state')}" + (f" ({m['reason'][:120]})" if m.get("reason") else "")
               for m in models if m.get("state") not in (None, "", "READY")]
        return f": {', '.join(bad)}" if bad else ""

    def metadata(self) -> dict:
        md = self._call("server metadata", self.client.get_server_metadata, as_json=True)
        return {"name": md.get("name", ""), "version": md.get("version", ""),
                "extensions": list(md.get("extensions", []))}

    def _index(self) -> list[dict]:
        """The repository index: one entry per model version (name, version, state, reason)."""
        return self._call("repository index", self.client.get_model_repository_index, as_json=True).get("models", [])

    def repository_models(self) -> dict[str, str]:
        """name -> state ("READY", "UNAVAILABLE", "" for not loaded)."""
        out: dict[str, str] = {}
        for m in self._index():
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
        """Whether the model (version) is ready. Triton answers False for a model that is
        not loaded or unknown; an error is never read as "not loaded", since a restore
        would then unload the user's model."""
        try:
            return bool(self._call("model readiness", self.client.is_model_ready, model, version))
        except InferenceServerException as err:
            raise ServerError(f"cannot tell whether '{model}' is loaded on Triton at {self.url}: "
                              f"{_message(err)[:160]}") from None

    def check_version(self, model: str, version: str) -> None:
        if not version or self.is_loaded(model, version):
            return
        ready = sorted({m.get("version", "") for m in self._index()
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

    def wait_unloaded(self, model: str, timeout_s: float) -> bool:
        """Whether every version of `model` has left READY and UNLOADING within timeout_s. Triton's
        unload returns before the backend lets go, and the server is not ready meanwhile."""
        deadline = time.monotonic() + timeout_s
        while True:
            busy = [m for m in self._index()
                    if m.get("name") == model and m.get("state") in ("READY", "UNLOADING")]
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

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
