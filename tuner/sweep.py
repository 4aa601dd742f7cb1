"""`tuner sweep`: every candidate config, climbed in load, on one server.

For each candidate: apply it (load API, full config override), then measure
it at increasing concurrency until throughput stops growing or the latency
budget breaks (that point is recorded, then the candidate stops climbing).
The model's original config is measured the same way first (the baseline).
Each load point is appended to results.jsonl as it finishes; `resume` skips
every point and candidate already stored. The original config is restored
at the end, after a failure and after Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import fcntl
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tuner import __version__
from tuner.load import eventloop
from tuner import config as cfgmod
from tuner.results.environment import collect as collect_environment
from tuner.errors import Interrupted, ModelLoadError, ServerError, StoreError, TunerError
from tuner.load.client import LoadClient
from tuner.load.request import RequestPlan, build_request
from tuner.search.strategy import BASELINE, make_strategy
from tuner.load.telemetry import default_metrics_url
from tuner.report.outputs import finalize_run
from tuner.profile import Profile, save_run_profile
from tuner.results.store import (CandidateRecord, Measurement, RESULTS_FILE, SCHEMA, append_record,
                                 load_results)
from tuner.server.context import ServerContext, open_server
from tuner.server.control import ServerControl
from tuner.server.install import bundled_models
from tuner.server.model_session import ModelSession

MAX_RESTARTS = 3
Event = Callable[..., None]


@dataclass
class SweepOutcome:
    run_dir: Path
    summary: dict
    candidates_measured: int
    candidates_failed: int


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One sweep per run folder: a second one is refused, not interleaved."""
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise StoreError(f"{run_dir} is in use by another tuner run; wait for it or pick another --out") from None
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


@contextmanager
def signals_as_interrupts() -> Iterator[dict]:
    """SIGTERM behaves like Ctrl-C (unwinds, restores), remembering which came."""
    got = {"signum": signal.SIGINT}

    def on_term(signum, _frame):
        got["signum"] = signum
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield got
    finally:
        signal.signal(signal.SIGTERM, old)


