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
