"""`tuner measure`: one model, its current config, a few load levels.

Closed-loop levels (`concurrencies`) and open-loop request rates
(`request_rates`, constant or Poisson arrivals), or one traffic shape
(`load/traffic.py`: a replayed request-intervals file, a step or ramp
schedule whose every window is a point); each point records the load
generator's self-check (`client_bound`) and the server's telemetry. What
the requests carry (`load/inputs.py`: input data, shape mix, client batch)
is recorded as the environment's `input_mix`; with several request shapes,
each point also has its latency per shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tuner.config import config_to_json, current_spec
from tuner.errors import LoadError
from tuner.load import eventloop
from tuner.load.client import LoadClient
from tuner.load.inputs import InputSpec, normalize_shapes
from tuner.load.request import RequestPlan, build_request
from tuner.load.spec import LoadSettings, LoadSpec, PointSamples
from tuner.load.telemetry import default_metrics_url
from tuner.load.traffic import Traffic, rate_segments
from tuner.results.frame import shape_latencies
from tuner.results.records import CandidateRecord, Measurement, PointLoad
from tuner.server.connection import Connection, as_connection
from tuner.session import RunSession, SessionSpec


@dataclass
class MeasureResult:
    model: str
    server: dict
    points: list[Measurement]
    results_path: Path
    input_mix: dict | None = None  # what the requests carried (environment.py documents it)


def _measurement(session: RunSession, samples: PointSamples, settings: LoadSettings,
                 candidate_id: str) -> Measurement:
    m = Measurement(
        candidate_id=candidate_id,
        concurrency=samples.concurrency,  # 0 for a request-rate point (its rate is in point_load)
        windows=samples.windows,
        stable=samples.stable,
        error_kinds=samples.error_kinds,
        first_error=samples.first_error,
        summary_windows=settings.min_windows,
        request_rate=samples.request_rate,
    )
    if samples.windows and all(w.completed == 0 for w in samples.windows):
        m.status = "failed"
    if m.status == "failed" and not session.server_alive():
        emb = session.server.embedded
        m.first_error = (m.first_error + f" (server exited; log: {emb.log_tail(2, one_line=True)})")
    return m


def point_load(m: Measurement, arrivals: str | None = None) -> PointLoad:
    """A point's offered load and the generator's verdict, from its stored windows."""
    s = m.summary()
    c = s.client or {}
    rate = m.request_rate if m.request_rate is not None else (c.get("target") if c.get("mode") == "rate" else None)
    return PointLoad(request_rate=rate, arrivals=arrivals or c.get("arrivals") or "closed",
                     client_bound=bool(c.get("client_bound")), bound=c.get("bound"),
                     bound_reason=c.get("reason", ""))


@dataclass(frozen=True)
class LoadPlan:
    """The load points to measure, in order: closed-loop levels, open-loop rates, then a traffic shape."""

    concurrencies: tuple[int, ...] = (1, 8, 32)
    request_rates: tuple[float, ...] = ()  # requests/s
    arrivals: str = "constant"  # open loop: "constant" | "poisson"
    traffic: Traffic | None = None  # a replayed intervals file, a step or ramp schedule


async def measure_points(session: RunSession, plan: RequestPlan, loads: LoadPlan, settings: LoadSettings,
                         candidate_id: str, on_point=None, *, metrics_url: str | None = None) -> list[Measurement]:
    """Measure the applied config at each load of `loads`, recording each point as it finishes."""
    out = []

    def keep(m: Measurement) -> None:
        session.record(m)
        out.append(m)
        if on_point is not None:
            on_point(m)

    srv = session.server
    async with LoadClient(srv.connection, session.spec.model, session.spec.version,
                          metrics_url=metrics_url) as client:
        for c, rate in [(c, None) for c in loads.concurrencies] + [(0, r) for r in loads.request_rates]:
            if rate is None:
                samples = await client.closed_loop(plan, c, settings)
            else:
                samples = await client.open_loop(plan, rate, settings, loads.arrivals)
            m = _measurement(session, samples, settings, candidate_id)
            m.load = point_load(m)
            keep(m)
        if loads.traffic is not None:
            for m in await _traffic_points(session, client, plan, loads, settings, candidate_id):
                keep(m)
    return out


async def _traffic_points(session: RunSession, client: LoadClient, plan: RequestPlan, loads: LoadPlan,
                          settings: LoadSettings, candidate_id: str) -> list[Measurement]:
    """A traffic shape: one point for a replayed intervals file; one point per window of a step or ramp."""
    traffic = loads.traffic
    arrivals = "intervals" if traffic.kind == "intervals" else loads.arrivals
    spec = LoadSpec(rate=traffic.mean_rate, arrivals=arrivals, traffic=traffic)
    if traffic.windows is None:
        samples = await client.run(plan, spec, settings)
        m = _measurement(session, samples, settings, candidate_id)
        m.load = point_load(m, "intervals")
        return [m]
    steps = traffic.windows
    samples = await client.run(plan, spec, replace(settings, min_windows=steps, max_windows=steps))
    segments = rate_segments(traffic, 0, 1)[1:]  # each window's rate at its start and end
    out = []
    for (r_a, r_b, _), window in zip(segments, samples.windows):
        one = replace(samples, windows=[window], stable=False, request_rate=(r_a + r_b) / 2)
        m = _measurement(session, one, replace(settings, min_windows=1), candidate_id)
        m.load = point_load(m, spec.label)
        out.append(m)
    return out


def measure_model(
    model: str,
    run_dir: Path,
    *,
    url: "str | Connection | None" = None,
    version: str = "",
    concurrencies: list[int] = (1, 8, 32),
    settings: LoadSettings | None = None,
    shapes: dict[str, list[int]] | None = None,
    data: str = "random",
    on_point=None,
    request_rates: list[float] = (),
    arrivals: str = "constant",
    metrics_url: str | None = None,
    inputs: InputSpec | None = None,
    traffic: Traffic | None = None,
) -> MeasureResult:
    """Measure `model` at each concurrency and request rate, then the traffic shape; `inputs`
    (else random or zero data in `shapes`) is what requests carry; metrics_url defaults to
    the embedded server's, or port 8002 on the host of `url`."""
    settings = settings or LoadSettings()
    inputs = inputs or InputSpec(data=data, shapes=normalize_shapes(shapes))
    conn = as_connection(url) if url else None
    spec = SessionSpec("measure", model, version, conn, metrics_url=metrics_url)
    with RunSession(Path(run_dir), spec) as s:
        server_info = s.server.describe()
        original = s.readback
        plan = build_request(original, model, version, inputs=inputs)  # a bad input fails before the run record
        env = s.environment()
        env["input_mix"] = plan.mix
        s.record_run(env, settings=dict(settings.__dict__))
        s.record(CandidateRecord(spec=current_spec(original), status="loaded",
                                 config_json=config_to_json(original), is_baseline=True))
        metrics = metrics_url or s.server.metrics_url or default_metrics_url(s.server.url)
        loads = LoadPlan(tuple(concurrencies), tuple(request_rates), arrivals, traffic)
        points = eventloop.run(measure_points(s, plan, loads, settings, "baseline", on_point,
                                              metrics_url=metrics))
    failed = [p for p in points if p.status == "failed"]
    if failed and len(failed) == len(points):
        raise LoadError(f"every request failed: {failed[0].first_error}")
    return MeasureResult(model=model, server=server_info, points=points, results_path=s.results.path,
                         input_mix=plan.mix)


