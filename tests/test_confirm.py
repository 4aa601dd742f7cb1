"""The confirmation phase: its statistics on made-up rounds (pure), its records and report
from a run folder on disk (pure), and one real sweep end to end (`triton`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tuner.config import CandidateSpec
from tuner.report.outputs import finalize_run, report_run
from tuner.results.records import SCHEMA, CandidateRecord, ConfirmPlan, ConfirmPoint, Measurement
from tuner.results.stats import ServerDelta, WindowSample
from tuner.results.store import RunResults, append_record, load_results
from tuner.search.confirm import PRIOR_DF, VISIT_BUDGET, Slot, analyse, next_round, plan, simplicity, t975
from tuner.search.recommend import Constraints, recommend
from tuner.search.surfaces import SURFACES, Surface
from tuner.server.install import BUNDLED_MODELS_DIR

from . import simserver as sim
from .conftest import write_profile

C = Constraints(latency_percentile="p99", latency_budget_ms=50.0)
SPECS = {
    "baseline": CandidateSpec(32, 0, (), 1, dynamic_batching=False),
    "mbs8-qd0-pbsauto-i1": CandidateSpec(8, 0),
    "mbs16-qd0-pbsauto-i1": CandidateSpec(16, 0),
    "mbs16-qd2000-pbsauto-i1": CandidateSpec(16, 2000),
    "mbs32-qd2000-pbsauto-i2": CandidateSpec(32, 2000, (), 2),
}


def _windows(infer_per_s: float, p99_ms: float, window_s: float = 1.0, n_windows: int = 2,
             batch: int = 4) -> list[WindowSample]:
    out = []
    for i in range(n_windows):
        n = max(1, int(round(infer_per_s * window_s)))
        lat = [int(0.5 * p99_ms * 1000)] * n
        for j in range(max(1, n // 50)):  # the top 2%: p99 lands on them
            lat[j] = int(p99_ms * 1000)
        delta = ServerDelta(success_count=n, inference_count=n, execution_count=max(1, n // batch),
                            batch_compute_infer={batch: (max(1, n // batch), int(max(1, n // batch) * 2e6))})
        out.append(WindowSample(float(i) * window_s, window_s, lat, server=delta))
    return out


def visit(cid: str, rnd: int, infer_per_s: float, p99_ms: float = 20.0, conc: int = 8, batch: int = 4) -> ConfirmPoint:
    return ConfirmPoint(rnd, Measurement(cid, conc, _windows(infer_per_s, p99_ms, batch=batch), True,
                                         summary_windows=2))


def rounds(means: dict[str, float], n: int, noise: float, seed: int = 0, p99: dict | None = None) -> list[ConfirmPoint]:
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n):
        drift = 1.0 + float(rng.normal(0, noise / 2))  # what the host does to every config in a round
        for cid, mu in means.items():
            out.append(visit(cid, r, mu * drift * (1.0 + float(rng.normal(0, noise))), (p99 or {}).get(cid, 20.0)))
    return out


def slots(*ids: str) -> list[Slot]:
    return [Slot(cid, 8) for cid in ids]


# ------------------------------------------------------------ the statistics (pure)

def test_t_quantile():
    assert t975(1) == pytest.approx(12.706) and t975(9) == pytest.approx(2.262)
    assert t975(200) == pytest.approx(1.972, abs=0.005) and t975(0) == float("inf")


def test_clear_winner_gets_an_interval_and_a_significant_gain():
    ids = ("mbs16-qd0-pbsauto-i1", "mbs8-qd0-pbsauto-i1", "baseline")
    pts = rounds({ids[0]: 1000.0, ids[1]: 800.0, "baseline": 500.0}, 4, 0.02)
    conf = analyse(pts, slots(*ids), SPECS, C)
    assert conf.recommended == ids[0] and conf.best == ids[0] and not conf.tied_with and not conf.keep_current
    win = conf.config(ids[0])
    assert win.visits == 4 and win.throughput.lo < 1000.0 * 1.03 and win.throughput.hi > 1000.0 * 0.97
    assert win.throughput.lo < win.throughput.mean < win.throughput.hi
    g = conf.gain
    assert g.candidate_id == ids[0] and g.significant and g.ci[0] <= g.ratio <= g.ci[1]
    assert g.ci[0] < 2.0 < g.ci[1] * 1.05 and g.ratio == pytest.approx(2.0, rel=0.08)
    assert conf.rounds == 4 and conf.df == 3 * 3 + PRIOR_DF and conf.sigma_rel > 0
    assert "confirmed over 4 interleaved round(s)" in conf.reason and "the baseline" in conf.reason


def test_tied_candidates_go_to_the_simpler_config():
    # mbs16-qd2000 measures a little higher, but within noise of mbs16-qd0: the smaller queue delay wins
    a, b = "mbs16-qd2000-pbsauto-i1", "mbs16-qd0-pbsauto-i1"
    pts = rounds({a: 1010.0, b: 1000.0, "baseline": 500.0}, 4, 0.03, seed=1)
    conf = analyse(pts, slots(a, b, "baseline"), SPECS, C)
    assert conf.config(a).throughput.overlaps(conf.config(b).throughput)
    assert conf.recommended == b and conf.tied_with == (a,) and not conf.keep_current
    assert "simplest of the configs within noise of the best" in conf.reason or conf.best == b
    # the order of simplicity: queue delay, then instances, then max_batch_size, then preferred sizes
    order = sorted(SPECS.values(), key=simplicity)
    assert [s.candidate_id for s in order][:3] == ["mbs8-qd0-pbsauto-i1", "mbs16-qd0-pbsauto-i1",
                                                    "mbs32-nodb-i1"]
    assert order[-1].candidate_id == "mbs32-qd2000-pbsauto-i2"


def test_a_difference_within_the_tie_margin_is_a_tie_however_tight_the_intervals():
    # twelve rounds of quiet visits give intervals of about +-0.6%: 2% apart does not overlap, yet it
    # is no reason to pick the more complex config (a second run would often rank the two the other way)
    a, b = "mbs16-qd2000-pbsauto-i1", "mbs16-qd0-pbsauto-i1"
    pts = rounds({a: 1020.0, b: 1000.0, "baseline": 500.0}, 12, 0.003, seed=3)
    conf = analyse(pts, slots(a, b, "baseline"), SPECS, C)
    assert not conf.config(a).throughput.overlaps(conf.config(b).throughput)
    assert conf.best == a and conf.recommended == b and conf.tied_with == (a,)
    # 10% apart with the same spread: a real difference, the better one is recommended alone
    far = analyse(rounds({a: 1100.0, b: 1000.0, "baseline": 500.0}, 12, 0.003, seed=3), slots(a, b, "baseline"),
                  SPECS, C)
    assert far.recommended == a and far.tied_with == ()


def test_baseline_within_noise_means_keep_the_current_config():
    w = "mbs8-qd0-pbsauto-i1"
    pts = [visit(w, r, x) for r, x in enumerate((1040.0, 985.0, 1070.0, 1010.0))]
    pts += [visit("baseline", r, x) for r, x in enumerate((1000.0, 1015.0, 965.0, 1030.0))]
    conf = analyse(pts, slots(w, "baseline"), SPECS, C)
    assert conf.keep_current and conf.recommended == "baseline"
    assert conf.gain.candidate_id == w and not conf.gain.significant and conf.gain.ci[0] < 1.0 < conf.gain.ci[1]
    assert "keep the current config" in conf.reason
    # the same winner, clearly ahead: it is recommended
    far = analyse(rounds({w: 1500.0, "baseline": 1000.0}, 4, 0.04, seed=2), slots(w, "baseline"), SPECS, C)
    assert not far.keep_current and far.recommended == w and far.gain.significant


def test_rounds_go_on_only_while_the_answer_is_marginal_and_only_for_the_configs_that_decide_it():
    w, other = "mbs8-qd0-pbsauto-i1", "mbs16-qd0-pbsauto-i1"
    sl = slots(w, other, "baseline")
    assert next_round(None, sl, 0, 0, 6, 14) == sl  # the first two rounds visit every config
    # run 1 of issue 13's resnet: a 10% gain, but one disturbed baseline visit widened everything
    pts = [visit(w, r, x) for r, x in enumerate((102.0, 100.0))]
    pts += [visit(other, r, x) for r, x in enumerate((60.0, 58.0))]
    pts += [visit("baseline", r, x) for r, x in enumerate((94.0, 71.0))]
    conf = analyse(pts, sl, SPECS, C)
    assert conf.keep_current and conf.marginal and w in conf.marginal_with and "marginal" in conf.reason
    assert next_round(conf, sl, 1, 6, 6, 14) == sl  # a spread needs two visits of each
    # round 3 on: only the configs that decide keep-or-switch (the slower tuned one is out)
    nxt = next_round(conf, sl, 2, 6, 6, 14)
    assert [s.candidate_id for s in nxt] == [w, "baseline"]
    assert next_round(conf, sl, 2, 13, 6, 14) == []  # the round would pass the visit budget
    assert next_round(conf, sl, 6, 6, 6, 14) == []   # the plan's last round is done
    # quiet visits of those two turn the keep into a significant switch; the disturbed visit still
    # widens every interval, so a second run could keep the current config: the rounds go on
    more = pts + [visit(cid, r, x) for r in range(2, 6) for cid, x in ((w, 100.0 + r % 2), ("baseline", 86.0 - r % 2))]
    after = analyse(more, sl, SPECS, C)
    assert after.rounds == 6 and after.config(w).visits == 6 and after.config(other).visits == 2
    assert not after.keep_current and after.recommended == w and after.gain.significant
    assert after.marginal_with == ("baseline",) and after.tied_with == ("baseline",)
    assert [s.candidate_id for s in next_round(after, sl, 6, 14, 8, 20)] == [w, "baseline"]
    assert next_round(after, sl, 6, 19, 8, 20) == []
    # a clear winner stops after the first two rounds
    clear = analyse(rounds({w: 1500.0, other: 900.0, "baseline": 1000.0}, 2, 0.02), sl, SPECS, C)
    assert clear.recommended == w and not clear.tied_with and next_round(clear, sl, 2, 6, 6, 14) == []


def test_a_switch_near_the_noise_lists_the_baseline_as_a_second_runs_answer():
    w = "mbs8-qd0-pbsauto-i1"
    # 7% above the baseline with a 2% spread: significant in this run, yet a second run's
    # intervals could tie the two, so this run says so
    near = analyse(rounds({w: 1070.0, "baseline": 1000.0}, 6, 0.02, seed=5), slots(w, "baseline"), SPECS, C)
    assert not near.keep_current and near.recommended == w and near.gain.significant
    assert near.tied_with == ("baseline",) and near.marginal_with == ("baseline",)
    assert "a second run may keep the current config" in near.reason
    far = analyse(rounds({w: 1150.0, "baseline": 1000.0}, 6, 0.02, seed=5), slots(w, "baseline"), SPECS, C)
    assert far.recommended == w and far.tied_with == () and not far.marginal


def test_a_config_clearly_over_the_budget_cannot_win():
    a, b = "mbs16-qd0-pbsauto-i1", "mbs8-qd0-pbsauto-i1"
    pts = rounds({a: 1500.0, b: 1000.0, "baseline": 500.0}, 4, 0.02, p99={a: 80.0, b: 45.0})
    conf = analyse(pts, slots(a, b, "baseline"), SPECS, C)
    assert conf.config(a).budget == "over" and conf.recommended == b
    # at the budget's edge (over in the pooled figure, not clearly): still a contender
    edge = rounds({a: 1500.0, b: 1000.0}, 4, 0.02, p99={a: 50.5, b: 45.0})
    edge += [visit(a, r, 1500.0, 49.0) for r in range(4, 6)] + [visit(b, r, 1000.0, 45.0) for r in range(4, 6)]
    conf = analyse(edge, slots(a, b), SPECS, C)
    assert conf.config(a).budget in ("met", "edge") and conf.recommended == a


def test_keeping_the_current_config_says_why():
    a = "mbs16-qd0-pbsauto-i1"
    # the only tuned config went over the budget when measured again: not "within noise"
    over = analyse(rounds({a: 1500.0, "baseline": 1000.0}, 4, 0.02, p99={a: 80.0}), slots(a, "baseline"), SPECS, C)
    assert over.keep_current and over.recommended == "baseline" and not over.tied_with
    assert "went over the p99 budget" in over.reason and "within noise" not in over.reason
    # clearly slower than the baseline: no candidate beat it
    slow = analyse(rounds({a: 700.0, "baseline": 1000.0}, 4, 0.02), slots(a, "baseline"), SPECS, C)
    assert slow.keep_current and "no candidate beat it" in slow.reason and slow.gain.ratio < 1.0


def test_intervals_hold_their_coverage():
    """With the noise the method assumes (and a drift shared by a round), the 95% intervals
    cover the true throughput about 95% of the time."""
    covered = total = 0
    for seed in range(100):
        # few requests per visit: the visit's spread, not its sample count, is what is tested (and it is fast)
        pts = rounds({"mbs16-qd0-pbsauto-i1": 1000.0, "mbs8-qd0-pbsauto-i1": 900.0, "baseline": 600.0}, 4, 0.04,
                     seed=100 + seed)
        for p in pts:
            for w in p.point.windows:
                w.duration_s, keep = w.duration_s / 20, len(w.latencies_us) // 20
                w.latencies_us[:] = w.latencies_us[:keep]
        conf = analyse(pts, slots("mbs16-qd0-pbsauto-i1", "mbs8-qd0-pbsauto-i1", "baseline"), SPECS, C)
        for x, mu in ((conf.config("mbs16-qd0-pbsauto-i1"), 1000.0), (conf.config("baseline"), 600.0)):
            covered += x.throughput.lo <= mu <= x.throughput.hi
            total += 1
    assert 0.88 <= covered / total <= 1.0


def _point(cid: str, conc: int, infer_per_s: float, p99_ms: float) -> Measurement:
    return Measurement(cid, conc, _windows(infer_per_s, p99_ms, n_windows=3), True)


def _search_results() -> RunResults:
    pts = [_point("baseline", 8, 500.0, 30.0), _point("mbs16-qd0-pbsauto-i1", 16, 1000.0, 40.0),
           _point("mbs16-qd0-pbsauto-i1", 32, 1200.0, 70.0), _point("mbs16-qd2000-pbsauto-i1", 16, 980.0, 41.0),
           _point("mbs8-qd0-pbsauto-i1", 16, 960.0, 42.0), _point("mbs32-qd2000-pbsauto-i2", 16, 700.0, 30.0)]
    cands = {cid: CandidateRecord(SPECS[cid], "loaded", is_baseline=cid == "baseline") for cid in SPECS}
    return RunResults({}, cands, pts)


def test_plan_confirms_the_winner_its_rivals_and_the_baseline():
    rec = recommend(_search_results(), C)
    assert rec.best.candidate_id == "mbs16-qd0-pbsauto-i1"
    got = plan(rec, SPECS)
    ids = [s.candidate_id for s in got]
    # the winner; the next best (within 5%) and the simplest within 5%; the baseline; not the 30% worse one
    assert ids == ["mbs16-qd0-pbsauto-i1", "mbs16-qd2000-pbsauto-i1", "mbs8-qd0-pbsauto-i1", "baseline"]
    assert [s.concurrency for s in got] == [16, 16, 16, 8]  # each at the load of its best point


def test_plan_confirms_a_rival_as_far_under_the_winner_as_two_single_points_of_one_config_differ():
    """A rival 7% under the winner's search point is confirmed (each point is one measurement: two of
    equal configs differ by that much in about one run in ten), one 10% under is not."""
    from tuner.search.confirm import RIVAL_BAND

    pts = [_point("baseline", 8, 500.0, 30.0), _point("mbs16-qd0-pbsauto-i1", 16, 1000.0, 40.0),
           _point("mbs8-qd0-pbsauto-i1", 16, 930.0, 42.0), _point("mbs16-qd2000-pbsauto-i1", 16, 900.0, 41.0)]
    cands = {cid: CandidateRecord(SPECS[cid], "loaded", is_baseline=cid == "baseline") for cid in SPECS}
    ids = [s.candidate_id for s in plan(recommend(RunResults({}, cands, pts), C), SPECS)]
    assert 0.07 < RIVAL_BAND < 0.10
    assert ids == ["mbs16-qd0-pbsauto-i1", "mbs8-qd0-pbsauto-i1", "baseline"]


def _run_folder(tmp_path, visits: list[ConfirmPoint], slots_: list[Slot]):
    run = tmp_path / "run"
    (run / "original").mkdir(parents=True)
    shutil.copy(BUNDLED_MODELS_DIR / "synthetic" / "config.pbtxt", run / "original" / "config.pbtxt")
    (run / "profile.toml").write_text('[model]\nname = "synthetic"\n[constraints]\nlatency_budget_ms = 50.0\n')
    f = run / "results.jsonl"
    append_record(f, {"schema": SCHEMA, "type": "run", "command": "sweep", "profile": "p", "model": "synthetic",
                      "server": {"url": "x"}})
    res = _search_results()
    for c in res.candidates.values():
        append_record(f, c.to_record())
    for m in res.points:
        append_record(f, m.to_record())
    append_record(f, ConfirmPlan(tuple((s.candidate_id, s.concurrency) for s in slots_), 4).to_record())
    for v in visits:
        append_record(f, v.to_record())
    return run


def test_confirmation_is_stored_and_the_report_recomputes_it(tmp_path):
    a, b = "mbs16-qd0-pbsauto-i1", "mbs8-qd0-pbsauto-i1"
    sl = slots(a, b, "baseline")
    visits = rounds({a: 1000.0, b: 990.0, "baseline": 500.0}, 4, 0.03, seed=3)
    run = _run_folder(tmp_path, visits, sl)
    res = load_results(run)
    assert res.confirm_plan.slots == ((a, 8), (b, 8), ("baseline", 8)) and len(res.confirmation) == 12
    assert res.confirmation[0].point.windows[0].server.batch_compute_infer == visits[0].point.windows[0].server \
        .batch_compute_infer
    summary = finalize_run(run)
    conf = summary["confirmation"]
    assert conf["rounds"] == 4 and conf["method"].startswith("interleaved")
    cands = {c["candidate_id"]: c for c in conf["candidates"]}
    assert set(cands) == {a, b, "baseline"} and all(len(c["throughput_ci"]) == 2 for c in cands.values())
    # within noise of each other: the simpler (smaller max_batch_size) is recommended, the other tied
    assert summary["recommended"]["candidate_id"] == b and summary["tied_with"] == [a]
    g = summary["gain_vs_baseline"]
    assert g["significant"] is True and g["ci"][0] <= g["ratio"] <= g["ci"][1]
    assert summary["batch_sizes"][a]["source"] == "confirmation" and summary["batch_sizes"][a]["executions"]
    html = (run / "report.html").read_text()
    assert 'id="fig-confirmation"' in html and 'id="fig-batches"' in html and "Tied (within noise" in html
    assert "[" in html.split("throughput vs baseline (confirmed)")[0][-200:]
    again = report_run(run)  # `tuner report RUN`: the same numbers from the stored data
    assert again["confirmation"] == summary["confirmation"] and again["tied_with"] == summary["tied_with"]


def test_report_says_keep_the_current_config(tmp_path):
    a = "mbs16-qd0-pbsauto-i1"
    run = _run_folder(tmp_path, rounds({a: 1020.0, "baseline": 1000.0}, 4, 0.04, seed=4), slots(a, "baseline"))
    summary = finalize_run(run)
    assert summary["keep_current_config"] is True and summary["recommended"]["candidate_id"] == "baseline"
    assert summary["gain_vs_baseline"]["significant"] is False
    assert "Keep the current config" in (run / "report.html").read_text()
    assert "dynamic_batching" not in (run / "recommended" / "config.diff").read_text()


# ------------------------------------------------------------ the real server

@pytest.mark.triton
@pytest.mark.timeout(120)
def test_sweep_confirms_and_resume_keeps_finished_rounds(remote_server, tmp_path):
    """A small sweep with the confirmation phase on the real Triton; a resumed run measures
    only the visits that were lost."""
    from tuner.profile import load_profile
    from tuner.results.store import read_records
    from tuner.sweep import run_sweep

    path = write_profile(tmp_path / "p.toml", url=remote_server.url, max_batch_size=(4, 16), queue_delay_us=(0,),
                         concurrency=(1, 8), budget_ms=50.0, window_s=0.3)
    text = "\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("confirm"))
    path.write_text(text.replace("[constraints]", "confirm = true\nconfirm_rounds = 3\n[constraints]") + "\n")
    run = tmp_path / "run"
    outcome = run_sweep(load_profile(str(path)), run)
    s = outcome.summary
    conf = s["confirmation"]
    assert conf is not None and conf["rounds"] >= 2 and len(conf["candidates"]) >= 2
    assert any(c["candidate_id"] == "baseline" for c in conf["candidates"])
    assert all(c["throughput_ci"][0] <= c["throughput_infer_per_s"] <= c["throughput_ci"][1]
               for c in conf["candidates"])
    assert s["gain_vs_baseline"]["ratio"] > 1.5 and s["gain_vs_baseline"]["significant"]
    assert s["recommended"]["candidate_id"] != "baseline"
    assert s["batch_sizes"][s["recommended"]["candidate_id"]]["mean_batch"] > 1.0
    assert s["search"]["strategy"] == "smart" and all(x["reason"] for x in s["skipped"])
    # drop the last visit (as if killed during it), then resume: exactly that visit is measured again
    lines = (run / "results.jsonl").read_text().splitlines()
    last = max(i for i, ln in enumerate(lines) if '"type":"confirm_point"' in ln)
    kept = [ln for i, ln in enumerate(lines) if i != last and '"type":"session_end"' not in ln]
    (run / "results.jsonl").write_text("\n".join(kept) + "\n")
    before = sum(1 for r in read_records(run / "results.jsonl") if r["type"] in ("point", "confirm_point"))
    again = run_sweep(load_profile(str(path)), run, resume=True)
    after = [r for r in read_records(run / "results.jsonl") if r["type"] in ("point", "confirm_point")]
    assert len(after) == before + 1 and after[-1]["type"] == "confirm_point"
    assert again.summary["confirmation"]["rounds"] == conf["rounds"]
    assert json.loads((run / "summary.json").read_text())["recommended"] == again.summary["recommended"]


# ------------------------------------------------------------ search + confirmation, simulated

FLAT = Surface("flat", {"fixed_cost_ms": "0.5", "per_item_cost_ms": "12"}, max_batch_size=(1, 4, 8),
               max_queue_delay_us=(0, 5000), concurrency=(1, 4, 8), budget_ms=250.0)


def _host(m: Measurement, rng: np.random.Generator, spread: float) -> Measurement:
    """A visit on a shared host: the whole visit runs a little faster or slower than the last
    (the spread of visit throughput a 2-core box shows between model loads, 2-5%)."""
    f = float(np.exp(rng.normal(0.0, spread)))
    for w in m.windows:
        w.duration_s *= f
    return m


def _simulated_sweep(surface: Surface, seed: int, base: CandidateSpec, max_rounds: int = 6,
                     budget: int = VISIT_BUDGET, host_spread: float = 0.03) -> tuple[str, tuple]:
    """A smart search of the surface, then its confirmation rounds as the runner makes them
    (`next_round`), all on the simulated server, each visit on a noisy host."""
    rng = np.random.default_rng(seed)
    text = (f'[model]\nname = "m"\n[search]\n{surface.profile_search()}[constraints]\n'
            f"latency_budget_ms = {surface.budget_ms}\n")
    run = sim.SimRun(text, seed, surface=surface, base_spec=base)
    got = plan(run.rec, run.specs)
    visits: list[ConfirmPoint] = []
    conf = None
    for r in range(max_rounds):
        todo = next_round(conf, got, r, len(visits), max_rounds, budget)
        if not todo:
            break
        visits += [ConfirmPoint(r, _host(sim.SimServer(seed=1000 * (seed + 1) + r, surface=surface)
                                         .measure(s.candidate_id, run.specs[s.candidate_id], s.concurrency),
                                         rng, host_spread)) for s in todo]
        conf = analyse(visits, got, run.specs, run.profile.constraints)
    return conf.recommended, conf.tied_with


@pytest.mark.parametrize("surface, base, share", [(FLAT, CandidateSpec(8, 0, (), 1, False), 0.85),
                                                  (SURFACES["knee"], CandidateSpec(32, 0, (), 1, False), 0.95),
                                                  (SURFACES["linear"], CandidateSpec(32, 0, (), 1, False), 0.95)])
def test_two_runs_name_the_same_config_or_each_others_as_tied(surface, base, share):
    """Run-to-run noise moves the search's winner and the keep-or-switch call; after
    confirmation, pairs of runs agree, or each lists the other's pick (issue 13, item 5). FLAT:
    the best is 6-11% above the current config, where a fixed rule flips (the tie rule alone
    agreed in 31 of these 66 pairs); knee: two delays of one refined max_batch_size give the
    same throughput."""
    import itertools

    outs = [_simulated_sweep(surface, seed, base) for seed in range(12)]
    pairs = list(itertools.combinations(outs, 2))
    agree = [a == b or (a in tb and b in ta) for (a, ta), (b, tb) in pairs]
    assert sum(agree) >= share * len(pairs), outs
