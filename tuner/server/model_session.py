"""One model on a server: apply candidate configs, always put the original back."""

from __future__ import annotations

from tuner import config as cfgmod
from tuner.errors import ServerError
from tuner.server.control import ServerControl


class ModelSession:
    """Apply candidate configs to one model and always put the original back.

        with ModelSession(control, "resnet") as s:
            s.apply(candidate_cfg)
        # the original config (or unloaded state) is restored here
    """

    # How long an unload may take before it counts as hung. Python stubs let go in about 1.3 s on
    # the 2-core box; a large GPU model takes longer, and loading a second copy beside one that is
    # still unloading could exhaust its device's memory, so the wait is generous.
    UNLOAD_WAIT_S = 60.0

    def __init__(self, control: ServerControl, model: str, version: str = "",
                 unload_wait_s: float | None = None):
        self.control = control
        self.unload_wait_s = self.UNLOAD_WAIT_S if unload_wait_s is None else unload_wait_s
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
            self._unload()

    def _unload(self) -> None:
        """Unload the model tuner loaded, and see the server ready again.

        Triton 2.51's unload of a Python-backend model hung, rarely, with no request in flight
        (in two of five bench passes, each time after the knee surface's smart sweep; the version
        stayed UNLOADING until the server was killed): a server left not ready fails its
        readiness probe. A load from the model's files puts a ready version in front of the hung
        one, and the unload is tried once more; if that hangs as well, the model stays loaded
        from its files and the caller is told."""
        for _attempt in range(2):
            self.control.unload(self.model)
            if self.control.wait_unloaded(self.model, self.unload_wait_s):
                return
            self.control.load(self.model)
        raise ServerError(
            f"Triton did not finish unloading '{self.model}' within {self.unload_wait_s:g} s, twice, so it "
            f"is left loaded from its files (it was not loaded before tuner); unload it on the server, "
            f"or restart the server if that hangs too"
        )

    def __enter__(self) -> "ModelSession":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.restore()
