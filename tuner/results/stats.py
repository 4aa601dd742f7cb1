"""Statistics over stored samples: pure functions, no I/O, no server.

A load point is a list of windows, each with its raw latencies; every number
a report shows (throughput, percentiles, server breakdown, stability) is
computed here from those samples, so it can be recomputed at any time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass
class ServerDelta:
    """Server statistics-API counters over one window (deltas)."""

    success_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    inference_count: int = 0
    execution_count: int = 0
    # batch size -> (executions, compute_infer ns) seen in the window
    batch_compute_infer: dict[int, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_compute_infer"] = {str(k): list(v) for k, v in self.batch_compute_infer.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "ServerDelta | None":
        if d is None:
            return None
        d = dict(d)
        d["batch_compute_infer"] = {int(k): tuple(v) for k, v in d.get("batch_compute_infer", {}).items()}
        return cls(**d)


@dataclass
class WindowSample:
    """One measurement window of one load point: its raw samples.

    Optional parts (absent in records written before they existed):
    - first_response_us / responses: decoupled models over the stream; time to
      the first response of each request (parallel to latencies_us, which then
      is the time to the final response) and the responses received;
    - client: the load generator's self-check over the window (see CLIENT_KEYS);
    - telemetry: the server's Prometheus metrics at the window's end (gauges)
      and over it (counter deltas), None where not available.
    """

    start_s: float
    duration_s: float
    latencies_us: list[int]
    errors: int = 0
    server: ServerDelta | None = None
    first_response_us: list[int] | None = None
    responses: int | None = None
    client: dict | None = None
    telemetry: dict | None = None
    # load from a Ray cluster (distributed.py): who produced the window, and workers
    # lost during it (such a window is failed: left out of stability and summaries)
    workers: list[dict] | None = None
    failed_workers: list[str] | None = None

    @property
    def failed(self) -> bool:
        return bool(self.failed_workers)

    @property
    def completed(self) -> int:
        return len(self.latencies_us)

    @property
    def throughput(self) -> float:
        return self.completed / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict:
        d = {
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "errors": self.errors,
            "latencies_us": list(self.latencies_us),
            "server": self.server.to_dict() if self.server else None,
        }
        if self.first_response_us is not None:
            d["first_response_us"] = list(self.first_response_us)
        if self.responses is not None:
            d["responses"] = self.responses
        if self.client is not None:
            d["client"] = self.client
        if self.telemetry is not None:
            d["telemetry"] = self.telemetry
        if self.workers is not None:
            d["workers"] = self.workers
        if self.failed_workers is not None:
            d["failed_workers"] = self.failed_workers
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WindowSample":
        first = d.get("first_response_us")
        return cls(
            start_s=float(d["start_s"]),
            duration_s=float(d["duration_s"]),
            latencies_us=[int(x) for x in d["latencies_us"]],
            errors=int(d.get("errors", 0)),
            server=ServerDelta.from_dict(d.get("server")),
            first_response_us=[int(x) for x in first] if first is not None else None,
            responses=int(d["responses"]) if d.get("responses") is not None else None,
            client=d.get("client"),
            telemetry=d.get("telemetry"),
            workers=d.get("workers"),
            failed_workers=d.get("failed_workers"),
        )


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
    return PointSummary(
        throughput_infer_per_s=completed / duration if duration > 0 else 0.0,
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
    )


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
    )


# Keys of WindowSample.client, the load generator's self-check over a window.
#   mode            "concurrency" (closed loop) or "rate" (open loop)
#   arrivals        "closed", "constant" or "poisson"
#   target          concurrency, or requests/s
#   achieved        concurrency: mean requests in flight (Little's law: sum of
#                   latencies / window); rate: requests sent per second
#   scheduled       rate: sends due in the window by the schedule
#   sent            requests sent in the window
#   late_sends      rate: sends more than LATE_SEND_MS behind their schedule
#   late_p99_ms     rate: p99 of how late sends went out
#   capped_sends    rate: sends that waited because max_inflight requests were outstanding
#   inflight        requests outstanding at the window's end
#   loop_lag_p99_ms, loop_lag_max_ms   event-loop oversleep of a 50 ms ticker
#   cpu_s           client CPU seconds over the window, all load processes
#   cpu_util_max    the busiest load process's CPU / wall time (1.0 = one core)
#   checked         responses fully parsed (the rest: byte length vs a checked one)
#   workers         load processes
_SUM_KEYS = ("target", "achieved", "scheduled", "sent", "late_sends", "capped_sends", "inflight",
             "cpu_s", "checked", "workers")
_MAX_KEYS = ("late_p99_ms", "loop_lag_p99_ms", "loop_lag_max_ms", "cpu_util_max")

LATE_SEND_MS = 2.0        # a send this late counts as late
LATE_FRACTION = 0.05      # more late sends than this: the generator is behind
RATE_TOLERANCE = 0.98     # achieved / target below this: the target is not held
LOOP_LAG_LIMIT_MS = 10.0  # event loop this late (p99): the generator is saturated
CPU_UTIL_LIMIT = 0.95     # a load process this busy (of one core): the generator is saturated
CONCURRENCY_TOLERANCE = 0.9


def merge_client(parts: list[dict | None]) -> dict | None:
    present = [p for p in parts if p]
    if not present:
        return None
    out = {"mode": present[0].get("mode"), "arrivals": present[0].get("arrivals")}
    for k in _SUM_KEYS:
        vals = [p.get(k) for p in present if p.get(k) is not None]
        out[k] = sum(vals) if vals else None
    for k in _MAX_KEYS:
        vals = [p.get(k) for p in present if p.get(k) is not None]
        out[k] = max(vals) if vals else None
    return out


def _client_total(clients: list[dict], key: str):
    vals = [c.get(key) for c in clients if c.get(key) is not None]
    return sum(vals) if vals else None


def _client_peak(clients: list[dict], key: str):
    vals = [c.get(key) for c in clients if c.get(key) is not None]
    return max(vals) if vals else None


def _client_totals(clients: list[dict], duration_s: float, completed: int) -> dict:
    """The windows' self-checks combined: counts summed, lags and utilisation at their worst."""
    mode = clients[0].get("mode")
    n = len(clients)
    target = (_client_total(clients, "target") or 0.0) / n
    sent = _client_total(clients, "sent") or 0
    cpu_s = _client_total(clients, "cpu_s")
    return {
        "mode": mode,
        "arrivals": clients[0].get("arrivals"),
        "target": target,
        "achieved": (sent / duration_s) if mode == "rate" else (_client_total(clients, "achieved") or 0.0) / n,
        "completed_per_s": completed / duration_s,
        "sent": sent,
        "late_sends": _client_total(clients, "late_sends"),
        "capped_sends": _client_total(clients, "capped_sends"),
        "late_p99_ms": _client_peak(clients, "late_p99_ms"),
        "loop_lag_p99_ms": _client_peak(clients, "loop_lag_p99_ms"),
        "loop_lag_max_ms": _client_peak(clients, "loop_lag_max_ms"),
        "cpu_s": cpu_s,
        "cpu_us_per_req": (cpu_s / completed * 1e6) if cpu_s is not None and completed else None,
        "cpu_util_max": _client_peak(clients, "cpu_util_max"),
        "checked": _client_total(clients, "checked"),
        "workers": max(c.get("workers") or 1 for c in clients),
    }


