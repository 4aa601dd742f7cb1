"""Search strategies: smart vs grid against the simulated server (`simserver.py`; pure,
fast), the compute model, constraints and objectives. The family of response surfaces is
`test_surfaces.py`'s."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tuner.config import CandidateSpec
from tuner.errors import ProfileError
from tuner.report.outputs import finalize_run
from tuner.profile import load_profile, parse_profile
from tuner.search.recommend import Constraints, recommend
from tuner.results.records import CandidateRecord, Measurement, SCHEMA
from tuner.results.store import RunResults, append_record
from tuner.search.base import BASELINE
from tuner.search.batcher import simulate
from tuner.search.bracket import read_point
from tuner.search.costs import CostTable, Curve
from tuner.search.model import BatchModel
from tuner.search.smart import SmartStrategy
from tuner.server.install import BUNDLED_MODELS_DIR
from tuner.results.stats import ServerDelta, WindowSample

from .simserver import BASE_SPEC, SimRun, SimServer, space


# ------------------------------------------------------------ smart vs grid

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smart_reaches_grid_answer_with_a_quarter_of_the_measurements(seed):
    grid = SimRun(space("grid"), seed)
    smart = SimRun(space("smart"), seed)
    assert grid.rec.best is not None and smart.rec.best is not None
    assert smart.best_throughput >= 0.97 * grid.best_throughput, (smart.rec.reason, grid.rec.reason)
    assert len(smart.points) <= 0.25 * len(grid.points), (len(smart.points), len(grid.points))
    assert smart.sim.measured_s <= 0.25 * grid.sim.measured_s
    # every candidate is either measured or skipped, none both, none forgotten (refined ones come on top)
    measured = {m.candidate_id for m in smart.points}
    skipped = {s.candidate_id for s in smart.steps if s.kind == "skip"}
    assert not measured & skipped
    assert measured | skipped >= {cid for cid, _ in smart.candidates}
    # loads between the listed levels are fair game
    assert {m.concurrency for m in smart.points} - set(smart.profile.search.concurrency)


@pytest.mark.parametrize("seed", [3, 4])
def test_smart_survives_host_stalls(seed, monkeypatch):
    """One point in five has the whole host stall once (tens of ms): a percentile far over the
    budget at a load that is fine. Smart's brackets must not settle far below the truth."""
    init = SimServer.__init__
    monkeypatch.setattr(SimServer, "__init__", lambda self, **kw: init(self, **{"host_stall_p": 0.2, **kw}))
    grid, smart = SimRun(space("grid"), seed), SimRun(space("smart"), seed)
    assert smart.best_throughput >= 0.97 * grid.best_throughput
    assert len(smart.points) <= 0.25 * len(grid.points)


def test_smart_with_instances_and_preferred_sizes():
    text = space("smart", instances=(1, 2), preferred='["none", "halves"]')
    grid, smart = SimRun(text.replace('"smart"', '"grid"')), SimRun(text)
    assert smart.best_throughput >= 0.97 * grid.best_throughput
    assert len(smart.points) <= 0.1 * len(grid.points)
    assert smart.rec.best.candidate_id.endswith("-i2")


def test_skipped_candidates_are_listed_with_reasons():
    smart = SimRun(space("smart"))
    skips = [s for s in smart.steps if s.kind == "skip"]
    assert len(skips) >= 10
    for s in skips:
        assert s.spec is not None and s.reason
    ceiling = [s for s in skips if "compute ceiling" in s.reason]
    assert ceiling and all("cannot beat the incumbent" in s.reason for s in ceiling)
    # the ceiling names the numbers it came from: infer/s, batch, compute time per execution
    assert all("infer/s" in s.reason and " ms" in s.reason for s in ceiling)
    # the smallest max_batch_size can never win: skipped on its ceiling, never measured
    assert {s.candidate_id for s in ceiling} >= {c for c, _ in smart.candidates if c.startswith("mbs1-")}
    ends = {s.candidate_id: s.reason for s in smart.steps if s.kind == "end"}
    assert all(ends[c] for c in {m.candidate_id for m in smart.points})