class Sweep:
    def __init__(self, profile: Profile, run_dir: Path, on_event: Event | None = None):
        self.profile = profile
        self.run_dir = Path(run_dir)
        self.results_path = self.run_dir / RESULTS_FILE
        self.emit = on_event or (lambda kind, **kw: None)
        self.stored: dict[tuple[str, int], Measurement] = {}
        self.ended: set[str] = set()
        self.failed_before: dict[str, str] = {}
        self.started = time.monotonic()
        self.restarts = 0
        self.points_recorded = False

    # -- stored state (resume) --
    def _read_stored(self) -> None:
        if not self.results_path.exists():
            return
        res = load_results(self.results_path)
        # Failed points (server gone, killed run) are measured again.
        self.stored = {(p.candidate_id, p.concurrency): p for p in res.points if p.status == "ok"}
        from tuner.results.store import read_records

        for rec in read_records(self.results_path):
            if rec.get("type") == "candidate_end":
                self.ended.add(rec["candidate_id"])
        # Candidates that failed to load are not loaded again on resume.
        self.failed_before = {cid: c.reason for cid, c in res.candidates.items()
                              if c.status == "failed" and not any(p.candidate_id == cid for p in res.points)}

    def _record(self, rec: dict) -> None:
        append_record(self.results_path, rec)
        self.points_recorded = self.points_recorded or rec.get("type") == "point"

    def run(self, resume: bool = False) -> SweepOutcome:
        p = self.profile
        if p.url is None and p.model not in bundled_models():
            raise ServerError(
                f"'{p.model}' is not a bundled model ({', '.join(bundled_models())}); set [model] url in "
                "the profile or pass --url to tune a model on a running Triton"
            )
        with run_lock(self.run_dir):
            if resume:
                self._read_stored()
            else:
                if self.results_path.exists():
                    raise StoreError(f"{self.run_dir} already holds results; use --resume {self.run_dir} "
                                     "to continue it, or pick another --out")
            save_run_profile(self.run_dir, p)
            with signals_as_interrupts() as got:
                try:
                    self._run_on_server()
                except ServerError as err:
                    if not (self.points_recorded or self.stored) or "--resume" in str(err):
                        raise
                    raise type(err)(f"{err}; results so far are in {self.results_path}; continue with "
                                    f"`tuner sweep --resume {self.run_dir}`") from None
                except KeyboardInterrupt:
                    raise Interrupted(got["signum"], f"interrupted by signal {got['signum']}: original "
                                      f"config restored, results kept in {self.results_path}; continue with "
                                      f"`tuner sweep --resume {self.run_dir}`") from None
            summary = finalize_run(self.run_dir)
        res = load_results(self.results_path)
        measured = [c for c in res.candidates.values() if not c.is_baseline and c.status == "loaded"]
        failed = [c for c in res.candidates.values() if c.status == "failed"]
        if not measured and failed:
            raise TunerError(f"every candidate failed to load or serve ({len(failed)}); first: "
                             f"{failed[0].candidate_id}: {failed[0].reason}; results in {self.run_dir}")
        return SweepOutcome(self.run_dir, summary, len(measured), len(failed))

    def _run_on_server(self) -> None:
        p = self.profile
        with open_server(p.connection(), self.run_dir, [p.model]) as srv:
            session = ModelSession(srv.control, p.model, p.version)
            try:
                readback = session.open()
                stored_readback = self.run_dir / "original" / "readback.json"
                if stored_readback.exists():
                    # A resumed run: the server may still hold a candidate left by a
                    # killed run; the original is what the first session read.
                    readback = cfgmod.config_from_json(stored_readback.read_text(encoding="utf-8"))
                    session.original = readback
                original = original_config(self.profile, srv, readback)
                cfgmod.check_tunable(original, first_dim_is_batch=p.first_dim_is_batch, where=p.model)
                orig_dir = self.run_dir / "original"
                orig_dir.mkdir(exist_ok=True)
                (orig_dir / "config.pbtxt").write_text(cfgmod.format_config(original), encoding="utf-8")
                stored_readback.write_text(cfgmod.config_to_json(readback), encoding="utf-8")
                specs = p.search.specs()
                for spec in specs:  # validate every candidate before measuring any
                    cfgmod.make_candidate(original, spec, first_dim_is_batch=p.first_dim_is_batch)
                self._record({
                    "schema": SCHEMA, "type": "run", "command": "sweep", "profile": p.name,
                    "profile_sha256": p.sha256, "model": p.model, "version": p.version,
                    "server": srv.describe(), "tuner_version": __version__,
                    "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "candidates_planned": len(specs),
                    "environment": collect_environment(srv, p.model, p.sha256, version=p.version),
                })
                plan = build_request(readback, p.model, p.version, p.shapes, p.data)
                eventloop.run(self._measure_all(srv, session, original, readback, specs, plan))
            except BaseException:
                self._finish_session(srv, session, failing=True)
                raise
            else:
                self._finish_session(srv, session, failing=False)

    def _finish_session(self, srv: ServerContext, session: ModelSession, failing: bool) -> None:
        self._record({"schema": SCHEMA, "type": "session_end", "duration_s": time.monotonic() - self.started})
        self.emit("restore")
        try:
            session.restore()
        except TunerError:
            # A server that went away cannot be restored; don't hide why the run stopped.
            if not failing and (srv.embedded is None or srv.embedded.alive()):
                raise

    def _restart_embedded(self, srv: ServerContext, session: ModelSession, why: str) -> None:
        """Bring a killed embedded server back with the original config loaded."""
        self.restarts += 1
        if srv.embedded is None or self.restarts > MAX_RESTARTS:
            raise ServerError(f"tritonserver exited {self.restarts} times ({why}); results so far are in "
                              f"{self.results_path}; continue with `tuner sweep --resume {self.run_dir}`")
        self.emit("restart", reason=why)
        t0 = time.monotonic()
        srv.embedded.stop()
        srv.embedded.start()  # same gRPC port unless it was taken meanwhile
        srv.url = srv.embedded.url
        srv.control.close()
        srv.control = ServerControl(srv.url, srv.embedded.log_path)
        session.control = srv.control
        srv.control.load(session.model, session.original)
        self._record({"schema": SCHEMA, "type": "server_restart", "reason": why,
                      "restart_s": time.monotonic() - t0})

    async def _measure_all(self, srv: ServerContext, session: ModelSession, original, readback,
                           specs: list[cfgmod.CandidateSpec], plan: RequestPlan) -> None:
        p = self.profile
        candidates = [(BASELINE, cfgmod.current_spec(readback))] + [(s.candidate_id, s) for s in specs]
        configs = {BASELINE: readback}
        strategy = make_strategy(p.search.strategy, p, candidates)
        started: list[str] = []
        loaded: str | None = None
        deaths: dict[str, int] = {}
        client: LoadClient | None = None
        try:
            while (step := strategy.next_step()) is not None:
                cid = step.candidate_id
                if step.kind == "end":
                    if cid not in self.ended:
                        self._record({"schema": SCHEMA, "type": "candidate_end", "candidate_id": cid,
                                      "reason": step.reason})
                    continue
                if step.kind == "skip":
                    if cid not in self.ended:
                        self._record(CandidateRecord(step.spec, "skipped", reason=step.reason).to_record())
                        self._record({"schema": SCHEMA, "type": "candidate_end", "candidate_id": cid,
                                      "reason": "skipped"})
                    self.emit("skipped", candidate_id=cid, reason=step.reason)
                    continue
                if cid not in started:
                    started.append(cid)
                    self.emit("candidate", index=len(started), total=len(candidates), candidate_id=cid,
                              elapsed_s=time.monotonic() - self.started)
                stored = self.stored.get((cid, step.concurrency))
                if stored is not None:
                    strategy.observe(stored)
                    continue
                if cid in self.failed_before:
                    strategy.observe_failed(cid, self.failed_before[cid])
                    continue
                try:
                    if loaded != cid:
                        loaded = None
                        reason = self._apply(srv, session, original, configs, cid, step.spec)
                        if reason is not None:
                            strategy.observe_failed(cid, reason)
                            continue
                        loaded = cid
                    if client is None:
                        # one client for the whole sweep: its load processes (or Ray actors)
                        # start once, not once per candidate
                        metrics_url = srv.metrics_url or default_metrics_url(srv.url)
                        client = await LoadClient(srv.connection, p.model, p.version,
                                                  metrics_url=metrics_url).__aenter__()
                    m = await self._measure_point(client, srv, cid, step.concurrency, plan)
                except _ServerDied as died:
                    loaded = None
                    if client is not None:  # the restarted server may listen elsewhere: connect anew
                        await client.__aexit__(None, None, None)
                        client = None
                    deaths[cid] = deaths.get(cid, 0) + 1
                    self._restart_embedded(srv, session, str(died))
                    if deaths[cid] >= 2:  # a server killed twice under one candidate: the candidate's fault
                        reason = f"tritonserver exited twice: {died}"
                        self._record(CandidateRecord(step.spec, "failed", reason=reason,
                                                     is_baseline=cid == BASELINE).to_record())
                        strategy.observe_failed(cid, reason)
                    continue
                if m.status == "failed":
                    self._record(CandidateRecord(step.spec, "failed", reason=f"errors under load: {m.first_error}",
                                                 config_json=cfgmod.config_to_json(configs[cid]),
                                                 is_baseline=cid == BASELINE).to_record())
                strategy.observe(m)
        finally:
            if client is not None:
                await client.__aexit__(None, None, None)

    def _apply(self, srv: ServerContext, session: ModelSession, original, configs: dict, cid: str,
               spec: cfgmod.CandidateSpec) -> str | None:
        """Load a candidate; None when it serves, else why it failed (recorded)."""
        p = self.profile
        try:
            if cid == BASELINE:
                config = session.apply(configs[BASELINE])  # a no-op unless a candidate is loaded
            else:
                cand_cfg = cfgmod.make_candidate(original, spec, first_dim_is_batch=p.first_dim_is_batch)
                config = session.apply(cand_cfg)
        except ModelLoadError as err:
            if srv.embedded is not None and not srv.embedded.alive():
                raise _ServerDied(f"while loading {cid}") from None
            self._record(CandidateRecord(spec, "failed", reason=str(err), is_baseline=cid == BASELINE).to_record())
            self.emit("failed", candidate_id=cid, reason=str(err))
            return str(err)
        except ServerError:
            if srv.embedded is not None and not srv.embedded.alive():
                raise _ServerDied(f"while loading {cid}") from None
            raise
        configs[cid] = config
        self._record(CandidateRecord(spec, "loaded", config_json=cfgmod.config_to_json(config),
                                     is_baseline=cid == BASELINE).to_record())
        return None

    async def _measure_point(self, client: LoadClient, srv: ServerContext, cid: str, level: int,
                             plan: RequestPlan) -> Measurement:
        p = self.profile
        self.emit("level", candidate_id=cid, concurrency=level)
        samples = await client.closed_loop(plan, level, p.measurement)
        m = Measurement(candidate_id=cid, concurrency=level, windows=samples.windows,
                        stable=samples.stable, error_kinds=samples.error_kinds,
                        first_error=samples.first_error, summary_windows=p.measurement.min_windows)
        if not samples.windows or all(w.completed == 0 for w in samples.windows):
            m.status = "failed"
        died = srv.embedded is not None and not srv.embedded.alive()
        gone = (srv.embedded is None and (m.status == "failed" or "UNAVAILABLE" in m.error_kinds)
                and not self._reachable(srv))
        if died:
            m.status = "failed"
            m.first_error += f" (tritonserver exited; log: {srv.embedded.log_tail(2, one_line=True)})"
        if gone:
            m.status = "failed"
            m.first_error += f" (Triton at {srv.url} went away)"
        # A failed point is kept on disk but measured again by a restart or --resume.
        self._record(m.to_record())
        self.emit("point", candidate_id=cid, measurement=m)
        if died:
            raise _ServerDied(f"during {cid} at concurrency {level}")
        if gone:
            raise ServerError(
                f"Triton at {srv.url} went away during {cid} at concurrency {level}; completed points "
                f"are in {self.results_path}; when it is back, continue with "
                f"`tuner sweep --resume {self.run_dir}`")
        self.stored[(cid, level)] = m
        return m

    @staticmethod
    def _reachable(srv: ServerContext) -> bool:
        try:
            srv.control.wait_ready(3.0)
            return True
        except ServerError:
            return False


def original_config(profile: Profile, srv: ServerContext, readback: cfgmod.ModelConfig) -> cfgmod.ModelConfig:
    """The config candidates are made from: the profile's config file, else the embedded
    repository's config.pbtxt, else what the server reads back (a remote server's files are out of reach)."""
    if profile.config_path is not None:
        return cfgmod.read_config(profile.config_path)
    if srv.embedded is not None:
        f = srv.embedded.model_repository / profile.model / "config.pbtxt"
        if f.exists():
            return cfgmod.read_config(f)
    return readback


class _ServerDied(Exception):
    """The embedded server exited under load (internal: triggers a restart)."""


def new_run_dir(profile: Profile, out: Path | None) -> Path:
    from tuner.paths import safe_name

    if out is not None:
        return Path(out)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path("reports") / f"{safe_name(profile.name)}-{stamp}"


def resume_profile(run_dir: Path) -> Profile:
    from tuner.profile import load_run_profile

    return load_run_profile(run_dir)


def run_sweep(profile: Profile, run_dir: Path, *, resume: bool = False, on_event: Event | None = None) -> SweepOutcome:
    return Sweep(profile, run_dir, on_event).run(resume=resume)