def load_workers(m: Measurement) -> list[dict] | None:
    """Load from Ray actors: each worker's node, mean achieved load, client-bound flag, and
    the windows it failed (None for local load)."""
    if not any(w.workers or w.failed_workers for w in m.windows):
        return None
    out: dict[str, dict] = {}
    for w in m.windows:
        for p in w.workers or ():
            acc = out.setdefault(p["worker"], {"worker": p["worker"], "node_id": p.get("node_id"),
                                               "hostname": p.get("hostname"), "target": p.get("target"),
                                               "achieved": [], "client_bound": False, "failed_windows": 0})
            if p.get("achieved") is not None:
                acc["achieved"].append(p["achieved"])
            acc["client_bound"] = acc["client_bound"] or bool(p.get("client_bound"))
        for name in w.failed_workers or ():
            out.setdefault(name, {"worker": name, "achieved": [], "client_bound": False,
                                  "failed_windows": 0})["failed_windows"] += 1
    for acc in out.values():
        vals = acc.pop("achieved")
        acc["achieved"] = sum(vals) / len(vals) if vals else None
    return list(out.values())


# The `--json` form's own version, apart from the results file's (records.SCHEMA): its
# fields have only been added to since 1 (client, lateness, latency_send_ms, input mix).
JSON_SCHEMA = 1


def summary_json(result: MeasureResult) -> dict:
    """The `--json FILE` form: JSON_SCHEMA, one entry per load point."""
    points = []
    for p in result.points:
        s = p.summary()
        points.append({
            "concurrency": p.concurrency,
            "throughput_infer_per_s": s.throughput_infer_per_s,
            "latency_ms": {k: s.latency_ms[k] for k in ("p50", "p90", "p95", "p99")},
            "errors": s.errors,
            "stable": p.stable,
            "status": p.status,
            "server_ms": s.server_ms,
            **(p.load or point_load(p)).to_dict(),
            "throughput_requests_per_s": s.throughput_requests_per_s,
            "latency_by_shape": shape_latencies(p.windows, result.input_mix, p.summary_windows),
            "client": s.client,
            "telemetry": s.telemetry,
            "first_response_ms": s.first_response_ms,
            # open loop: latency_ms runs from the schedule, latency_send_ms from the actual send
            "latency_send_ms": ({k: s.latency_send_ms[k] for k in ("p50", "p90", "p95", "p99")}
                                if s.latency_send_ms else None),
            "lateness_ms": s.lateness_ms,
            "responses_per_request": s.responses_per_request,
            "load_workers": load_workers(p),
        })
    return {"schema": JSON_SCHEMA, "model": result.model, "server": result.server, "input_mix": result.input_mix,
            "points": points}