def test_skipped_candidates_in_summary_and_report(tmp_path):
    """A run folder as the sweep writes it: skipped candidates are counted and shown."""
    text = space("smart")
    smart = SimRun(text)
    run = tmp_path / "run"
    (run / "original").mkdir(parents=True)
    shutil.copy(BUNDLED_MODELS_DIR / "synthetic" / "config.pbtxt", run / "original" / "config.pbtxt")
    (run / "profile.toml").write_text(text)
    results = run / "results.jsonl"
    append_record(results, {"schema": SCHEMA, "type": "run", "command": "sweep", "profile": "sim",
                            "model": "synthetic", "server": {"url": "sim"}})
    seen = set()
    for step in smart.steps:
        if step.kind == "skip":
            append_record(results, CandidateRecord(step.spec, "skipped", reason=step.reason).to_record())
        elif step.kind == "measure" and step.candidate_id not in seen:
            seen.add(step.candidate_id)
            append_record(results, CandidateRecord(step.spec, "loaded", is_baseline=step.candidate_id == BASELINE)
                          .to_record())
    for m in smart.points:
        append_record(results, m.to_record())
    summary = finalize_run(run)
    n_skipped = sum(1 for s in smart.steps if s.kind == "skip")
    assert summary["candidates_skipped"] == n_skipped and len(summary["skipped"]) == n_skipped
    assert summary["candidates_measured"] == len(seen - {BASELINE})
    assert summary["candidates_measured"] + summary["candidates_skipped"] == len(smart.candidates) - 1
    assert all(s["reason"] for s in summary["skipped"])
    assert summary["search"]["strategy"] == "smart" and summary["goal"] == "max_throughput"
    assert summary["recommended"]["candidate_id"] == smart.rec.best.candidate_id
    html = (run / "report.html").read_text()
    assert html.count('<tr class="skipped">') == n_skipped
    assert "compute ceiling" in html and "skipped" in html and 'id="fig-capacity"' in html


def test_smart_is_deterministic_and_replays_on_resume():
    text = space("smart")
    first, again = SimRun(text), SimRun(text)
    assert first.trace() == again.trace()
    # killed after 5 measurements; a resumed run feeds the stored points back and asks for the same
    killed = SimRun(text, stop_after=5)
    stored = {(m.candidate_id, m.concurrency): m for m in killed.points}
    resumed = SimRun(text, stored=stored)
    assert resumed.trace() == first.trace()
    assert resumed.measured == len(first.points) - 5


def test_candidates_failing_to_load_and_nothing_feasible():
    # an engine built for batches of 16: larger max_batch_size fails to load, its variants are not tried
    smart = SimRun(space("smart"), fails=lambda s: "exceeds the engine's maximum batch size 16"
                   if s.dynamic_batching and s.max_batch_size > 16 else None)
    assert smart.rec.best is not None and smart.rec.best.candidate_id.startswith("mbs16-")
    skips = {s.candidate_id: s.reason for s in smart.steps if s.kind == "skip"}
    for cid in ("mbs24-qd0-pbsauto-i1", "mbs24-qd2000-pbsauto-i1", "mbs32-qd0-pbsauto-i1"):
        assert "which failed: exceeds the engine's maximum batch size 16" in skips[cid]
    assert {s.candidate_id for s in smart.steps if s.kind == "end" and s.reason == "failed"} == {
        "mbs24-qd500-pbsauto-i1", "mbs32-qd500-pbsauto-i1"}
    # a budget nothing meets: the search ends, the closest point is named
    grid, tight = SimRun(space("grid", budget=2.0)), SimRun(space("smart", budget=2.0))
    assert tight.rec.best is None and tight.rec.closest is not None
    assert tight.rec.reason.startswith("nothing meets the constraints")
    assert len(tight.points) < len(grid.points)


def test_grid_is_unchanged():
    grid = SimRun(space("grid"))
    # every candidate starts at the lowest level and climbs the listed levels in order
    assert all(s.concurrency in (1, 2, 4, 8, 16, 32, 64) for s in grid.steps if s.kind == "measure")
    assert not [s for s in grid.steps if s.kind == "skip"]
    firsts = {}
    for s in grid.steps:
        if s.kind == "measure":
            firsts.setdefault(s.candidate_id, s.concurrency)
    assert set(firsts.values()) == {1} and len(firsts) == len(grid.candidates)


# ------------------------------------------------------------ the compute model

