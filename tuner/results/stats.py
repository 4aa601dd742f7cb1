"""Statistics over stored samples: pure functions, no I/O, no server.

A load point is a list of windows, each with its raw latencies; every number
a report shows (throughput, percentiles, server breakdown, stability) is
computed here from those samples, so it can be recomputed at any time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 95, 99)

from tuner.results.samples import ServerDelta, WindowSample
from tuner.results.selfcheck import client_summary, merge_client


def is_stable(windows: list[WindowSample], tolerance_pct: float) -> bool:
    """Throughput and mean latency of the windows agree within the tolerance.

    The same rule perf_analyzer applies to its last three windows.
    """
    if not windows or any(w.completed == 0 or w.failed for w in windows):
        return False
    tol = 1.0 + tolerance_pct / 100.0
    thr = [w.throughput for w in windows]
    lat = [float(np.mean(w.latencies_us)) for w in windows]
    return max(thr) <= min(thr) * tol and max(lat) <= min(lat) * tol


@dataclass(frozen=True)
class PointSummary:
    """What a load point measured, computed from its measured windows."""

    throughput_infer_per_s: float
    latency_ms: dict[str, float]  # "p50", "p90", "p95", "p99", "mean"
    errors: int
    completed: int
    duration_s: float
    server_ms: dict[str, float] | None  # per-request averages: queue, compute_*
    avg_batch_size: float | None
    # decoupled models: time to the first response, responses per request
    first_response_ms: dict[str, float] | None = None
    responses_per_request: float | None = None
    # the load generator's self-check over the windows (see client_summary)
    client: dict | None = None
    # server telemetry over the windows (see telemetry_summary)
    telemetry: dict | None = None
    # open loop: latency from the actual send (latency_ms runs from the schedule), and the
    # client's lateness per completed request (schedule -> send): p50, p99, max
    latency_send_ms: dict[str, float] | None = None
    lateness_ms: dict[str, float] | None = None
    # requests per second; throughput_infer_per_s counts items (client batches: batch_size per request)
    throughput_requests_per_s: float | None = None

    def latency(self, percentile: str) -> float:
        return self.latency_ms[percentile]

    def to_dict(self) -> dict:
        return asdict(self)


def percentiles_ms(latencies_us: np.ndarray) -> dict[str, float]:
    if latencies_us.size == 0:
        return {f"p{p}": float("nan") for p in PERCENTILES} | {"mean": float("nan")}
    qs = np.percentile(latencies_us, PERCENTILES)
    out = {f"p{p}": float(q) / 1000.0 for p, q in zip(PERCENTILES, qs)}
    out["mean"] = float(latencies_us.mean()) / 1000.0
    return out


def merge_server(deltas: list[ServerDelta | None]) -> ServerDelta | None:
    present = [d for d in deltas if d is not None]
    if not present:
        return None
    out = ServerDelta()
    for d in present:
        for name in ("success_count", "queue_ns", "compute_input_ns", "compute_infer_ns",
                     "compute_output_ns", "inference_count", "execution_count"):
            setattr(out, name, getattr(out, name) + getattr(d, name))
        for size, (count, ns) in d.batch_compute_infer.items():
            c0, n0 = out.batch_compute_infer.get(size, (0, 0))
            out.batch_compute_infer[size] = (c0 + count, n0 + ns)
    return out


def server_breakdown_ms(delta: ServerDelta | None) -> dict[str, float] | None:
    if delta is None or delta.success_count == 0:
        return None
    n = delta.success_count
    return {
        "queue": delta.queue_ns / n / 1e6,
        "compute_input": delta.compute_input_ns / n / 1e6,
        "compute_infer": delta.compute_infer_ns / n / 1e6,
        "compute_output": delta.compute_output_ns / n / 1e6,
    }


def summarize(windows: list[WindowSample], last: int = 3) -> PointSummary:
    """Summary over the last `last` windows (the ones the stability rule judged); failed
    windows (a load worker lost mid-window) are left out."""
    ok = [w for w in windows if not w.failed] or windows
    used = ok[-last:] if last > 0 else ok
    lats = np.fromiter((x for w in used for x in w.latencies_us), dtype=np.float64)
    duration = sum(w.duration_s for w in used)
    completed = int(lats.size)
    delta = merge_server([w.server for w in used])
    avg_batch = None
    if delta is not None and delta.execution_count > 0:
        avg_batch = delta.inference_count / delta.execution_count
    first_ms = responses_per_request = None
    if any(w.first_response_us is not None for w in used):
        first = np.fromiter((x for w in used for x in (w.first_response_us or ())), dtype=np.float64)
        first_ms = percentiles_ms(first)
        responses = sum(w.responses or 0 for w in used)
        responses_per_request = responses / completed if completed else None
    send_ms, lateness = send_latency_summary(used)
    items = sum(w.completed * (w.batch_size or 1) for w in used)
    return PointSummary(
        throughput_infer_per_s=items / duration if duration > 0 else 0.0,
        latency_ms=percentiles_ms(lats),
        errors=sum(w.errors for w in used),
        completed=completed,
        duration_s=duration,
        server_ms=server_breakdown_ms(delta),
        avg_batch_size=avg_batch,
        first_response_ms=first_ms,
        responses_per_request=responses_per_request,
        client=client_summary(used),
        telemetry=telemetry_summary(used),
        latency_send_ms=send_ms,
        lateness_ms=lateness,
        throughput_requests_per_s=completed / duration if duration > 0 else 0.0,
    )


def send_latency_summary(windows: list[WindowSample]) -> tuple[dict | None, dict | None]:
    """(percentiles of latency from the actual send, lateness p50/p99/max) over open-loop windows.

    Each completed request's lateness is its latency from the schedule minus its latency
    from the send: exactly how late the client sent it."""
    if not windows or any(w.send_latencies_us is None for w in windows):
        return None, None
    sched = np.fromiter((x for w in windows for x in w.latencies_us), dtype=np.float64)
    sent = np.fromiter((x for w in windows for x in w.send_latencies_us), dtype=np.float64)
    if sched.size != sent.size:
        return None, None
    if sent.size == 0:
        return percentiles_ms(sent), None
    late = sched - sent
    return percentiles_ms(sent), {"p50": float(np.percentile(late, 50)) / 1000.0,
                                  "p99": float(np.percentile(late, 99)) / 1000.0,
                                  "max": float(late.max()) / 1000.0}


# ------------------------------------------------------ several processes ---

def merge_windows(parts: list[WindowSample]) -> WindowSample:
    """One window from the same window of several load processes.

    Raw samples are concatenated, so percentiles of the merged window are
    exactly those of the union of every process's samples; counts add up.
    The server delta and telemetry are the caller's (one per server, not per
    process).
    """
    if not parts:
        raise ValueError("no windows to merge")
    firsts = [p.first_response_us for p in parts]
    sends = [p.send_latencies_us for p in parts]
    return WindowSample(
        start_s=min(p.start_s for p in parts),
        duration_s=max(p.duration_s for p in parts),
        latencies_us=[x for p in parts for x in p.latencies_us],
        errors=sum(p.errors for p in parts),
        server=None,
        first_response_us=None if all(f is None for f in firsts) else [x for f in firsts for x in (f or ())],
        responses=None if all(p.responses is None for p in parts) else sum(p.responses or 0 for p in parts),
        client=merge_client([p.client for p in parts]),
        telemetry=None,
        send_latencies_us=None if any(x is None for x in sends) else [x for f in sends for x in f],
        shape_index=None if any(p.shape_index is None for p in parts) else [x for p in parts for x in p.shape_index],
        batch_size=parts[0].batch_size,
    )


GAUGE_KEYS = ("cpu_utilization", "cpu_memory_used_bytes", "pending_requests")
COUNTER_KEYS = ("request_success", "request_failure", "inference_count")
MIB = 1024 * 1024


def _mean_max(vals: list[float]) -> dict:
    return {"mean": float(np.mean(vals)), "max": float(max(vals))}


def telemetry_summary(windows: list[WindowSample]) -> dict | None:
    """Server telemetry over the windows: gauges' mean and max, counters' sums.

    Keys are those of `telemetry.window_telemetry`; a key none of the windows
    had is absent (not available), never an error. Energy per inference is the
    energy of the windows that counted both energy and inferences over their
    inferences: a sum over several windows evens out the GPU metrics' refresh
    interval, which one window's figure does not.
    """
    tele = [w.telemetry for w in windows if w.telemetry]
    if not tele:
        return None
    out: dict = {}
    for key in GAUGE_KEYS:
        vals = [t[key] for t in tele if t.get(key) is not None]
        if vals:
            out[key] = _mean_max(vals)
    for key in COUNTER_KEYS:
        vals = [t[key] for t in tele if t.get(key) is not None]
        if vals:
            out[key] = float(sum(vals))
    if any("gpus" in t for t in tele):
        out["gpus"] = _gpus_summary(tele)
    both = [t for t in tele if t.get("energy_j") is not None and t.get("inference_count") is not None]
    if both:
        out["energy_j"] = float(sum(t["energy_j"] for t in both))
        inferences = sum(t["inference_count"] for t in both)
        if inferences > 0 and out["energy_j"] > 0:
            out["energy_j_per_infer"] = out["energy_j"] / inferences
    return out or None


def _gpus_summary(tele: list[dict]) -> dict:
    acc: dict = {}
    for t in tele:
        for uuid, g in (t.get("gpus") or {}).items():
            per = acc.setdefault(uuid, {})
            for k, v in g.items():
                if v is not None:
                    per.setdefault(k, []).append(v)
    return {u: {k: (float(sum(v)) if k == "energy_j" else _mean_max(v)) for k, v in g.items()}
            for u, g in acc.items()}


def _gpu_values(tele: dict, key: str, stat: str) -> list[float]:
    found = [g.get(key) for g in (tele.get("gpus") or {}).values() if isinstance(g, dict)]
    return [float(v[stat]) for v in found if isinstance(v, dict) and v.get(stat) is not None]


def energy_unavailable(tele: dict | None) -> str:
    """Why a point has no energy per inference ("" when it has one)."""
    if not tele:
        return "no telemetry (the server's metrics endpoint could not be read)"
    if tele.get("energy_j_per_infer") is not None:
        return ""
    if not tele.get("gpus"):
        return "the metrics endpoint shows no GPU (a CPU host, or GPU metrics turned off)"
    if tele.get("energy_j") is None:
        return "no nv_energy_consumption reading at both ends of a window"
    if not tele.get("inference_count"):
        return "no inferences counted (nv_inference_count) in the windows"
    if sum(_gpu_values(tele, "power_w", "mean")) > 0:
        return "nv_energy_consumption did not advance while the GPU drew power (its driver reports no energy)"
    return "no energy counted in the windows"


def gpu_point_metrics(tele: dict | None) -> dict:
    """A point's GPU figures, all GPUs together; each None where not available.

    gpu_utilization (0..1, mean over GPUs of their window means), memory_used_mib
    (the most any GPU used), power_w (sum over GPUs of their mean power),
    energy_j_per_infer, and energy_unavailable (why not, "" when available).
    """
    tele = tele or {}
    util = _gpu_values(tele, "utilization", "mean")
    mem = _gpu_values(tele, "memory_used_bytes", "max")
    power = _gpu_values(tele, "power_w", "mean")
    return {
        "gpu_count": len(tele.get("gpus") or {}),
        "gpu_utilization": float(np.mean(util)) if util else None,
        "memory_used_mib": max(mem) / MIB if mem else None,
        "power_w": float(sum(power)) if power else None,
        "energy_j_per_infer": tele.get("energy_j_per_infer"),
        "energy_unavailable": energy_unavailable(tele or None),
    }