def _saturation_reasons(totals: dict) -> list[str]:
    """Signs, in any mode, that the generator itself ran out of time or CPU."""
    reasons: list[str] = []
    lag_ms = totals["loop_lag_p99_ms"]
    if lag_ms is not None and lag_ms > LOOP_LAG_LIMIT_MS:
        reasons.append(f"event loop lag p99 {lag_ms:.1f} ms > {LOOP_LAG_LIMIT_MS:g} ms")
    util = totals["cpu_util_max"]
    if util is not None and util > CPU_UTIL_LIMIT:
        reasons.append(f"a load process used {util:.0%} of a core")
    return reasons


def _open_loop_verdict(totals: dict, scheduled: int, answered: int, reasons: list[str]) -> tuple[list[str], str]:
    """(further client-side reasons, server-side reason) for a point offered at a request rate.

    `reasons`: those already found; the server is blamed only when the generator is not.
    """
    sent, target = totals["sent"], totals["target"]
    late = totals["late_sends"] or 0
    capped = totals["capped_sends"] or 0
    if capped:
        return [], (f"{capped} sends waited for the in-flight limit: the server completed "
                    f"{totals['completed_per_s']:.0f}/s of {target:.0f}/s offered")
    more: list[str] = []
    if scheduled and sent < RATE_TOLERANCE * scheduled:
        more.append(f"sent {sent} of {scheduled} scheduled requests ({totals['achieved']:.0f}/s of {target:.0f}/s)")
    if sent and late / sent > LATE_FRACTION:
        more.append(f"{late / sent:.0%} of sends were > {LATE_SEND_MS:g} ms late")
    if not reasons and not more and sent and answered < RATE_TOLERANCE * sent:
        return more, (f"requests went out on time but the server completed {totals['completed_per_s']:.0f}/s "
                      f"of {totals['achieved']:.0f}/s sent")
    return more, ""


