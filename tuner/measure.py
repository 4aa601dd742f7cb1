"""`tuner measure`: one model, its current config, a few load levels.

Closed-loop levels (`concurrencies`) and open-loop request rates
(`request_rates`, constant or Poisson arrivals); each point records the load
generator's self-check (`client_bound`) and the server's telemetry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuner.config import config_to_json, current_spec
from tuner.errors import LoadError
from tuner.load import eventloop
from tuner.load.client import LoadClient
from tuner.load.request import RequestPlan, build_request
from tuner.load.spec import LoadSettings, PointSamples
from tuner.load.telemetry import default_metrics_url
from tuner.results.records import SCHEMA, CandidateRecord, Measurement, PointLoad
from tuner.server.connection import Connection, as_connection
from tuner.session import RunSession, SessionSpec


@dataclass
class MeasureResult:
    model: str
    server: dict
    points: list[Measurement]
    results_path: Path


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


def point_load(m: Measurement) -> PointLoad:
    """A point's offered load and the generator's verdict, from its stored windows."""
    s = m.summary()
    c = s.client or {}
    rate = m.request_rate if m.request_rate is not None else (c.get("target") if c.get("mode") == "rate" else None)
    return PointLoad(request_rate=rate, arrivals=c.get("arrivals") or "closed",
                     client_bound=bool(c.get("client_bound")), bound=c.get("bound"),
                     bound_reason=c.get("reason", ""))


@dataclass(frozen=True)
class LoadPlan:
    """The load points to measure, in order: closed-loop levels, then open-loop rates."""

    concurrencies: tuple[int, ...] = (1, 8, 32)
    request_rates: tuple[float, ...] = ()  # requests/s
    arrivals: str = "constant"  # open loop: "constant" | "poisson"


async def measure_points(session: RunSession, plan: RequestPlan, loads: LoadPlan, settings: LoadSettings,
                         candidate_id: str, on_point=None, *, metrics_url: str | None = None) -> list[Measurement]:
    """Measure the applied config at each load of `loads`, recording each point as it finishes."""
    out = []
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
            session.record(m)
            out.append(m)
            if on_point is not None:
                on_point(m)
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
) -> MeasureResult:
    """Measure `model` at each concurrency and request rate; metrics_url defaults to
    the embedded server's, or port 8002 on the host of `url`."""
    settings = settings or LoadSettings()
    conn = as_connection(url) if url else None
    spec = SessionSpec("measure", model, version, conn, metrics_url=metrics_url)
    with RunSession(Path(run_dir), spec) as s:
        server_info = s.server.describe()
        original = s.readback
        s.record_run(settings=dict(settings.__dict__))
        s.record(CandidateRecord(spec=current_spec(original), status="loaded",
                                 config_json=config_to_json(original), is_baseline=True))
        plan = build_request(original, model, version, shapes, data)
        metrics = metrics_url or s.server.metrics_url or default_metrics_url(s.server.url)
        loads = LoadPlan(tuple(concurrencies), tuple(request_rates), arrivals)
        points = eventloop.run(measure_points(s, plan, loads, settings, "baseline", on_point,
                                              metrics_url=metrics))
    failed = [p for p in points if p.status == "failed"]
    if failed and len(failed) == len(points):
        raise LoadError(f"every request failed: {failed[0].first_error}")
    return MeasureResult(model=model, server=server_info, points=points, results_path=s.results.path)


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


def summary_json(result: MeasureResult) -> dict:
    """The `--json FILE` form: schema 1, one entry per load point."""
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
            **point_load(p).to_dict(),
            "client": s.client,
            "telemetry": s.telemetry,
            "first_response_ms": s.first_response_ms,
            "responses_per_request": s.responses_per_request,
            "load_workers": load_workers(p),
        })
    return {"schema": SCHEMA, "model": result.model, "server": result.server, "points": points}
