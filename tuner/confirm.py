"""The sweep's confirmation phase: the winner, its near ties and the baseline, measured again.

Runs inside the sweep's session after the search (`sweep._Loop.run`), unless the profile
says `[search] confirm = false` or `tuner sweep --no-confirm`. Which configs, how the
rounds become intervals and how the recommendation follows from them is
`tuner/search/confirm.py`'s business (pure); this module only measures:

  * the plan (configs and their loads, in visiting order) is written first as a
    `confirm_plan` record; a resumed sweep keeps the stored plan;
  * each round visits its configs in the plan's order: load it (Triton's load API, a
    full config override), then CONFIRM_WINDOWS windows after a warm-up (the profile's, or
    WARMUP_ROUND_TRIPS of the config's latency there if longer), at the config's at-budget
    load; each visit is one `confirm_point` record;
  * which configs the next round visits, and when the rounds stop, is `stats.next_round`'s
    answer from the visits stored so far (a sequential design within the plan's visit
    budget, `[search] confirm_visits`, and rounds, `confirm_rounds`): the first two rounds
    visit every config, later ones only those that decide keep-or-switch, and the phase
    stops once the answer is not marginal. Only stored visits decide, so a resumed sweep
    stops where the first would have;
  * visits already stored (`--resume`) are not measured again; a config that fails to load
    is left out of the rest of the rounds; a server that dies is restarted and the visit
    measured again, as a search point would be.
"""

from __future__ import annotations

from dataclasses import replace

from tuner import config as cfgmod
from tuner.errors import ModelLoadError, ServerError
from tuner.load.client import LoadClient
from tuner.load.telemetry import default_metrics_url
from tuner.results.records import ConfirmPlan, ConfirmPoint, Measurement
from tuner.results.store import load_results
from tuner.search import confirm as stats
from tuner.search.base import BASELINE
from tuner.search.recommend import recommend

CONFIRM_WINDOWS = 2  # windows per visit: the spread between visits, not within one, limits the interval
# Each visit follows a model load, and a config's first seconds after one run slow (its first
# executions; the replaced instance shutting down beside it): measured on resnet at concurrency 16,
# the mean latency of 0.5 s slices was 1.5-2x the steady one in the first slice and still 10-20%
# above it for about 2 s, some 12 round trips. The warm-up lasts at least this many of the config's
# mean latencies there (from the search), else the budget would be judged on the slow start.
WARMUP_ROUND_TRIPS = 12


