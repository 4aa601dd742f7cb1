"""`tuner plan`: capacity from stored results alone, checked against hand-computed cases.

The run folders are made up: every window of a load point holds `rate`
latencies of exactly `lat_ms`, so each point's throughput is `rate` infer/s
and every percentile is `lat_ms`; the numbers below follow by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config import CandidateSpec
from tuner.report.outputs import finalize_run
from tuner.search.plan import (capacity_steps, cost_per_million, interpolate_latency, latency_curve,
                               make_plan, replicas_needed)
from tuner.search.recommend import recommend
from tuner.results.records import CandidateRecord, Measurement, SCHEMA
from tuner.results.store import append_record, load_results
from tuner.server.install import BUNDLED_MODELS_DIR
from tuner.results.stats import WindowSample

PROFILE = """\
[model]
name = "synthetic"
[search]
max_batch_size = [16]
max_queue_delay_us = [500]
[constraints]
latency_percentile = "p99"
latency_budget_ms = {budget}
"""
A = CandidateSpec(16, 500, (), 1)
BASE = CandidateSpec(32, 0, (), 1, dynamic_batching=False)
# (concurrency, infer/s, latency ms)
A_POINTS = [(1, 200, 5.0), (4, 600, 8.0), (8, 1000, 12.0), (16, 1200, 25.0), (32, 1250, 60.0)]
BASE_POINTS = [(1, 150, 6.0), (4, 300, 13.0), (8, 320, 25.0)]


def point(cid: str, c: int, rate: int, lat_ms: float) -> Measurement:
    windows = [WindowSample(float(i), 1.0, [int(lat_ms * 1000)] * rate) for i in range(3)]
    return Measurement(cid, c, windows, stable=True)


def write_run(run: Path, budget: float = 30.0) -> Path:
    (run / "original").mkdir(parents=True)
    shutil.copy(BUNDLED_MODELS_DIR / "synthetic" / "config.pbtxt", run / "original" / "config.pbtxt")
    (run / "profile.toml").write_text(PROFILE.format(budget=budget))
    f = run / "results.jsonl"
    append_record(f, {"schema": SCHEMA, "type": "run", "command": "sweep", "profile": "p", "model": "synthetic"})
    append_record(f, CandidateRecord(BASE, "loaded", is_baseline=True).to_record())
    append_record(f, CandidateRecord(A, "loaded").to_record())
    for c, rate, lat in BASE_POINTS:
        append_record(f, point("baseline", c, rate, lat).to_record())
    for c, rate, lat in A_POINTS:
        append_record(f, point(A.candidate_id, c, rate, lat).to_record())
    return run


# ------------------------------------------------------------ arithmetic

def test_replicas_cost_and_interpolation_by_hand():
    assert replicas_needed(5000, 1200, 0.3) == 6          # 5000 / 840 = 5.95
    assert replicas_needed(1000, 1250, 0.2) == 1          # exactly one replica's usable share
    assert replicas_needed(1001, 1250, 0.2) == 2
    assert replicas_needed(10, 1200, 0.0) == 1
    assert cost_per_million(6, 3.0, 5000) == pytest.approx(1.0)  # 6 * 3 $/h / (5000 * 3600 /h) * 1e6
    assert cost_per_million(10, 2.5, 10000) == pytest.approx(0.694444, rel=1e-5)
    curve = latency_curve([point("a", c, r, lat) for c, r, lat in A_POINTS])
    assert [x for x, _ in curve] == [200, 600, 1000, 1200, 1250]
    lat, note = interpolate_latency(curve, 5000 / 6)
    assert lat["p99"] == pytest.approx(8.0 + (5000 / 6 - 600) / 400 * 4.0) and note == ""  # 10.33 ms
    lat, note = interpolate_latency(curve, 100)
    assert lat["p99"] == 5.0 and "below the lowest measured load" in note
    # a dip in throughput (noise) is not part of the curve
    dip = latency_curve([point("a", 1, 200, 5.0), point("a", 2, 180, 9.0), point("a", 4, 600, 8.0)])
    assert [x for x, _ in dip] == [200, 600]
    xs, ys = capacity_steps(1000, 0.3, 3)
    assert xs == [0, 700, 700, 1400, 1400, 2100] and ys == [1, 1, 2, 2, 3, 3]


def test_plan_from_stored_results(tmp_path):
    run = write_run(tmp_path / "run")
    plan = make_plan(run, 5000, headroom=0.3, cost_per_gpu_hour=3.0)
    assert plan.feasible and plan.candidate_id == A.candidate_id
    assert plan.throughput_at_budget == pytest.approx(1200)   # the best point within p99 <= 30 ms
    assert plan.usable_per_replica == pytest.approx(840)
    assert plan.replicas == 6 and plan.load_per_replica == pytest.approx(5000 / 6)
    assert plan.expected_p99_ms == pytest.approx(10.0 + 1 / 3)
    assert plan.cost_per_hour == pytest.approx(18.0) and plan.cost_per_million == pytest.approx(1.0)
    assert plan.config["max_batch_size"] == 16 and plan.config["max_queue_delay_us"] == 500
    assert plan.binding.startswith("latency budget")
    # no headroom: 5000 / 1200 -> 5 replicas at 1000 infer/s each, p99 12 ms on the curve
    p0 = make_plan(run, 5000, headroom=0.0)
    assert p0.replicas == 5 and p0.expected_p99_ms == pytest.approx(12.0) and p0.cost_per_million is None


def test_plan_cli_table_and_json(tmp_path):
    run = write_run(tmp_path / "run")
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["plan", str(run), "--target-rps", "5000", "--headroom", "0.3",
                                   "--cost-per-gpu-hour", "3", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "replicas" in res.output and A.candidate_id in res.output and "10.33 ms" in res.output
    assert "1.0000" in res.output  # cost per million
    doc = json.loads(out.read_text())
    assert doc["feasible"] is True and doc["replicas"] == 6
    assert doc["expected_p99_ms"] == pytest.approx(10.0 + 1 / 3)
    assert doc["cost_per_million"] == pytest.approx(1.0) and doc["target_rps"] == 5000
    for bad in (["--target-rps", "0"], ["--target-rps", "10", "--headroom", "1"],
                ["--target-rps", "10", "--cost-per-gpu-hour", "-1"]):
        res = CliRunner().invoke(app, ["plan", str(run), *bad])
        assert res.exit_code == 2, (bad, res.output)
    res = CliRunner().invoke(app, ["plan", str(tmp_path), "--target-rps", "10"])
    assert res.exit_code == 2 and "results.jsonl" in res.output


def test_nothing_meets_the_constraints(tmp_path):
    run = write_run(tmp_path / "run", budget=2.0)  # every point takes >= 5 ms
    res = load_results(run)
    from tuner.profile import load_run_profile

    rec = recommend(res, load_run_profile(run).constraints)
    assert rec.best is None and rec.closest is not None
    assert rec.closest.candidate_id == A.candidate_id and rec.closest.concurrency == 1  # 5 ms: the closest
    assert rec.reason.startswith("nothing meets the constraints")
    summary = finalize_run(run)
    assert summary["recommended"] is None and summary["closest"]["candidate_id"] == A.candidate_id
    assert summary["reason"].startswith("nothing meets the constraints")
    assert summary["capacity_per_replica_infer_per_s"] is None
    out = tmp_path / "plan.json"
    cli = CliRunner().invoke(app, ["plan", str(run), "--target-rps", "1000", "--json", str(out)])
    assert cli.exit_code == 1
    assert "nothing meets the constraints" in cli.output and f"closest candidate: {A.candidate_id}" in cli.output
    doc = json.loads(out.read_text())
    assert doc["feasible"] is False and doc["replicas"] is None
    assert doc["closest"]["candidate_id"] == A.candidate_id
    html = (run / "report.html").read_text()
    assert "No candidate meets the constraints" in html and "no capacity to plan with" in html


def test_report_capacity_section(tmp_path):
    run = write_run(tmp_path / "run")
    summary = finalize_run(run)
    assert summary["capacity_per_replica_infer_per_s"] == pytest.approx(1200)
    html = (run / "report.html").read_text()
    assert '<div id="fig-capacity"' in html and "Replicas needed vs target load" in html
    assert "1,200.0 infer/s within the budget" in html and "840.0 infer/s with 30% kept free" in html
    assert "baseline (original config)" in html
