"""One exception family for everything tuner reports to a user.

    TunerError              base; str(err) is a one-line message naming cause and fix
    +-- ProfileError        a profile TOML file is malformed or names impossible values
    +-- ConfigError         a config.pbtxt cannot be parsed, or a candidate is invalid
    +-- ServerError         the server cannot be started, reached, or refuses an operation
    |   +-- ModelLoadError  the server refused to load a (candidate) config
    +-- LoadError           load generation failed (bad responses, unbuildable inputs)
    +-- StoreError          a results file or run folder cannot be read or written
    +-- Interrupted         the user or the system asked the run to stop (SIGINT/SIGTERM)

Only the CLI turns these into messages and exit codes; library code raises them.
"""

from __future__ import annotations


class TunerError(Exception):
    exit_code = 1


class ProfileError(TunerError):
    exit_code = 2


class ConfigError(TunerError):
    exit_code = 2


class ServerError(TunerError):
    exit_code = 3


class ModelLoadError(ServerError):
    pass


class LoadError(TunerError):
    exit_code = 4


class StoreError(TunerError):
    exit_code = 2


class Interrupted(TunerError):
    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        super().__init__(message or f"interrupted by signal {signum}")

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return 128 + self.signum