class ConfirmPhase:
    """Measures the confirmation plan's configs in interleaved rounds (see the module docstring)."""

    def __init__(self, loop):
        self.loop = loop  # the sweep's loop: its session, profile, original config, request and client
        self.s, self.p = loop.s, loop.p
        self.dropped: set[str] = set()
        self.visits: list[ConfirmPoint] = []

    def _plan(self, results) -> ConfirmPlan | None:
        if results.confirm_plan is not None:
            return results.confirm_plan
        rec = recommend(results, self.p.constraints, self.p.goal)
        slots = stats.plan(rec, {cid: r.spec for cid, r in results.candidates.items()})
        if len(slots) < 2:
            return None  # nothing to compare the winner with
        plan = ConfirmPlan(tuple((sl.candidate_id, sl.concurrency) for sl in slots), self.p.search.confirm_rounds,
                           method="sequential", visit_budget=self.p.search.confirm_visits)
        self.s.record(plan)
        return plan

    async def run(self) -> None:
        results = load_results(self.s.results.path)
        plan = self._plan(results)
        if plan is None:
            return
        self.visits = list(results.confirmation)
        done = {(v.round, v.candidate_id) for v in self.visits if v.point.status == "ok"}
        specs = {cid: r.spec for cid, r in results.candidates.items()}
        base = replace(self.p.measurement, min_windows=CONFIRM_WINDOWS, max_windows=CONFIRM_WINDOWS)
        mean_s = {(m.candidate_id, m.concurrency): m.summary().latency_ms.get("mean", 0.0) / 1000.0
                  for m in results.points if m.status == "ok" and m.windows}
        all_slots = [stats.Slot(cid, n) for cid, n in plan.slots]
        for r in range(plan.rounds):
            before = [v for v in self.visits if v.round < r]  # a resumed run decides as the first did
            todo = stats.next_round(self._analyse(plan, specs, before) if before else None, all_slots, r,
                                    sum(1 for v in before if v.point.status == "ok"), plan.rounds, plan.visits)
            todo = [sl for sl in todo if sl.candidate_id not in self.dropped and sl.candidate_id in specs]
            if len(todo) < 2:
                break
            slots = [(sl.candidate_id, sl.concurrency) for sl in todo]
            self.loop.sw.emit("confirm", round=r + 1, rounds=plan.rounds, slots=slots)
            for cid, level in slots:
                if (r, cid) in done:
                    continue
                lat_s = mean_s.get((cid, level), 0.0)
                lat_s = lat_s if lat_s == lat_s else 0.0  # NaN: no latency measured there
                settings = replace(base, warmup_s=max(base.warmup_s, WARMUP_ROUND_TRIPS * lat_s))
                for _attempt in range(2):
                    if await self._visit(r, cid, specs[cid], level, settings):
                        break

    def _analyse(self, plan: ConfirmPlan, specs: dict, visits: list[ConfirmPoint]) -> stats.Confirmation | None:
        slots = [stats.Slot(cid, n) for cid, n in plan.slots]
        return stats.analyse(visits, slots, specs, self.p.constraints, self.p.goal)

    def _config(self, cid: str, spec: cfgmod.CandidateSpec) -> cfgmod.ModelConfig:
        if cid == BASELINE:
            return self.loop.configs[BASELINE]
        return cfgmod.make_candidate(self.loop.original, spec, first_dim_is_batch=self.p.first_dim_is_batch)

    async def _visit(self, r: int, cid: str, spec: cfgmod.CandidateSpec, level: int, settings) -> bool:
        """One visit; False when the server died under it (restarted: measure it again)."""
        loop, s = self.loop, self.s
        if loop.loaded != cid:
            loop.loaded = None
            try:
                s.model.apply(self._config(cid, spec))
            except (ModelLoadError, ServerError) as err:
                if not s.server_alive():
                    await self._restart(f"while loading {cid} for confirmation")
                    return False
                self.dropped.add(cid)
                loop.sw.emit("failed", candidate_id=cid, reason=f"confirmation: {err}")
                return True
            loop.loaded = cid
        client = await self._client()
        loop.sw.emit("level", candidate_id=cid, concurrency=level)
        samples = await client.closed_loop(loop.plan, level, settings)
        m = Measurement(candidate_id=cid, concurrency=level, windows=samples.windows, stable=samples.stable,
                        error_kinds=samples.error_kinds, first_error=samples.first_error,
                        summary_windows=len(samples.windows) or settings.min_windows)
        if not samples.windows or all(w.completed == 0 for w in samples.windows):
            m.status = "failed"
        alive = s.server_alive()
        if not alive:
            m.status = "failed"
        visit = ConfirmPoint(r, m)
        s.record(visit)
        self.visits.append(visit)
        loop.sw.emit("point", candidate_id=cid, measurement=m)
        if not alive:
            await self._restart(f"during confirmation of {cid}")
            return False
        return True

    async def _restart(self, why: str) -> None:
        self.loop.loaded = None
        await self.loop._close_client()
        self.loop.sw.restart_embedded(why)

    async def _client(self) -> LoadClient:
        loop = self.loop
        if loop.client is None:
            srv = self.s.server
            metrics_url = srv.metrics_url or default_metrics_url(srv.url)
            loop.client = await LoadClient(srv.connection, self.p.model, self.p.version,
                                           metrics_url=metrics_url).__aenter__()
        return loop.client
