"""The run session: what `tuner sweep`, `tuner measure` and `tuner check` share.

    with RunSession(run_dir, SessionSpec("measure", model, connection=conn)) as s:
        s.record_run()                     # the run record, with the environment
        s.record(CandidateRecord(...))     # results.jsonl, appended and fsynced
        cfg = s.model.apply(candidate)     # a config, through Triton's load API
    # here, however the block ended: the original config is back (or the
    # failure to put it back is reported), session_end is written, the
    # embedded server is stopped, the lock is released

A session owns, for one run folder:
- the folder and its lock (`results/rundir.py`): one writer at a time; a
  folder that already holds results is refused unless the run is resumed;
- the results file (`results/store.py`), its torn tail repaired on open;
- the server: the embedded one (bundled model, tuner's own copy of the
  repository) or a remote one, always through the full connection (TLS,
  headers); a restart of the embedded one when it dies;
- the model (`server/model_session.py`): version checked, config read back,
  candidates applied, the original restored at the end. A restore that fails
  is always reported, alone or added to the error that ended the run, and
  recorded in the results file. A run that tunes several models (an
  ensemble's steps, a BLS model's callees, models sharing the server) opens
  each one (`open_model`): every model opened is restored, the last opened
  first, whatever happens to the others;
- signals: SIGTERM unwinds like Ctrl-C, and both become `Interrupted` with
  what was kept and how to continue.

Commands never open a server, a results file or a lock by themselves.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuner import __version__
from tuner import config as cfgmod
from tuner.errors import Interrupted, ServerError, StoreError, TunerError
from tuner.results.environment import collect as collect_environment
from tuner.results.records import Record, RestoreFailed, RunRecord, ServerInfo, ServerRestart, SessionEnd
from tuner.results.rundir import RunLock
from tuner.results.store import RESULTS_FILE, ResultsFile
from tuner.server.connection import Connection
from tuner.server.context import ServerContext, open_server
from tuner.server.control import ServerControl
from tuner.server.install import bundled_models
from tuner.server.model_session import ModelSession

Event = Callable[..., None]


@dataclass(frozen=True)
class SessionSpec:
    """What a session opens."""

    command: str  # "sweep" | "measure" | "check": named in the run record and in messages
    model: str
    version: str = ""  # "" = the version(s) the server's policy serves
    connection: Connection | None = None  # None: the embedded server with the bundled model
    resume: bool = False  # the folder holds this run's earlier results: continue it
    resume_hint: str = ""  # how to continue after a failure, e.g. "tuner sweep --resume R" ("" = none)
    profile: str | None = None  # profile name and hash, for the run record and the environment
    profile_sha256: str | None = None
    metrics_url: str | None = None  # overrides the server's own Prometheus endpoint
    # further models the run needs on the server (a BLS model's callees, models sharing the server);
    # the embedded server's repository also gets every bundled ensemble's steps
    models: tuple[str, ...] = ()


RESIGNAL_S = 0.02


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


class RunSession:
    """One run folder, one server, one model; see the module docstring."""

    def __init__(self, run_dir: Path, spec: SessionSpec, on_event: Event | None = None):
        self.run_dir = Path(run_dir)
        self.spec = spec
        self.emit = on_event or (lambda kind, **info: None)
        self.results = ResultsFile(self.run_dir / RESULTS_FILE)
        self.server: ServerContext | None = None
        self.model: ModelSession | None = None
        self.models: dict[str, ModelSession] = {}  # every model opened, the session's own first
        self.readback: cfgmod.ModelConfig | None = None
        self.started = time.monotonic()
        self.points_recorded = False
        self._lock = RunLock(self.run_dir)
        self._opener: open_server | None = None
        self._signum = signal.SIGINT
        self._old_sigterm = None
        self._writing = False

    # -- opening
    def __enter__(self) -> "RunSession":
        spec = self.spec
        missing = [m for m in (spec.model, *spec.models) if m not in bundled_models()]
        if spec.connection is None and missing:
            raise ServerError(f"'{missing[0]}' is not a bundled model ({', '.join(bundled_models())}); set "
                              f"[model] url in the profile or pass --url to {spec.command} a model on a "
                              "running Triton")
        self._lock.acquire()
        try:
            if self.results.exists() and not spec.resume:
                hint = (f"use --resume {self.run_dir} to continue it, or pick another --out"
                        if spec.command == "sweep" else "pick another --out")
                raise StoreError(f"{self.run_dir} already holds results; {hint}")
            self._writing = True  # from here on, this session writes the results file
            torn = self.results.repair_tail()
            if torn is not None:
                self.emit("torn", note=torn)
            self._catch_sigterm()
            self._open_server()
        except BaseException:
            self._close(None)
            raise
        return self

    def _open_server(self) -> None:
        spec = self.spec
        self._opener = open_server(spec.connection, self.run_dir, [spec.model, *spec.models])
        self.server = self._opener.__enter__()
        self.model = ModelSession(self.server.control, spec.model, spec.version)
        self.models[spec.model] = self.model
        self.readback = self.model.open()

    def open_model(self, name: str) -> cfgmod.ModelConfig:
        """Open one more model the run tunes (loaded if it is not; restored at the end): its config read back."""
        if name in self.models:
            return self.models[name].original
        session = ModelSession(self.server.control, name)
        self.models[name] = session  # kept before open(): whatever open() loaded is put back
        return session.open()

    def _catch_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled on the main thread

        def on_term(signum, frame):
            self._signum = signum
            if _in_finalizer(frame):
                # Python prints and drops an exception raised inside __del__ (seen in grpc's Call.__del__:
                # the sweep then ran to its end): send the signal again in a moment, from outside it.
                threading.Timer(RESIGNAL_S, os.kill, (os.getpid(), signum)).start()
                return
            raise KeyboardInterrupt

        self._old_sigterm = signal.signal(signal.SIGTERM, on_term)

    # -- during the run
    def record(self, rec: Record) -> None:
        self.results.append(rec)
        self.points_recorded = self.points_recorded or rec.to_record()["type"] == "point"

    def environment(self, metrics_url: str | None = None) -> dict:
        return collect_environment(self.server, self.spec.model, self.spec.profile_sha256,
                                   version=self.spec.version, metrics_url=metrics_url or self.spec.metrics_url)

    def record_run(self, environment: dict | None = None, **fields) -> RunRecord:
        """Write the run record: what ran, on which server, in which environment."""
        env = environment if environment is not None else self.environment()
        d = self.server.describe()
        run = RunRecord(
            command=self.spec.command, model=self.spec.model, version=self.spec.version,
            profile=self.spec.profile, profile_sha256=self.spec.profile_sha256,
            server=ServerInfo(url=d["url"], version=d["version"], extensions=tuple(d["extensions"]),
                              embedded=d["embedded"], tls=d["tls"], header_names=tuple(d["header_names"])),
            tuner_version=__version__, started_at=env.get("started_at", ""), environment=env, **fields)
        self.record(run)
        return run

    def original_config(self, config_path: Path | None = None, readback: cfgmod.ModelConfig | None = None,
                        model: str | None = None) -> cfgmod.ModelConfig:
        """The config candidates are made from: the profile's config file, else the embedded
        repository's config.pbtxt, else what the server read back (`readback`, default the
        session's: a remote server's files are out of reach). `model`: another model the run
        opened (default the session's own)."""
        if config_path is not None:
            return cfgmod.read_config(config_path)
        if self.server.embedded is not None:
            f = self.server.embedded.model_repository / (model or self.spec.model) / "config.pbtxt"
            if f.exists():
                return cfgmod.read_config(f)
        return readback if readback is not None else self.readback

    def server_alive(self) -> bool:
        emb = self.server.embedded if self.server is not None else None
        return emb is None or emb.alive()

    def restart_server(self, why: str) -> None:
        """Bring a dead embedded server back, the model's original config loaded."""
        srv = self.server
        self.emit("restart", reason=why)
        t0 = time.monotonic()
        srv.embedded.stop()
        srv.embedded.start()  # same gRPC port unless it was taken meanwhile
        srv.url = srv.embedded.url
        srv.control.close()
        srv.control = ServerControl(srv.url, srv.embedded.log_path)
        for session in self.models.values():  # the session's own model first: an ensemble loads its steps
            session.control = srv.control
            srv.control.load(session.model, session.original)
        self.record(ServerRestart(reason=why, restart_s=time.monotonic() - t0))

    # -- closing
    def __exit__(self, exc_type, exc, tb) -> None:
        problem = self._close(exc)
        if isinstance(exc, KeyboardInterrupt):
            raise self._interrupted(problem) from None
        if exc is None:
            if problem is not None:
                raise ServerError(problem)
            return
        if not isinstance(exc, TunerError):
            return  # a bug: let its traceback through
        message = str(exc)
        if (isinstance(exc, ServerError) and self.points_recorded and self.spec.resume_hint
                and "--resume" not in message):
            message += f"; results so far are in {self.results.path}; continue with `{self.spec.resume_hint}`"
        if problem is not None:
            message += f"; {problem}"
        if message != str(exc):
            raise type(exc)(message) from None

    def _close(self, exc: BaseException | None) -> str | None:
        """Restore, record the end, stop the server, unlock; what went wrong restoring, if anything."""
        problem = None
        try:
            problem = self._restore()
            if self._writing and self.results.path.exists():
                self.record(SessionEnd(duration_s=time.monotonic() - self.started))
        finally:
            try:
                if self._opener is not None:
                    self._opener.__exit__(None, None, None)
            finally:
                self._lock.release()
                if self._old_sigterm is not None:
                    signal.signal(signal.SIGTERM, self._old_sigterm)
                    self._old_sigterm = None
        return problem

    def _restore(self) -> str | None:
        """Put every opened model back, the last opened first (an ensemble's steps before the ensemble);
        one failure does not stop the others. What could not be put back, in words, or None."""
        opened = [m for m in self.models.values() if m.original is not None]
        if not opened:
            return None
        if not self.server_alive():
            return None  # the embedded server serves tuner's own copy of the repository: nothing to undo
        self.emit("restore")
        problems = []
        for model in reversed(opened):
            try:
                model.restore()
                continue
            except TunerError as err:
                why = str(err).split(";")[0][:160]
                if not model.was_loaded:
                    problem = f"'{model.model}' could NOT be unloaded again ({why}); unload it on the server"
                else:
                    problem = (f"the original config of '{model.model}' could NOT be put back ({why}); reload "
                               f"the model on the server to restore it (its files are unchanged)")
            if self._writing:
                self.record(RestoreFailed(model=model.model, error=problem))
            problems.append(problem)
        return "; ".join(problems) or None

    def _interrupted(self, problem: str | None) -> Interrupted:
        restored = "original config restored" if problem is None else problem
        hint = f"; continue with `{self.spec.resume_hint}`" if self.spec.resume_hint else ""
        return Interrupted(self._signum, f"interrupted by signal {int(self._signum)}: {restored}, results kept "
                                         f"in {self.results.path}{hint}")