def client_summary(windows: list[WindowSample]) -> dict | None:
    """The self-check over a point's windows, and its verdict.

    bound: "client" when the generator could not produce the load it was asked
    for (late or missing sends, a saturated event loop or process), "server"
    (open loop only) when requests went out on time but the server did not
    complete them at the offered rate, None when neither.
    """
    with_client = [w for w in windows if w.client]
    clients = [w.client for w in with_client]
    if not clients:
        return None
    duration_s = sum(w.duration_s for w in with_client) or float("nan")
    completed = sum(w.completed for w in with_client)
    errors = sum(w.errors for w in with_client)
    out = _client_totals(clients, duration_s, completed)
    reasons = _saturation_reasons(out)
    server_reason = ""
    if out["mode"] == "rate":
        more, server_reason = _open_loop_verdict(out, _client_total(clients, "scheduled") or 0,
                                                 completed + errors, reasons)
        reasons += more
    elif out["mode"] == "concurrency" and not errors and out["target"] > 0:
        achieved = out["achieved"]
        if achieved < CONCURRENCY_TOLERANCE * out["target"]:
            reasons.append(f"{achieved:.1f} of {out['target']:g} requests in flight on average")
    out["bound"] = "client" if reasons else ("server" if server_reason else None)
    out["client_bound"] = bool(reasons)
    out["reason"] = "; ".join(reasons) or server_reason
    return out


def telemetry_summary(windows: list[WindowSample]) -> dict | None:
    """Server telemetry over the windows: gauges' mean and max, counters' sums.

    Keys are those of `telemetry.window_telemetry`; a key none of the windows
    had is absent (not available), never an error.
    """
    tele = [w.telemetry for w in windows if w.telemetry]
    if not tele:
        return None
    out: dict = {}
    for key in ("cpu_utilization", "cpu_memory_used_bytes", "pending_requests"):
        vals = [t[key] for t in tele if t.get(key) is not None]
        if vals:
            out[key] = {"mean": float(np.mean(vals)), "max": float(max(vals))}
    for key in ("request_success", "request_failure"):
        vals = [t[key] for t in tele if t.get(key) is not None]
        if vals:
            out[key] = float(sum(vals))
    gpus: dict = {}
    for t in tele:
        for uuid, g in (t.get("gpus") or {}).items():
            acc = gpus.setdefault(uuid, {})
            for k, v in g.items():
                if v is not None:
                    acc.setdefault(k, []).append(v)
    if gpus:
        out["gpus"] = {u: {k: {"mean": float(np.mean(v)), "max": float(max(v))} for k, v in g.items()}
                       for u, g in gpus.items()}
    return out or None