def test_cost_curve_interpolates_and_extrapolates_the_servers_costs():
    obs = {b: (100, int(100 * (2.0 + 0.5 * b) * 1e6)) for b in (1, 4, 8, 16)}
    curve = Curve(obs)
    assert curve.at(8) == pytest.approx(6.0) and curve.at(6) == pytest.approx(5.0)
    assert curve.at(32) == pytest.approx(18.0)  # beyond the largest: along the largest sizes' slope
    knee = Curve({**obs, 24: (100, int(100 * 42.0 * 1e6))})  # 4 ms per item above 16
    assert knee.at(32) > 3 * curve.at(32)  # the steep part is extrapolated, not averaged away
    assert not CostTable([]).ok
    one = WindowSample(0.0, 1.0, [1000] * 10, server=ServerDelta(batch_compute_infer={1: (500, int(500 * 2.8e6))}))
    assert not CostTable([(BASE_SPEC, Measurement("baseline", 8, [one], True))]).ok  # one batch size: no slope
    prof = parse_profile(space("smart"), "s.toml")
    strat = SmartStrategy(prof, [(BASELINE, BASE_SPEC)] + [(s.candidate_id, s) for s in prof.search.specs()])
    assert strat.bound(CandidateSpec(8)) is None  # nothing observed yet
    win = WindowSample(0.0, 1.0, [1000] * 10, server=ServerDelta(batch_compute_infer=obs))
    strat.observe(Measurement("mbs32-qd0-pbsauto-i1", 32, [win], True))
    bd = strat.bound(CandidateSpec(8))
    assert bd.batch == 8 and bd.ceiling == pytest.approx(8 / 6.0 * 1000)
    # the budget caps the batch: a batch whose compute alone exceeds it cannot count
    tight = SmartStrategy(replace(prof, constraints=replace(prof.constraints, latency_budget_ms=10.0)),
                          strat.candidates)
    tight.observe(Measurement("mbs32-qd0-pbsauto-i1", 32, [win], True))
    assert tight.bound(CandidateSpec(32)).batch == 16


def test_batcher_simulation_follows_the_batchers_rules():
    cost = lambda b: 2.0 + 0.5 * b  # noqa: E731
    one = simulate(cost, CandidateSpec(32, 0), 1, overhead_ms=0.5)
    assert one.infer_per_s == pytest.approx(1000 / 3.0, rel=0.01) and one.mean_batch == pytest.approx(1.0)
    full = simulate(cost, CandidateSpec(32, 0), 64, overhead_ms=0.5)
    assert full.mean_batch == pytest.approx(32, abs=1) and full.infer_per_s == pytest.approx(32 / 18 * 1000, rel=0.03)
    # no dynamic batching: one request per execution, whatever the load
    assert simulate(cost, CandidateSpec(32, 0, (), 1, False), 16, 0.5).mean_batch == pytest.approx(1.0)
    # a queue delay waits for more requests: bigger batches at a moderate load
    assert (simulate(cost, CandidateSpec(32, 2000), 8, 0.5).mean_batch
            > simulate(cost, CandidateSpec(32, 0), 8, 0.5).mean_batch)
    # preferred sizes: batches of the largest preferred size once that many wait
    assert simulate(cost, CandidateSpec(32, 2000, (8,)), 64, 0.5).mean_batch == pytest.approx(8, abs=0.5)
    # two instances on one device whose executions cannot overlap serve what one does
    alone = simulate(cost, CandidateSpec(32, 0, (), 1), 64, 0.5).infer_per_s
    shared = simulate(cost, CandidateSpec(32, 0, (), 2), 64, 0.5, overlap=0.0).infer_per_s
    free = simulate(cost, CandidateSpec(32, 0, (), 2), 64, 0.5, overlap=1.0).infer_per_s
    assert 0.85 * alone <= shared <= 1.02 * alone and free > 1.6 * alone


