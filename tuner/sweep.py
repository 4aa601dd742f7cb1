"""`tuner sweep`: candidate configs, each measured at load levels a search strategy picks.

The strategy (`tuner/search/`) decides what to measure next; this module
carries it out inside a run session (`tuner/session.py`): apply the
candidate (load API, full config override), measure the load point, record
it, tell the strategy. The model's original config is measured first (the
baseline). Each point is appended to results.jsonl as it finishes; `resume`
feeds every stored point back to the strategy instead of measuring it again
(strategies are pure, so they ask for the same steps). A killed embedded
server is restarted and the point measured again. Then, unless the profile
turns it off, the confirmation phase (`tuner/confirm.py`) measures the
winner, its near ties and the baseline again in interleaved rounds; stored
rounds are not measured again on resume. The session restores the
original config at the end, after a failure and after Ctrl-C / SIGTERM.

An ensemble (its steps, from ensemble_scheduling) or a BLS model with `[model]
composing_models` is swept through that model, end to end: the candidates are
joint settings of its steps (`tuner/steps.py` applies them, `search/joint.py`
searches them), and every step is restored. Models sharing one server (`[[model]]`)
are swept the same way, all under load at once, each at its share of the requests
(`load/multi.py`) and within its own budget (`search/multi.py`). The confirmation phase
measures one model's configs, so a joint sweep skips it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuner import config as cfgmod
from tuner.errors import ConfigError, ModelLoadError, ServerError, TunerError
from tuner.load import eventloop
from tuner.load.client import LoadClient
from tuner.load.multi import shared_plan
from tuner.load.request import RequestPlan, build_request
from tuner.load.telemetry import default_metrics_url
from tuner.profile import Profile, load_run_profile, save_run_profile
from tuner.confirm import ConfirmPhase
from tuner.report.outputs import finalize_run
from tuner.results.records import CandidateEnd, CandidateRecord, Measurement
from tuner.results.rundir import RunLock, new_run_dir
from tuner.results.store import load_results
from tuner.search.joint import JointStrategy
from tuner.search.multi import MultiStrategy
from tuner.search.strategy import BASELINE, make_strategy
from tuner.session import RunSession, SessionSpec
from tuner.steps import StepModels

MAX_RESTARTS = 3
Event = Callable[..., None]
READBACK_FILE = "readback.json"


@dataclass(frozen=True)
class SweepOutcome:
    run_dir: Path
    summary: dict  # summary.json's content
    candidates_measured: int  # candidates (baseline excluded) that loaded and were measured
    candidates_failed: int


class _ServerDied(Exception):
    """The embedded server exited under load (internal: triggers a restart)."""


class Sweep:
    def __init__(self, profile: Profile, run_dir: Path, on_event: Event | None = None):
        self.profile = profile
        self.run_dir = Path(run_dir)
        self.emit = on_event or (lambda kind, **kw: None)
        self.stored: dict[tuple[str, int], Measurement] = {}
        self.ended: set[str] = set()
        self.failed_before: dict[str, str] = {}
        self.restarts = 0
        self.s: RunSession | None = None
        self.steps: StepModels | None = None  # models tuned together behind the profile's model

    def run(self, resume: bool = False) -> SweepOutcome:
        p = self.profile
        spec = SessionSpec("sweep", p.model, p.version, p.connection(), resume=resume,
                           resume_hint=f"tuner sweep --resume {self.run_dir}", profile=p.name,
                           profile_sha256=p.sha256,
                           models=p.composing_models or tuple(sm.name for sm in p.constraints.models[1:]))
        with RunSession(self.run_dir, spec, self.emit) as s:
            self.s = s
            if resume:
                self._read_stored()
            save_run_profile(self.run_dir, p)
            self.steps = self._steps()
            # a joint sweep leaves the model the load is sent to as it is: its steps are the candidates
            original, readback = self._originals() if self.steps is None else (s.readback, s.readback)
            specs = p.search.specs() if self.steps is None else []
            # a stateful model is tuned with [search.sequence] only, any other model without it
            cfgmod.check_kind(original, p.search.sequence is not None, p.model)
            for cand in specs:  # validate every candidate before measuring any
                try:
                    cfgmod.make_candidate(original, cand, first_dim_is_batch=p.first_dim_is_batch)
                except ConfigError:  # a broken original aborts; a refused candidate is recorded in its turn
                    cfgmod.check_tunable(original, first_dim_is_batch=p.first_dim_is_batch, where=p.model)
            plan = self._plan(readback)
            env = s.environment()
            env["input_mix"] = plan.mix  # what the requests carry: a baseline must match it
            s.record_run(env, candidates_planned=len(specs))
            loop = _Loop(self, original, readback, specs, plan)
            eventloop.run(loop.run())
        with RunLock(self.run_dir):
            summary = finalize_run(self.run_dir)
        res = load_results(self.run_dir)
        measured = [c for c in res.candidates.values() if not c.is_baseline and c.status == "loaded"]
        failed = [c for c in res.candidates.values() if c.status == "failed"]
        if not measured and failed:
            raise TunerError(f"every candidate failed to load or serve ({len(failed)}); first: "
                             f"{failed[0].candidate_id}: {failed[0].reason}; results in {self.run_dir}")
        return SweepOutcome(self.run_dir, summary, len(measured), len(failed))

    def _read_stored(self) -> None:
        res = load_results(self.s.results.path)
        # Failed points (server gone, killed run) are measured again.
        self.stored = {(m.candidate_id, m.concurrency): m for m in res.points if m.status == "ok"}
        self.ended = set(res.ended)
        # Candidates that failed to load are not loaded again on resume.
        self.failed_before = {cid: c.reason for cid, c in res.candidates.items()
                              if c.status == "failed" and not any(m.candidate_id == cid for m in res.points)}
        self.s.points_recorded = bool(self.stored)

    def _steps(self) -> StepModels | None:
        """The models tuned together behind the profile's model (an ensemble's steps, a BLS model's
        callees), opened in the session; None for a single model."""
        names = StepModels.wanted(self.profile, self.s.readback)
        return StepModels(self.s, self.profile, self.run_dir, self.s.readback, names).open() if names else None

    def _plan(self, readback: cfgmod.ModelConfig) -> RequestPlan:
        """What the load sends: the model's requests, or each shared model's at its share."""
        p = self.profile
        if not p.constraints.models:
            return build_request(readback, p.model, p.version, inputs=p.inputs)
        plans = [(sm.name, build_request(self.steps.models[sm.name].readback, sm.name, p.version, inputs=p.inputs))
                 for sm in p.constraints.models]
        return shared_plan(plans, [sm.share for sm in p.constraints.models])

    def _originals(self) -> tuple[cfgmod.ModelConfig, cfgmod.ModelConfig]:
        """(the config candidates are made from, the config the server served), kept in RUN/original/."""
        s, p = self.s, self.profile
        readback = s.readback
        orig_dir = self.run_dir / "original"
        stored = orig_dir / READBACK_FILE
        if stored.exists():
            # A resumed run: the server may still hold a candidate left by a killed
            # run; the original is what the first session read.
            readback = cfgmod.config_from_json(stored.read_text(encoding="utf-8"))
            s.model.original = readback
        original = s.original_config(p.config_path, readback)
        cfgmod.check_tunable(original, first_dim_is_batch=p.first_dim_is_batch, where=p.model)
        orig_dir.mkdir(exist_ok=True)
        (orig_dir / "config.pbtxt").write_text(cfgmod.format_config(original), encoding="utf-8")
        stored.write_text(cfgmod.config_to_json(readback), encoding="utf-8")
        return original, readback

    def restart_embedded(self, why: str) -> None:
        self.restarts += 1
        if self.s.server.embedded is None or self.restarts > MAX_RESTARTS:
            raise ServerError(f"tritonserver exited {self.restarts} times ({why}); results so far are in "
                              f"{self.s.results.path}; continue with `tuner sweep --resume {self.run_dir}`")
        self.s.restart_server(why)


class _Loop:
    """One pass of the strategy over the server: apply, measure, record, observe."""

    def __init__(self, sweep: Sweep, original, readback, specs: list[cfgmod.CandidateSpec], plan: RequestPlan):
        self.sw, self.s, self.p = sweep, sweep.s, sweep.profile
        self.original, self.plan = original, plan
        self.candidates = [(BASELINE, cfgmod.current_spec(readback))] + [(c.candidate_id, c) for c in specs]
        self.configs = {BASELINE: readback}
        steps = sweep.steps
        if steps is not None:  # several models tuned together: coordinate descent over them
            kind = MultiStrategy if steps.kind == "multi" else JointStrategy
            self.strategy = kind(self.p, steps.names, steps.originals(), steps.options())
            self.candidates = self.strategy.candidates
        else:
            self.strategy = make_strategy(self.p.search.strategy, self.p, self.candidates)
        self.started: list[str] = []
        self.loaded: str | None = None
        self.deaths: dict[str, int] = {}
        self.client: LoadClient | None = None

    async def run(self) -> None:
        try:
            while (step := self.strategy.next_step()) is not None:
                if step.kind in ("end", "skip"):
                    self._end(step)
                    continue
                await self._point(step)
            if self.p.search.confirm and self.sw.steps is None:  # confirmation measures one model's configs
                await ConfirmPhase(self).run()
        finally:
            await self._close_client()

    def _end(self, step) -> None:
        cid = step.candidate_id
        if step.kind == "skip":
            if cid not in self.sw.ended:
                self.s.record(CandidateRecord(step.spec, "skipped", reason=step.reason))
                self.s.record(CandidateEnd(cid, "skipped"))
            self.sw.emit("skipped", candidate_id=cid, reason=step.reason)
        elif cid not in self.sw.ended:
            self.s.record(CandidateEnd(cid, step.reason))

    async def _point(self, step) -> None:
        cid = step.candidate_id
        if cid not in self.started:
            self.started.append(cid)
            self.sw.emit("candidate", index=len(self.started), total=len(self.candidates), candidate_id=cid,
                         elapsed_s=time.monotonic() - self.s.started)
        stored = self.sw.stored.get((cid, step.concurrency))
        if stored is not None:
            self.strategy.observe(stored)
            return
        if cid in self.sw.failed_before:
            self.strategy.observe_failed(cid, self.sw.failed_before[cid])
            return
        try:
            if self.loaded != cid:
                self.loaded = None
                reason = self._apply(cid, step.spec)
                if reason is not None:
                    self.strategy.observe_failed(cid, reason)
                    return
                self.loaded = cid
            m = await self._measure(cid, step.concurrency)
        except _ServerDied as died:
            await self._after_death(step, str(died))
            return
        if m.status == "failed":
            self.s.record(CandidateRecord(step.spec, "failed", reason=f"errors under load: {m.first_error}",
                                          config_json=_as_json(self.configs[cid]),
                                          is_baseline=cid == BASELINE))
        self.strategy.observe(m)

    async def _after_death(self, step, why: str) -> None:
        cid = step.candidate_id
        self.loaded = None
        await self._close_client()  # the restarted server may listen elsewhere: connect anew
        self.deaths[cid] = self.deaths.get(cid, 0) + 1
        self.sw.restart_embedded(why)
        if self.deaths[cid] >= 2:  # a server killed twice under one candidate: the candidate's fault
            reason = f"tritonserver exited twice: {why}"
            self.s.record(CandidateRecord(step.spec, "failed", reason=reason, is_baseline=cid == BASELINE))
            self.strategy.observe_failed(cid, reason)

    async def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.__aexit__(None, None, None)

    def _apply(self, cid: str, spec: cfgmod.CandidateSpec) -> str | None:
        """Load a candidate; None when it serves, else why it failed (recorded)."""
        s = self.s
        try:
            if self.sw.steps is not None:  # every tuned model at its setting (the baseline: as served)
                config = self.sw.steps.apply(spec)
            elif cid == BASELINE:
                config = s.model.apply(self.configs[BASELINE])  # a no-op unless a candidate is loaded
            else:
                config = s.model.apply(cfgmod.make_candidate(self.original, spec,
                                                             first_dim_is_batch=self.p.first_dim_is_batch))
        except ConfigError as err:  # refused by Triton's rules before anything was sent
            s.record(CandidateRecord(spec, "failed", reason=str(err)))
            self.sw.emit("failed", candidate_id=cid, reason=str(err))
            return str(err)
        except ModelLoadError as err:
            if not s.server_alive():
                raise _ServerDied(f"while loading {cid}") from None
            s.record(CandidateRecord(spec, "failed", reason=str(err), is_baseline=cid == BASELINE))
            self.sw.emit("failed", candidate_id=cid, reason=str(err))
            return str(err)
        except ServerError:
            if not s.server_alive():
                raise _ServerDied(f"while loading {cid}") from None
            raise
        self.configs[cid] = config
        s.record(CandidateRecord(spec, "loaded", config_json=_as_json(config),
                                 is_baseline=cid == BASELINE))
        return None

    async def _measure(self, cid: str, level: int) -> Measurement:
        s, p = self.s, self.p
        if self.client is None:
            # one client for the whole sweep: its load processes (or Ray actors) start once
            srv = s.server
            metrics_url = srv.metrics_url or default_metrics_url(srv.url)
            steps = tuple(self.sw.steps.names) if self.sw.steps is not None else ()
            self.client = await LoadClient(srv.connection, p.model, p.version, metrics_url=metrics_url,
                                           step_models=steps, shared=bool(p.constraints.models)).__aenter__()
        self.sw.emit("level", candidate_id=cid, concurrency=level)
        samples = await self.client.closed_loop(self.plan, level, p.measurement)
        m = Measurement(candidate_id=cid, concurrency=level, windows=samples.windows,
                        stable=samples.stable, error_kinds=samples.error_kinds,
                        first_error=samples.first_error, summary_windows=p.measurement.min_windows)
        if not samples.windows or all(w.completed == 0 for w in samples.windows):
            m.status = "failed"
        died = not s.server_alive()
        gone = (s.server.embedded is None and (m.status == "failed" or "UNAVAILABLE" in m.error_kinds)
                and not self._reachable())
        if died:
            m.status = "failed"
            m.first_error += f" (tritonserver exited; log: {s.server.embedded.log_tail(2, one_line=True)})"
        if gone:
            m.status = "failed"
            m.first_error += f" (Triton at {s.server.url} went away)"
        # A failed point is kept on disk but measured again by a restart or --resume.
        s.record(m)
        self.sw.emit("point", candidate_id=cid, measurement=m)
        if died:
            raise _ServerDied(f"during {cid} at concurrency {level}")
        if gone:
            raise ServerError(
                f"Triton at {s.server.url} went away during {cid} at concurrency {level}; completed points "
                f"are in {s.results.path}; when it is back, continue with "
                f"`tuner sweep --resume {self.sw.run_dir}`")
        self.sw.stored[(cid, level)] = m
        return m

    def _reachable(self) -> bool:
        try:
            self.s.server.control.wait_ready(3.0)
            return True
        except ServerError:
            return False


def _as_json(config: "cfgmod.ModelConfig | dict[str, cfgmod.ModelConfig]") -> str:
    """A config read back, as stored; several models' (a joint candidate): {model: config}."""
    if isinstance(config, dict):
        return json.dumps({name: json.loads(cfgmod.config_to_json(c)) for name, c in config.items()})
    return cfgmod.config_to_json(config)


def resume_profile(run_dir: Path) -> Profile:
    return load_run_profile(run_dir, check_files=True)


def run_sweep(profile: Profile, run_dir: Path, *, resume: bool = False, on_event: Event | None = None) -> SweepOutcome:
    return Sweep(profile, run_dir, on_event).run(resume=resume)


__all__ = ["MAX_RESTARTS", "Sweep", "SweepOutcome", "new_run_dir", "resume_profile", "run_sweep"]
