"""The load generator against the real embedded Triton: several processes,
open-loop request rates, decoupled models over the stream, telemetry, and
response checks. No mocks: real server, real gRPC (tests marked `triton`).
The pure ones: merging windows, response checks, and the load-source
contract's failure boundary."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import numpy as np
import pytest

from tuner.errors import LoadError
from tuner.load import client as load_client
from tuner.load import telemetry
from tuner.load.client import LoadClient
from tuner.load.source import LoadSource, SourceError
from tuner.load.spec import LoadSettings
from tuner.results.store import load_results
from tuner.server.embedded import EmbeddedServer, free_port
from tuner.server.install import prepare_repository
from tuner.results.samples import WindowSample
from tuner.results.selfcheck import late_window
from tuner.results.stats import PERCENTILES, merge_windows, summarize

from .conftest import ROOT, TUNER, request_plan, subprocess_env

pytestmark = pytest.mark.timeout(180)
FAST = LoadSettings(warmup_s=0.3, window_s=0.5, min_windows=3, max_windows=3, stability_pct=15)

BROKEN_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
parameters: {{ key: "mode" value: {{ string_value: "{mode}" }} }}
"""
# Returns OUTPUT0 with no elements ("empty") or half of them ("short").
BROKEN_MODEL = """
import json
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.mode = json.loads(args["model_config"])["parameters"]["mode"]["string_value"]

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            y = x[:, :0] if self.mode == "empty" else x[:, :8]
            out.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT0", np.ascontiguousarray(y))]))
        return out
"""


def add_broken_models(repo):
    """`empty_out` and `short_out` (BROKEN_MODEL) added to a model repository; returns it."""
    for name, mode in (("empty_out", "empty"), ("short_out", "short")):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(BROKEN_CONFIG.format(name=name, mode=mode))
        (repo / name / "1" / "model.py").write_text(BROKEN_MODEL)
    return repo


@pytest.fixture(scope="module")
def odd_server(tmp_path_factory):
    """A server with the bundled decoupled model and two models with bad outputs."""
    repo = add_broken_models(prepare_repository(tmp_path_factory.mktemp("odd_repo"), ["decoupled"]))
    with EmbeddedServer(repo, tmp_path_factory.mktemp("odd_logs") / "tritonserver.log") as srv:
        yield srv


def _run(url, model, plan, *, concurrency=None, rate=None, arrivals="constant", settings=FAST, metrics_url=None):
    async def go():
        async with LoadClient(url, model, metrics_url=metrics_url) as client:
            if rate is not None:
                return await client.open_loop(plan, rate, settings, arrivals)
            return await client.closed_loop(plan, concurrency, settings)

    return asyncio.run(go())


# ------------------------------------------------------------------ merge ---

def test_merged_windows_have_the_percentiles_of_the_union():
    rng = np.random.default_rng(7)
    parts = [
        WindowSample(start_s=10.0, duration_s=0.5, latencies_us=rng.integers(100, 5000, n).tolist(), errors=e,
                     client={"mode": "concurrency", "arrivals": "closed", "target": 8.0, "achieved": 7.9,
                             "sent": n, "cpu_s": 0.1, "cpu_util_max": u, "loop_lag_p99_ms": lag, "workers": 1})
        for n, e, u, lag in ((1000, 1, 0.5, 1.0), (37, 0, 0.7, 3.0), (2500, 2, 0.2, 0.5))
    ]
    merged = merge_windows(parts)
    union = [x for p in parts for x in p.latencies_us]
    assert sorted(merged.latencies_us) == sorted(union)
    assert merged.errors == 3 and merged.duration_s == 0.5
    expect = np.percentile(np.array(union, dtype=np.float64), PERCENTILES) / 1000.0
    got = summarize([merged], last=1).latency_ms
    assert [got[f"p{p}"] for p in PERCENTILES] == pytest.approx(list(expect), rel=0, abs=1e-12)
    # the self-check adds up (targets, CPU) or takes the worst process (lag, utilization)
    c = merged.client
    assert c["target"] == 24.0 and c["workers"] == 3 and c["cpu_s"] == pytest.approx(0.3)
    assert c["cpu_util_max"] == 0.7 and c["loop_lag_p99_ms"] == 3.0
    # records written before these fields existed still load, and new ones round-trip
    old = {"start_s": 1.0, "duration_s": 2.0, "errors": 0, "latencies_us": [5, 6], "server": None}
    w = WindowSample.from_dict(old)
    assert w.client is None and w.telemetry is None and w.first_response_us is None
    assert WindowSample.from_dict(json.loads(json.dumps(merged.to_dict()))) == merged