def test_model_predicts_unmeasured_candidates_from_the_servers_statistics():
    """Measured: two candidates; predicted: the rest, within a few percent of the simulated truth."""
    sim = SimServer(seed=7)
    prof = parse_profile(space("smart"), "s.toml")
    specs = [CandidateSpec(32, 500), CandidateSpec(8, 500)]
    observed = [(s, m, read_point(m, 1, prof.constraints))
                for s in specs for c in (8, 32, 48) for m in [sim.measure(s.candidate_id, s, c)]]
    model = BatchModel(observed, "p99", 40.0, 1, 256)
    assert model.ok and 0.03 <= model.margin <= 0.35
    for spec, c in ((CandidateSpec(16, 0), 32), (CandidateSpec(24, 2000), 48), (CandidateSpec(32, 0), 16)):
        truth = np.mean([SimServer(seed=s).measure("x", spec, c).summary().throughput_infer_per_s for s in (1, 2)])
        assert model.point(spec, c).infer_per_s == pytest.approx(truth, rel=0.1), spec.candidate_id
    best = model.at_budget(CandidateSpec(32, 500))
    assert best.latency_ms <= 40.0 and best.concurrency > 32


# ------------------------------------------------------------ objectives and constraints

def test_min_latency_goal_reaches_the_required_throughput():
    cons = "min_throughput_infer_per_s = 800"
    grid = SimRun(space("grid", goal="min_latency", constraints=cons))
    smart = SimRun(space("smart", goal="min_latency", constraints=cons))
    for run in (grid, smart):
        assert run.rec.best.throughput_infer_per_s >= 800
        assert "minimum throughput" in run.rec.binding or run.rec.binding == "lowest load level measured"
    assert smart.rec.best.latency_ms["p99"] <= 1.1 * grid.rec.best.latency_ms["p99"]
    assert len(smart.points) <= 0.3 * len(grid.points)
    # a candidate whose ceiling cannot reach the required throughput is skipped, saying so
    assert any("cannot reach the required 800" in s.reason for s in smart.steps if s.kind == "skip")


def test_max_throughput_per_instance_goal():
    text = space("smart", instances=(1, 2), goal="max_throughput_per_instance")
    grid, smart = SimRun(text.replace('"smart"', '"grid"')), SimRun(text)
    assert grid.rec.best.candidate_id.endswith("-i1") and smart.rec.best.candidate_id.endswith("-i1")
    assert smart.rec.best.throughput_per_instance >= 0.97 * grid.rec.best.throughput_per_instance
    assert "per instance" in smart.rec.reason


def _mem_point(cid: str, c: int, mem_mib: float | None, lat_ms: float = 5.0, n: int = 400) -> Measurement:
    tele = None if mem_mib is None else {"gpus": {"GPU-0": {"memory_used_bytes": mem_mib * 1024 * 1024}}}
    wins = [WindowSample(float(i), 1.0, [int(lat_ms * 1000)] * n, telemetry=tele) for i in range(3)]
    return Measurement(cid, c, wins, True)


def _results(points: list[Measurement]) -> RunResults:
    cands = {m.candidate_id: CandidateRecord(CandidateSpec(8, 0, (), 1), "loaded") for m in points}
    return RunResults({}, cands, points)


def test_gpu_memory_limit_from_telemetry():
    c = Constraints(latency_budget_ms=50.0, max_gpu_memory_mb=1000.0)
    pts = [_mem_point("big", 8, 1500.0, n=900), _mem_point("small", 8, 800.0, n=500)]
    rec = recommend(_results(pts), c)
    assert rec.best.candidate_id == "small" and rec.best.gpu_memory_mb == pytest.approx(800.0)
    assert rec.unchecked == []
    # a higher load that needs more memory than allowed is what binds
    pts.append(_mem_point("small", 16, 1200.0, n=700))
    assert recommend(_results(pts), c).binding.startswith("GPU memory")


def test_a_best_point_just_under_the_budget_names_the_budget_as_binding():
    """No higher load was measured (the search stopped at the budget): the budget binds when the best
    point's percentile is within NEAR_BUDGET of it, and only then."""
    c = Constraints(latency_budget_ms=40.0)
    near = recommend(_results([_mem_point("a", 4, None, 20.0, 200), _mem_point("a", 8, None, 39.0, 400)]), c)
    assert near.best.concurrency == 8
    assert near.binding.startswith("latency budget (p99 39.00 ms at concurrency 8 is within 5%"), near.binding
    far = recommend(_results([_mem_point("a", 4, None, 20.0, 200), _mem_point("a", 8, None, 30.0, 400)]), c)
    assert far.binding.startswith("highest load level measured"), far.binding


