"""The regression gate: `tuner compare`, `tuner check`, `tuner baseline`.

Measurements run on the real embedded Triton over real gRPC; the statistics
are also tested on made-up numbers. The workload for the false-alarm and
detection tests is the synthetic model with its cost dominating the box's
overhead (8 ms per execution + 1 ms per item, dynamic batching), as a GPU
model's does; the default synthetic model (2 ms + 0.5 ms) is mostly Python and
gRPC overhead on 2 shared cores and varies by 5-8% between runs.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tuner import config as cfgmod
from tuner.gate.compare import CompareOptions, compare, parse_latency_limits, parse_pct
from tuner.gate.dataset import PointData, dataset_from_results, load_dataset
from tuner.gate.errors import CompareError, EnvironmentMismatch
from tuner.gate.percentiles import order_statistics, weighted_percentiles
from tuner.gate.render import to_junit, to_markdown
from tuner.results.environment import differences, gpus_from_metrics
from tuner.load.spec import LoadSettings
from tuner.measure import measure_model
from tuner.server.control import ServerControl
from tuner.server.model_session import ModelSession

from .conftest import ROOT, TUNER, subprocess_env, write_profile

pytestmark = pytest.mark.timeout(240)

RUNS = 7  # 21 distinct pairs; 20 are compared
SLOW_RUNS = 3
SETTINGS = LoadSettings(warmup_s=0.3, window_s=0.5, min_windows=3, max_windows=4, stability_pct=15)
LEVELS = [1, 4]
# This workload's run-to-run spread beyond what a run's own windows show: about 2% on the quiet 2-core
# box (throughput and p50; `tuner compare --run-noise 0` of repeated runs), but up to 8% in CI, where
# the suite's other worker shares the two cores (one fast first run made 3 of 20 pairs alarm at a 2%
# run noise, CI stop 26; at 3%, run 0 measured 12-15% faster than the six after it made 5 of 20 pairs
# alarm, CI stop 27, as another worker's load came and went). The gate runs at the product default, 3%,
# which is what a user's check gets, and every test that reads `measured` is marked `quiet`, so the
# runs are taken with the cores to themselves, as a CI gate's runner would give them: a false-alarm
# rate measured beside the suite's other workers is that load's drift, not the gate's.
GATE = CompareOptions()


def _workload(original: cfgmod.ModelConfig, slowdown: float = 1.0) -> cfgmod.ModelConfig:
    cfg = cfgmod.copy_config(original)
    cfg.parameters["fixed_cost_ms"].string_value = f"{8.0 * slowdown:g}"
    cfg.parameters["per_item_cost_ms"].string_value = f"{1.0 * slowdown:g}"
    cfg.max_batch_size = 8
    cfg.dynamic_batching.max_queue_delay_microseconds = 0
    return cfg


@pytest.fixture(scope="module")
def measured(remote_server, tmp_path_factory):
    """RUNS measurements of one config, then SLOW_RUNS with the model 20% slower."""
    root = tmp_path_factory.mktemp("gate")
    ctl = ServerControl(remote_server.url, remote_server.log_path)
    session = ModelSession(ctl, "synthetic")
    timings = {}
    try:
        original = session.open()
        session.apply(_workload(original))
        t0 = time.monotonic()
        normal = []
        for i in range(RUNS):
            measure_model("synthetic", root / f"run{i}", url=remote_server.url, concurrencies=LEVELS,
                          settings=SETTINGS)
            normal.append(root / f"run{i}")
        timings["per_run_s"] = (time.monotonic() - t0) / RUNS
        session.apply(_workload(original, 1.2))  # the model's work takes 20% longer
        slow = []
        for i in range(SLOW_RUNS):
            measure_model("synthetic", root / f"slow{i}", url=remote_server.url, concurrencies=LEVELS,
                          settings=SETTINGS)
            slow.append(root / f"slow{i}")
    finally:
        session.restore()
        ctl.close()
    return {"normal": normal, "slow": slow, "root": root, "timings": timings}


def _cli(*args, timeout=120):
    return subprocess.run(TUNER + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env())


# ------------------------------------------------------ measured: gate ---

@pytest.mark.triton
@pytest.mark.quiet
def test_false_alarm_rate_same_config(measured):
    runs = [load_dataset(p) for p in measured["normal"]]
    pairs = list(itertools.combinations(range(RUNS), 2))[:20]
    flagged = []
    for a, b in pairs:
        c = compare(runs[a], runs[b], GATE)
        assert len(c.points) == len(LEVELS) and not c.unmatched
        if c.regressed:
            flagged.append((a, b, [r for p in c.regressions for r in p.reasons]))
    print(f"false alarms: {len(flagged)}/{len(pairs)} {flagged}")
    assert len(flagged) <= 1, flagged


@pytest.mark.triton
@pytest.mark.quiet
def test_slower_model_is_a_regression_every_time(measured, tmp_path):
    normal, slow = measured["normal"], measured["slow"]
    # every (normal, slow) pair, through the library
    misses = [(n.name, s.name) for n in normal for s in slow
              if not compare(load_dataset(n), load_dataset(s), GATE).regressed]
    print(f"detected {len(normal) * len(slow) - len(misses)}/{len(normal) * len(slow)}")
    assert not misses, misses
    # and through the CLI, with its exit code and reports, several times
    for i, s in enumerate(slow):
        junit, md, js = tmp_path / f"j{i}.xml", tmp_path / f"r{i}.md", tmp_path / f"r{i}.json"
        proc = _cli("compare", normal[i], s, "--junit", junit, "--markdown", md,
                    "--json", js)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "REGRESSION" in proc.stdout and "Traceback" not in proc.stderr
        suite = ET.parse(junit).getroot()
        cases = suite.findall(".//testcase")
        assert len(cases) == len(LEVELS)  # one testcase per point
        assert {c.get("name") for c in cases} == {f"mbs8-qd0-pbs8-i1 @ concurrency {n}" for n in LEVELS}
        failures = suite.findall(".//testcase/failure")
        assert failures and int(suite.get("failures")) == len(failures)
        doc = json.loads(js.read_text())
        assert doc["regressed"] is True and len(doc["points"]) == len(LEVELS)
        assert sum(p["regressed"] for p in doc["points"]) == len(failures)
        text = md.read_text()
        assert "| config | concurrency | metric |" in text and "|---|" in text and "**REGRESSION**" in text


@pytest.mark.triton
@pytest.mark.quiet
def test_same_run_passes_and_reports(measured, tmp_path):
    run = measured["normal"][0]
    junit, md = tmp_path / "j.xml", tmp_path / "r.md"
    proc = _cli("compare", run, run, "--junit", junit, "--markdown", md)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    suite = ET.parse(junit).getroot()
    assert len(suite.findall(".//testcase")) == len(LEVELS) and not suite.findall(".//failure")
    assert "no regression" in md.read_text()


def _with_environment(src: Path, dst: Path, **changes) -> Path:
    dst.mkdir(parents=True)
    lines = []
    for line in (src / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("type") == "run":
            env = rec["environment"]
            for dotted, value in changes.items():
                cur = env
                *parents, last = dotted.split("__")
                for p in parents:
                    cur = cur[p]
                cur[last] = value
        lines.append(json.dumps(rec))
    (dst / "results.jsonl").write_text("\n".join(lines) + "\n")
    return dst


@pytest.mark.triton
@pytest.mark.quiet
def test_environment_is_recorded_and_mismatch_refused(measured, tmp_path):
    run = measured["normal"][0]
    env = load_dataset(run).environment
    assert env["server"]["version"] and env["client"]["cpu_count"] and env["client"]["host"]
    assert env["model"]["name"] == "synthetic" and env["model"]["config"]["backend"] == "python"
    assert env["gpus"] == [] and env["tuner_version"] and env["started_at"]
    other = _with_environment(run, tmp_path / "other", server__version="2.99.0", client__cpu_count=64,
                              client__host="elsewhere")
    proc = _cli("compare", run, other)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "server.version" in err and "2.99.0" in err and "client.cpu_count" in err
    assert "client.host" not in err  # the host name may differ
    assert "--allow-env-mismatch" in err
    proc = _cli("compare", run, other, "--allow-env-mismatch")
    assert proc.returncode == 0, proc.stdout + proc.stderr  # same samples, other environment
    assert "environment differs" in proc.stdout
    # only the host and start time differ: not a mismatch
    ci = _with_environment(run, tmp_path / "ci", client__host="runner-42", started_at="2030-01-01T00:00:00Z")
    assert _cli("compare", run, ci).returncode == 0


@pytest.mark.triton
@pytest.mark.quiet
def test_baseline_save_show_roundtrip(measured, tmp_path):
    run = measured["normal"][1]
    out = tmp_path / "p.baseline.json"
    proc = _cli("baseline", "save", run, "--profile", "p", "--out", out, "--max-samples", "200")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["format"] == "tuner-baseline" and doc["schema"] == 1 and doc["profile"] == "p"
    assert out.stat().st_size < 40_000
    for point in doc["configs"][0]["points"]:
        assert sum(len(w["latencies_us"]) for w in point["windows"]) <= 200
        assert all(w["completed"] >= len(w["latencies_us"]) for w in point["windows"])
    # a run and its own baseline compare as identical
    c = compare(load_dataset(out), dataset_from_results(run, max_samples=200))
    assert not c.regressed and all(abs(m.change) < 1e-12 for p in c.points for m in p.metrics)
    # throughput is exact from the baseline; percentiles within a stored sample
    full = dataset_from_results(run)
    for conc, p in full.configs["mbs8-qd0-pbs8-i1"].points.items():
        q = load_dataset(out).configs["mbs8-qd0-pbs8-i1"].points[conc]
        assert q.throughput() == pytest.approx(p.throughput(), rel=1e-9)
        assert q.percentiles_ms()["p50"] == pytest.approx(p.percentiles_ms()["p50"], rel=0.05)
    proc = _cli("baseline", "show", out)
    assert proc.returncode == 0 and "mbs8-qd0-pbs8-i1" in proc.stdout and "original" in proc.stdout


@pytest.mark.triton
@pytest.mark.quiet
def test_data_errors_exit_2(measured, tmp_path):
    run = measured["normal"][0]
    proc = _cli("compare", tmp_path / "missing", run)
    assert proc.returncode == 2 and "missing" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.baseline.json"
    bad.write_text('{"format": "tuner-baseline", "schema": 99, "configs": []}')
    proc = _cli("compare", bad, run)
    assert proc.returncode == 2 and "schema 99" in proc.stderr
    proc = _cli("compare", run, run, "--max-latency-rise", "p42=10%")
    assert proc.returncode == 2 and "p42" in proc.stderr
    proc = _cli("compare", run, run, "--max-throughput-drop", "lots")
    assert proc.returncode == 2 and "lots" in proc.stderr
    # nothing in common: another config
    ds = load_dataset(run)
    other = load_dataset(run)
    other.configs = {"mbs4-qd0-pbsauto-i1": next(iter(other.configs.values()))}
    with pytest.raises(CompareError, match="no load point"):
        compare(ds, other)


# ------------------------------------------------------------- tuner check ---

@pytest.mark.triton
def test_check_end_to_end_cli(tmp_path):
    """measure -> baseline save -> check, each starting its own embedded Triton, as CI does."""
    prof = write_profile(tmp_path / "small.toml", concurrency=(1, 8), window_s=0.4)
    measure = _cli("measure", "synthetic", "--concurrency", "1,8", "--window-s", "0.4", "--warmup-s", "0.3",
                   "--max-windows", "4", "--stability-pct", "15", "--out", tmp_path / "base_run")
    assert measure.returncode == 0, measure.stderr
    save = _cli("baseline", "save", tmp_path / "base_run", "--profile", prof)
    assert save.returncode == 0, save.stderr
    baseline = tmp_path / "small.baseline.json"  # beside the profile by default
    assert baseline.exists()
    junit, md = tmp_path / "check.xml", tmp_path / "check.md"
    t0 = time.monotonic()
    # Wide limits: a fresh embedded server per run of the overhead-bound default synthetic model
    # varies by 5-8% between runs on 2 cores; the false-alarm rate is the test above's job.
    proc = _cli("check", prof, "--out", tmp_path / "check_run", "--junit", junit, "--markdown", md,
                "--max-throughput-drop", "30%", "--max-latency-rise", "p99=60%")
    wall = time.monotonic() - t0
    print(f"tuner check wall time {wall:.1f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no regression" in proc.stdout and "concurrency 8:" in proc.stdout
    assert len(ET.parse(junit).getroot().findall(".//testcase")) == 2
    assert "| config |" in md.read_text()
    run = tmp_path / "check_run"
    assert (run / "comparison.json").exists() and (run / "comparison.md").exists()
    rec = json.loads((run / "results.jsonl").read_text().splitlines()[0])
    assert rec["command"] == "check" and rec["environment"]["profile_sha256"]
    assert wall < 60


@pytest.mark.triton
def test_check_refuses_a_config_the_baseline_lacks(remote_server, tmp_path):
    run = tmp_path / "m"
    measure_model("synthetic", run, url=remote_server.url, concurrencies=[1],
                  settings=LoadSettings(warmup_s=0.1, window_s=0.2, min_windows=3, max_windows=3))
    base = tmp_path / "b.json"
    assert _cli("baseline", "save", run, "--profile", "x", "--out", base).returncode == 0
    doc = json.loads(base.read_text())
    doc["configs"][0]["key"] = "mbs4-qd0-pbsauto-i1"
    base.write_text(json.dumps(doc))
    prof = write_profile(tmp_path / "x.toml", url=remote_server.url, concurrency=(1,))
    proc = _cli("check", prof, "--baseline", base, "--out", tmp_path / "c")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "mbs4-qd0-pbsauto-i1" in proc.stderr and "--config recommended" in proc.stderr


# ------------------------------------------------------ pure statistics ---

def _point(rng, conc=4, scale=1.0, windows=3, n=400, window_scales=None):
    """Made-up windows: gamma latencies around 9 ms; throughput inversely proportional to latency."""
    scales = [scale * w for w in (window_scales or [1.0] * windows)]
    lat = [np.sort((rng.gamma(9.0, 1000.0, n) * s).astype(np.int64)) for s in scales]
    return PointData(concurrency=conc, durations_s=np.full(len(scales), 1.0),
                     completed=np.array([int(round(n / s)) for s in scales]), latencies_us=lat)


def _dataset(points, env=None):
    from tuner.gate.dataset import ConfigData, Dataset

    conf = ConfigData("mbs8-qd0-pbsauto-i1", ["original"], {}, {p.concurrency: p for p in points})
    return Dataset("made-up", "results", "m", env, {conf.key: conf})


def test_weighted_percentiles_match_numpy_inverted_cdf():
    rng = np.random.default_rng(1)
    v = np.sort(rng.normal(100, 10, 501))
    got = weighted_percentiles(v, np.ones((1, v.size)), [50, 90, 99])[0]
    want = np.percentile(v, [50, 90, 99], method="inverted_cdf")
    assert np.allclose(got, want)
    kept = order_statistics(v, 50)
    assert kept.size == 50 and kept[0] == v.min().astype(np.int64) and kept[-1] == v.max().astype(np.int64)


def test_bootstrap_same_vs_shifted():
    rng = np.random.default_rng(7)
    base = _dataset([_point(rng, 1), _point(rng, 8)])
    same = _dataset([_point(rng, 1), _point(rng, 8)])
    slower = _dataset([_point(rng, 1, 1.2), _point(rng, 8, 1.2)])
    c = compare(base, same)
    assert not c.regressed
    for p in c.points:
        for m in p.metrics:
            assert m.ci_low <= m.change <= m.ci_high
    s = compare(base, slower)
    assert s.regressed and len(s.regressions) == 2
    thr = s.points[0].metrics[0]
    assert thr.metric == "throughput" and -0.2 < thr.change < -0.13 and thr.significant
    # a change beyond the limit but not significant is no regression
    noisy = _dataset([_point(rng, 1, window_scales=[0.85, 1.05, 1.3])])  # windows disagree
    opts = CompareOptions(max_throughput_drop=0.01, max_latency_rise={})
    r = compare(_dataset([_point(rng, 1)]), noisy, opts).points[0].metrics[0]
    assert r.change < -0.01 and r.ci_low < 0 < r.ci_high and not r.significant and not r.regressed


def test_run_noise_widens_intervals_and_is_seeded():
    rng = np.random.default_rng(3)
    a, b = _dataset([_point(rng)]), _dataset([_point(rng)])
    narrow = compare(a, b, CompareOptions(run_noise=0.0)).points[0].metrics[1]
    wide = compare(a, b, CompareOptions(run_noise=0.05)).points[0].metrics[1]
    assert wide.metric == "p50" and (wide.ci_high - wide.ci_low) > 2 * (narrow.ci_high - narrow.ci_low)
    again = compare(a, b, CompareOptions(run_noise=0.05)).points[0].metrics[1]
    assert (again.ci_low, again.ci_high) == (wide.ci_low, wide.ci_high)


def test_failed_requests_and_failed_points_regress():
    rng = np.random.default_rng(5)
    cur = _point(rng)
    cur.errors = 3
    cur.first_error = "UNAVAILABLE: gone"
    c = compare(_dataset([_point(rng)]), _dataset([cur]))
    assert c.regressed and "failed requests" in c.points[0].reasons[-1]
    dead = _point(rng)
    dead.status, dead.first_error = "failed", "UNAVAILABLE: connection refused"
    c = compare(_dataset([_point(rng)]), _dataset([dead]))
    assert c.regressed and "point failed" in c.points[0].reasons[0]
    root = ET.fromstring(to_junit(c).split("\n", 1)[1])
    assert len(root.findall(".//failure")) == 1
    assert "| config |" in to_markdown(c)


def test_thresholds_parse():
    assert parse_pct("5%", "x") == pytest.approx(0.05) and parse_pct("2.5", "x") == pytest.approx(0.025)
    assert parse_latency_limits(["p99=10%", "p50=5%,p95=8%"]) == pytest.approx(
        {"p99": 0.10, "p50": 0.05, "p95": 0.08})
    for bad in (["p99"], ["p98=1%"], ["p99=-1%"], ["p99=x"]):
        with pytest.raises(CompareError):
            parse_latency_limits(bad)


def test_environment_differences_and_gpus():
    metrics = """# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.1
# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-a"} 85899345920
nv_gpu_memory_total_bytes{gpu_uuid="GPU-b"} 85899345920
# HELP nv_inference_count Number of inferences
# TYPE nv_inference_count counter
nv_inference_count{model="m",version="1"} 10
"""
    gpus = gpus_from_metrics(metrics)
    assert [g["uuid"] for g in gpus] == ["GPU-a", "GPU-b"] and gpus[0]["memory_total_bytes"] == 85899345920
    assert gpus_from_metrics("") == []
    cfg = {"platform": "", "backend": "python", "input": [{"name": "I", "data_type": "TYPE_FP32", "dims": ["16"]}],
           "instance_group": [{"kind": "KIND_GPU", "count": 1}], "parameters": {"k": {"string_value": "1"}}}
    env = {"server": {"version": "2.51.0"}, "model": {"name": "m", "config": cfg}, "gpus": gpus,
           "gpus_known": True, "client": {"cpu_count": 16, "host": "a"}, "started_at": "t1"}
    other_gpus = [dict(g, uuid=g["uuid"] + "x") for g in gpus]  # other cards of the same kind
    cfg2 = dict(cfg, parameters={"k": {"string_value": "2"}}, max_batch_size=8)  # the model changed: compared
    same = dict(env, gpus=other_gpus, client={"cpu_count": 16, "host": "b"}, started_at="t2",
                model={"name": "m", "config": cfg2})
    assert differences(env, same)[0] == []
    fewer = dict(env, gpus=gpus[:1])
    assert any(x.startswith("gpus") for x in differences(env, fewer)[0])
    unknown = dict(env, gpus=[], gpus_known=False)
    assert differences(env, unknown)[0] == []  # no metrics URL: not a mismatch
    kind = dict(env, model={"name": "m", "config": dict(cfg, instance_group=[{"kind": "KIND_CPU"}])})
    assert any(x.startswith("model.instance_kind") for x in differences(env, kind)[0])
    with pytest.raises(EnvironmentMismatch):
        compare(_dataset([_point(np.random.default_rng(0))], env),
                _dataset([_point(np.random.default_rng(1))], dict(env, server={"version": "2.52.0"})))


def test_p99_of_too_few_requests_is_not_gated():
    rng = np.random.default_rng(11)
    few = compare(_dataset([_point(rng, n=100)]), _dataset([_point(rng, n=100, scale=1.5)]),
                  CompareOptions(max_throughput_drop=None))
    p99 = few.points[0].metrics[4]
    assert p99.metric == "p99" and p99.limit is None and "1000 requests" in p99.not_gated
    assert not few.regressed and any("p99 needs" in n for n in few.points[0].notes)
    many = compare(_dataset([_point(rng, n=600)]), _dataset([_point(rng, n=600, scale=1.5)]),
                   CompareOptions(max_throughput_drop=None))
    assert many.points[0].metrics[4].limit == pytest.approx(0.10) and many.regressed