@pytest.mark.triton
def test_two_processes_merge_exactly(remote_server):
    plan = request_plan(remote_server.url, "identity")
    settings = LoadSettings(warmup_s=0.3, window_s=0.4, min_windows=2, max_windows=2, workers=2)
    closed_port = f"http://127.0.0.1:{free_port()}/metrics"
    ps = _run(remote_server.url, "identity", plan, concurrency=4, settings=settings, metrics_url=closed_port)
    assert ps.workers == 2 and len(ps.worker_windows) == 2 and len(ps.windows) == 2
    assert ps.error_kinds == {}
    for k, window in enumerate(ps.windows):
        per = [ww[k] for ww in ps.worker_windows]
        # aligned: both processes cut the same window of the shared monotonic clock
        assert per[0].start_s == per[1].start_s and per[0].duration_s == per[1].duration_s
        assert all(p.completed > 0 for p in per)
        assert sorted(window.latencies_us) == sorted(x for p in per for x in p.latencies_us)
        assert window.client["workers"] == 2 and window.client["target"] == 4.0
        assert window.telemetry is None  # a closed metrics port: not available, not an error
    union = np.array([x for ww in ps.worker_windows for w in ww for x in w.latencies_us], dtype=np.float64)
    got = summarize(ps.windows, last=2).latency_ms
    expect = np.percentile(union, PERCENTILES) / 1000.0
    assert [got[f"p{p}"] for p in PERCENTILES] == pytest.approx(list(expect), rel=0, abs=1e-12)


# ------------------------------------------------------------- open loop ---

@pytest.mark.triton
@pytest.mark.quiet
def test_request_rate_is_held_below_saturation(remote_server):
    # synthetic: one instance, 2.5 ms per request -> ~400/s at most; ask for 150/s
    plan = request_plan(remote_server.url, "synthetic")
    ps = _run(remote_server.url, "synthetic", plan, rate=150, metrics_url=remote_server.metrics_url)
    assert ps.request_rate == 150 and ps.concurrency == 0 and ps.error_kinds == {}
    s = summarize(ps.windows)
    c = s.client
    assert c["mode"] == "rate" and c["target"] == 150
    assert c["achieved"] == pytest.approx(150, rel=0.03)  # sends per second
    assert s.throughput_infer_per_s == pytest.approx(150, rel=0.03)  # completions per second
    assert c["bound"] is None and not c["client_bound"], c["reason"]
    # latency runs from the scheduled send time and can't beat the model's 2.5 ms
    assert 2.5 <= s.latency_ms["p50"] < 50
    # telemetry from a server without GPUs: CPU figures, no GPU section, no error
    t = ps.windows[-1].telemetry
    assert t is not None and "gpus" not in t
    assert 0.0 <= t["cpu_utilization"] <= 1.0 and t["cpu_memory_used_bytes"] > 0
    assert t["request_success"] > 0 and t["pending_requests"] is not None


@pytest.mark.triton
@pytest.mark.quiet
def test_rate_far_above_saturation_is_flagged_server_bound(remote_server):
    # 1500/s offered to a model that completes ~400/s: requests go out on time
    # until max_inflight are outstanding, then sends wait for the server. That is
    # the server's limit, not the generator's: flagged "server", not client-bound.
    plan = request_plan(remote_server.url, "synthetic")
    settings = LoadSettings(warmup_s=0.3, window_s=0.4, min_windows=3, max_windows=3, max_inflight=150)
    ps = _run(remote_server.url, "synthetic", plan, rate=1500, settings=settings)
    s = summarize(ps.windows)
    c = s.client
    assert s.throughput_infer_per_s < 0.5 * 1500
    assert c["bound"] == "server" and not c["client_bound"], c["reason"]
    assert c["capped_sends"] > 0 and "in-flight limit" in c["reason"]