def test_gpu_memory_limit_without_telemetry_is_reported_not_available():
    c = Constraints(latency_budget_ms=50.0, max_gpu_memory_mb=1000.0)
    rec = recommend(_results([_mem_point("a", 8, None)]), c)
    assert rec.best is not None  # judged on what can be checked ...
    assert rec.unchecked and "not available" in rec.unchecked[0]  # ... and says what could not
    assert "not available" in rec.reason
    assert recommend(_results([_mem_point("a", 8, None)]), replace(c, max_gpu_memory_mb=None)).unchecked == []


def test_impossible_constraint_names_the_closest_candidate():
    c = Constraints(latency_budget_ms=1.0)
    rec = recommend(_results([_mem_point("a", 8, None, lat_ms=5.0), _mem_point("b", 8, None, lat_ms=3.0)]), c)
    assert rec.best is None and rec.binding == "none"
    assert rec.closest.candidate_id == "b" and rec.reason.startswith("nothing meets the constraints")


def test_profile_search_and_objective_keys():
    p = parse_profile('[model]\nname = "m"\n', "p.toml")
    assert p.search.strategy == "smart" and p.goal == "max_throughput"
    assert p.with_overrides(search_strategy="grid").search.strategy == "grid"
    assert p.with_overrides(search_strategy="grid").overrides == {"search_strategy": "grid"}
    with pytest.raises(ProfileError, match="--search"):
        p.with_overrides(search_strategy="random")
    with pytest.raises(ProfileError, match="search.strategy"):
        parse_profile('[model]\nname = "m"\n[search]\nstrategy = "exhaustive"\n', "p.toml")
    with pytest.raises(ProfileError, match="min_throughput_infer_per_s"):
        parse_profile('[model]\nname = "m"\n[objective]\ngoal = "min_latency"\n', "p.toml")
    ok = parse_profile('[model]\nname = "m"\n[constraints]\nmin_throughput_infer_per_s = 100\n'
                       '[objective]\ngoal = "min_latency"\n', "p.toml")
    assert ok.goal == "min_latency"
    for name in ("resnet", "synthetic"):
        assert load_profile(str(Path(__file__).resolve().parent.parent / "profiles" / f"{name}.toml")
                            ).search.strategy == "smart"


# ------------------------------------------------------------ the real server

# The real server: smart vs grid on a family of surfaces is bench/bench_search.py's business (both
# picks re-measured side by side); a smart sweep with its confirmation phase on the real Triton is
# tests/test_confirm.py's.


def _lp(conc: int, infer_per_s: float, p99_ms: float, mean_ms: float) -> "LoadPoint":
    from tuner.search.bracket import LoadPoint

    within = p99_ms <= 40.0
    return LoadPoint(conc, True, infer_per_s, p99_ms, mean_ms, within, True, within, None)


def test_a_tail_only_overshoot_is_checked_only_when_believing_it_could_change_the_answer():
    from tuner.search.bracket import LoadSearch
    from tuner.search.recommend import Constraints

    ls = LoadSearch(Constraints(latency_percentile="p99", latency_budget_ms=40.0), 1, 256, 5.0, 0.03, 4.0)
    # over by its tail alone (mean well within) and serving 40% more than the load below: check it nearby
    level, _ = ls.for_budget([_lp(16, 1000.0, 15.0, 8.0), _lp(41, 1400.0, 41.5, 12.0)], None, lambda: 2.0)
    assert level is not None and 16 < level < 64 and level != 41
    # saturated: it serves no more than 16 did, so believed or not the best is 16's: done
    level, why = ls.for_budget([_lp(16, 1201.0, 15.7, 8.0), _lp(41, 1173.0, 41.5, 12.0)], None, lambda: 2.0)
    assert level is None and "serves no more" in why


def test_a_latency_that_stays_flat_over_the_budget_is_decided_in_one_more_step():
    """Over the budget at 64 and as much at 56 (a padded engine: each batch costs the same): the next
    step goes to FLAT_SPAN below 64 (the flat test's span), where that test decides, not 10% lower again."""
    from tuner.search.bracket import FLAT_SPAN, LoadSearch
    from tuner.search.recommend import Constraints

    ls = LoadSearch(Constraints(latency_percentile="p99", latency_budget_ms=40.0), 1, 256, 5.0, 0.03, 4.0)
    flat = [_lp(56, 1427.0, 43.2, 30.0), _lp(64, 1579.0, 42.8, 33.0)]
    level, _ = ls.for_budget(flat, None, lambda: 1.3)
    assert level is not None and level <= 64 / FLAT_SPAN
    level, why = ls.for_budget([_lp(level, 1000.0, 42.5, 29.0)] + flat, None, lambda: 1.3)
    assert level is None and "does not fall with load" in why
    # a latency that falls with the load steps along its elasticity, not by FLAT_SPAN
    falling = [_lp(56, 1427.0, 48.0, 30.0), _lp(64, 1579.0, 60.0, 33.0)]
    level, _ = ls.for_budget(falling, None, lambda: 1.3)
    assert level is not None and 64 / FLAT_SPAN < level < 56


def test_a_latency_that_stays_flat_within_the_budget_is_climbed_in_the_largest_step():
    """Within the budget at 1 and 3 with p99 38.1 and 38.3 ms of 40 (a padded engine: each batch
    costs a full one whatever the load): the slope's floor would step 14% at a time and spend the
    candidate's points below the real answer; the flat latency takes the largest step instead."""
    from tuner.search.bracket import LoadSearch
    from tuner.search.recommend import Constraints

    ls = LoadSearch(Constraints(latency_percentile="p99", latency_budget_ms=40.0), 1, 256, 5.0, 0.03, 4.0)
    level, _ = ls.for_budget([_lp(1, 26.0, 38.1, 37.0), _lp(3, 78.0, 38.3, 37.5)], None, lambda: 1.1)
    assert level == 12
    # a latency rising with the load near the budget steps along its elasticity
    level, _ = ls.for_budget([_lp(1, 26.0, 30.0, 28.0), _lp(3, 70.0, 36.0, 34.0)], None, lambda: 1.1)
    assert level is not None and 3 < level < 6


def test_a_plateau_below_the_budget_ends_the_search_even_when_a_point_above_brackets_it():
    """Within at 9 and 16 with the same throughput, p99 at 16 three quarters of the budget, over at
    32: the load between 16 and 32 would only queue more; the same throughput rising with the
    load is bracketed further."""
    from tuner.search.bracket import LoadSearch
    from tuner.search.recommend import Constraints

    ls = LoadSearch(Constraints(latency_percentile="p99", latency_budget_ms=40.0), 1, 256, 5.0, 0.03, 4.0)
    level, why = ls.for_budget([_lp(9, 827.0, 15.0, 10.0), _lp(16, 813.0, 30.5, 19.0), _lp(32, 700.0, 124.8, 45.0)],
                               None, lambda: 1.5)
    assert level is None and why.startswith("plateau")
    level, _ = ls.for_budget([_lp(9, 600.0, 15.0, 10.0), _lp(16, 813.0, 30.5, 19.0), _lp(32, 700.0, 124.8, 45.0)],
                             None, lambda: 1.5)
    assert level is not None and 16 < level < 32


def test_full_batches_end_a_candidates_load_search():
    """At concurrency 16, max_batch_size 8 ran only batches of 8 (the bench's knee: 928 infer/s at 16,
    939 at 33): the instance never waited for work, so no higher load serves more; batches of 6, or
    as many requests in flight as one batch holds, say nothing of the kind."""
    from tuner.results.records import Measurement
    from tuner.results.samples import ServerDelta, WindowSample
    from tuner.search.bracket import LoadSearch, read_point
    from tuner.search.recommend import Constraints

    c = Constraints(latency_percentile="p99", latency_budget_ms=40.0)

    def point(conc: int, batch: int):
        wins = [WindowSample(float(i), 1.0, [9000] * 900 + [20000] * 28,
                             server=ServerDelta(success_count=928, inference_count=928, execution_count=928 // batch,
                                                batch_compute_infer={batch: (928 // batch, 928 // batch * 7_000_000)}))
                for i in range(3)]
        return read_point(Measurement("mbs8-qd0-pbsauto-i1", conc, wins, True), 1, c, max_batch=8)

    ls = LoadSearch(c, 1, 256, 5.0, 0.03, 4.0)
    assert point(16, 8).full and not point(16, 6).full and not point(8, 8).full
    level, why = ls.for_budget([point(16, 8)], None, lambda: 1.2)
    assert level is None and why.startswith("saturated")
    level, _ = ls.for_budget([point(16, 6)], None, lambda: 1.2)
    assert level is not None and level > 16