@pytest.mark.triton
def test_several_request_rates_each_kept_in_results(remote_server, tmp_path):
    # open-loop points all have concurrency 0: each rate must still be its own point when read back
    run = tmp_path / "run"
    proc = subprocess.run(
        TUNER + ["measure", "identity", "--url", remote_server.url, "--request-rate", "100,200",
                 "--window-s", "0.3", "--warmup-s", "0.2", "--max-windows", "3", "--out", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    points = load_results(run).points_of("baseline")
    assert [p.request_rate for p in points] == [100.0, 200.0]
    achieved = [p.summary().throughput_infer_per_s for p in points]
    assert 80 < achieved[0] < 120 and 170 < achieved[1] < 230, achieved


@pytest.mark.triton
@pytest.mark.quiet
def test_measure_cli_request_rate(remote_server, tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(
        TUNER + ["measure", "identity", "--url", remote_server.url, "--request-rate", "200",
                 "--arrivals", "poisson", "--window-s", "0.4", "--warmup-s", "0.2", "--max-windows", "3",
                 "--metrics-url", remote_server.metrics_url, "--json", str(out), "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    (p,) = json.loads(out.read_text())["points"]
    assert p["request_rate"] == 200 and p["arrivals"] == "poisson" and p["errors"] == 0
    assert p["client"]["cpu_us_per_req"] > 0 and p["client_bound"] is False
    assert p["telemetry"]["cpu_utilization"]["max"] >= 0
    assert "200/s poisson" in proc.stdout and "cpu us/req" in proc.stdout
    rec = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    point = [r for r in rec if r["type"] == "point"][0]
    assert point["request_rate"] == 200 and point["client_bound"] is False
    assert point["windows"][0]["client"]["mode"] == "rate"


# ----------------------------------------------------- stream, telemetry ---

@pytest.mark.triton
def test_decoupled_model_over_the_stream(odd_server):
    plan = request_plan(odd_server.url, "decoupled")
    assert plan.decoupled
    ps = _run(odd_server.url, "decoupled", plan, concurrency=2)
    assert ps.error_kinds == {}, ps.first_error
    s = summarize(ps.windows)
    assert s.completed > 0 and s.responses_per_request == 4
    for w in ps.windows:
        assert len(w.first_response_us) == len(w.latencies_us)
        assert all(f < t for f, t in zip(w.first_response_us, w.latencies_us))
    # 4 responses 1 ms apart: the final one comes at least ~3 ms after the first
    assert s.first_response_ms["p50"] + 2.5 < s.latency_ms["p50"]
    # open loop over the stream too
    ps = _run(odd_server.url, "decoupled", plan, rate=40)
    s = summarize(ps.windows)
    assert ps.error_kinds == {} and s.responses_per_request == 4
    assert s.client["achieved"] == pytest.approx(40, rel=0.05)


@pytest.mark.triton
def test_metrics_parsing_and_a_closed_port(remote_server):
    text = """# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-a"} 0.5
nv_gpu_utilization{gpu_uuid="GPU-b"} 0.25
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid="GPU-a"} 1000
# TYPE nv_gpu_power_usage gauge
nv_gpu_power_usage{gpu_uuid="GPU-a"} 70.5
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m",version="1"} 10
nv_inference_request_success{model="other",version="1"} 99
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="m",version="1"} 3
"""
    snap = telemetry.parse_metrics(text, "m")
    assert snap.gpus == {"GPU-a": {"utilization": 0.5, "memory_used_bytes": 1000.0, "power_w": 70.5},
                         "GPU-b": {"utilization": 0.25}}
    assert snap.counters == {"request_success": 10.0} and snap.pending_requests == 3.0
    assert snap.cpu == {}  # no CPU families: not available
    after = telemetry.parse_metrics(text.replace("} 10", "} 25"), "m")
    w = telemetry.window_telemetry(snap, after)
    assert w["request_success"] == 15.0 and w["gpus"]["GPU-a"]["power_w"] == 70.5
    assert "cpu_utilization" not in w

    # the real embedded server (CPU host): CPU families, no GPU ones
    real = telemetry.scrape(remote_server.metrics_url, "identity")
    assert real is not None and real.gpus == {} and "cpu_utilization" in real.cpu
    # a closed port and an unroutable address: None, quickly
    t0 = time.monotonic()
    assert telemetry.scrape(f"http://127.0.0.1:{free_port()}/metrics") is None
    assert telemetry.scrape("http://10.255.255.1:8002/metrics", timeout_s=0.3) is None
    assert time.monotonic() - t0 < 2.0
    assert telemetry.default_metrics_url("10.1.2.3:8001") == "http://10.1.2.3:8002/metrics"
    assert telemetry.default_metrics_url("[::1]:8001") == "http://[::1]:8002/metrics"


@pytest.mark.triton
@pytest.mark.parametrize("model, size", [("empty_out", 0), ("short_out", 32)])
def test_empty_or_short_output_from_a_real_model_is_an_error(odd_server, model, size):
    plan = request_plan(odd_server.url, model)
    settings = LoadSettings(warmup_s=0.2, window_s=0.3, min_windows=2, max_windows=2)
    for kw in ({"concurrency": 2}, {"rate": 100}):
        ps = _run(odd_server.url, model, plan, settings=settings, **kw)
        assert all(w.completed == 0 for w in ps.windows), kw
        assert sum(w.errors for w in ps.windows) > 0
        assert set(ps.error_kinds) == {"BAD_OUTPUT"}
        assert f"has {size} bytes, expected 64" in ps.first_error


def test_sampled_check_still_catches_every_bad_length():
    from tritonclient.grpc import service_pb2

    from tuner.load.request import ResponseChecker

    def resp(n):
        r = service_pb2.ModelInferResponse(model_name="m", raw_output_contents=[b"\0" * n])
        r.outputs.add(name="OUTPUT0", datatype="FP32", shape=[1, n // 4])
        return r.SerializeToString()

    check = ResponseChecker((("OUTPUT0", 64),), every=1000)
    assert check(resp(64)) is None and check.checked == 1
    for _ in range(50):
        assert check(resp(64)) is None  # known-good length: not parsed again
    assert check.checked == 1
    assert "60 bytes" in check(resp(60))  # a new length is always parsed
    assert "0 bytes" in check(resp(0))
    assert check.checked == 3


# ------------------------------------------------------- source contract ---

class _FailingSource(LoadSource):
    """A source whose generator fails in window 1, as a crashed engine or a lost process does."""

    def __init__(self, failure: Exception):
        self.failure = failure
        self.calls: list[str] = []

    async def start(self, t_start_ns):
        self.calls.append("start")

    async def window(self, k, boundary_ns):
        self.calls.append(f"window {k}")
        if k == 1:
            raise self.failure
        return None

    async def stop(self):
        self.calls.append("stop")

    def errors(self):
        return {}, ""


@pytest.mark.parametrize("failure, message", [
    (RuntimeError("boom"), "the load generator failed: RuntimeError('boom')"),
    (SourceError("load process 1 exited (code -9)"), "load process 1 exited (code -9)"),
])
def test_a_failure_inside_a_source_is_a_load_error_and_the_source_stops(monkeypatch, failure, message):
    sources = []

    def failing_source(*args):
        sources.append(_FailingSource(failure))
        return sources[-1]

    monkeypatch.setattr(load_client, "LocalSource", failing_source)
    settings = LoadSettings(warmup_s=0.01, window_s=0.01, workers=1)

    async def go():
        # nothing listens there: statistics are "not available", never a failure
        async with LoadClient(f"127.0.0.1:{free_port()}", "m") as client:
            await client.closed_loop(None, 1, settings)

    with pytest.raises(LoadError) as info:
        asyncio.run(go())
    assert str(info.value) == message and info.value.__cause__ is failure
    assert sources[0].calls == ["start", "window 0", "window 1", "stop"]


# ------------------------------------------------ open loop: schedule vs send ---

def _open_window(sched_us, send_us) -> WindowSample:
    return WindowSample(start_s=0.0, duration_s=1.0, latencies_us=[int(x) for x in sched_us],
                        send_latencies_us=[int(x) for x in send_us],
                        client={"mode": "rate", "arrivals": "constant", "target": 100.0, "sent": len(sched_us),
                                "scheduled": len(sched_us), "late_sends": 0, "capped_sends": 0})


def test_latency_from_the_send_and_lateness_come_from_the_stored_samples():
    rng = np.random.default_rng(3)
    send = rng.integers(2000, 4000, 1000)
    late = rng.integers(0, 50, 1000)
    late[:5] = 2000  # a few sends 2 ms late
    w = _open_window(send + late, send)
    again = WindowSample.from_dict(json.loads(json.dumps(w.to_dict())))
    assert again.send_latencies_us == w.send_latencies_us
    s = summarize([again, again, again])
    assert s.latency_send_ms["p99"] == pytest.approx(np.percentile(send, 99) / 1000)
    assert s.latency_ms["p99"] >= s.latency_send_ms["p99"]
    assert s.lateness_ms["max"] == pytest.approx(2.0) and s.lateness_ms["p50"] < 0.05
    merged = merge_windows([w, w])
    assert merged.send_latencies_us == w.send_latencies_us * 2


def test_a_window_whose_sends_were_late_is_flagged_client_bound():
    send = np.full(1000, 3000)
    on_time = _open_window(send + 10, send)  # 10 us late: wake-up granularity
    late = np.zeros(1000, dtype=np.int64)
    late[-20:] = 1500  # p99 lateness 1.5 ms against a p99 latency of ~4.5 ms
    stalled = _open_window(send + late, send)
    assert not late_window(on_time) and late_window(stalled)
    ok = summarize([on_time] * 3).client
    assert not ok["client_bound"], ok["reason"]
    bad = summarize([on_time, stalled, stalled]).client
    assert bad["client_bound"] and "2 of 3 windows" in bad["reason"]


@pytest.mark.triton
def test_open_loop_records_both_latencies_per_request(remote_server):
    plan = request_plan(remote_server.url, "synthetic")
    settings = LoadSettings(warmup_s=0.3, window_s=0.5, min_windows=3, max_windows=3)
    ps = _run(remote_server.url, "synthetic", plan, rate=150, settings=settings)
    for w in ps.windows:
        assert len(w.send_latencies_us) == len(w.latencies_us) > 0
        assert all(0 <= a - b for a, b in zip(w.latencies_us, w.send_latencies_us))
        assert w.client["late_p50_ms"] is not None and w.client["late_max_ms"] >= w.client["late_p99_ms"]
    s = summarize(ps.windows)
    assert 0 < s.latency_send_ms["p50"] <= s.latency_ms["p50"]
    assert s.lateness_ms["p99"] <= s.lateness_ms["max"]
