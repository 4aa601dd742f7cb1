"""The load generator's self-check: was the client, not the server, the limit?

Each window carries the generator's own record of itself (`WindowSample.client`,
keys below); `client_summary` combines a point's windows and gives the verdict:
"client" when the generator could not produce the load asked for (late or
missing sends, a saturated event loop or process, too few requests in flight,
sends late enough to be part of the measured latency), "server" (open loop)
when requests went out on time but the server did not complete them at the
offered rate, None when neither.
"""

from __future__ import annotations

import numpy as np

from tuner.results.samples import WindowSample


# Keys of WindowSample.client, the load generator's self-check over a window.
#   mode            "concurrency" (closed loop) or "rate" (open loop)
#   arrivals        "closed", "constant" or "poisson"
#   target          concurrency, or requests/s
#   achieved        concurrency: mean requests in flight (Little's law: sum of
#                   latencies / window); rate: requests sent per second
#   scheduled       rate: sends due in the window by the schedule
#   sent            requests sent in the window
#   late_sends      rate: sends more than LATE_SEND_MS behind their schedule
#   late_p50_ms, late_p99_ms, late_max_ms   rate: how late sends went out (schedule -> send)
#   capped_sends    rate: sends that waited because max_inflight requests were outstanding
#   inflight        requests outstanding at the window's end
#   loop_lag_p99_ms, loop_lag_max_ms   event-loop oversleep of a 50 ms ticker
#   cpu_s           client CPU seconds over the window, all load processes
#   cpu_util_max    the busiest load process's CPU / wall time (1.0 = one core)
#   checked         responses fully parsed (the rest: byte length vs a checked one)
#   workers         load processes
_SUM_KEYS = ("target", "achieved", "scheduled", "sent", "late_sends", "capped_sends", "inflight",
             "cpu_s", "checked", "workers")
_MAX_KEYS = ("late_p50_ms", "late_p99_ms", "late_max_ms", "loop_lag_p99_ms", "loop_lag_max_ms", "cpu_util_max")

LATE_SEND_MS = 2.0        # a send this late counts as late
LATE_FRACTION = 0.05      # more late sends than this: the generator is behind
RATE_TOLERANCE = 0.98     # achieved / target below this: the target is not held
LOOP_LAG_LIMIT_MS = 10.0  # event loop this late (p99): the generator is saturated
CPU_UTIL_LIMIT = 0.95     # a load process this busy (of one core): the generator is saturated
CONCURRENCY_TOLERANCE = 0.9
# open loop: sends this late (p99) against the measured p99 latency make the latency the
# client's as much as the server's, so the point is flagged (a user must not read a client
# stall as server latency)
LATENESS_SHARE_LIMIT = 0.10
# ... unless it is below this: wake-up granularity of a loaded small host, less than a p99's
# run-to-run noise at the latencies where it could matter
LATENESS_FLOOR_MS = 0.25
LATENESS_TAIL_SAMPLES = 10  # requests beyond the quantile a window's lateness is judged at


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
        "late_p50_ms": _client_peak(clients, "late_p50_ms"),
        "late_p99_ms": _client_peak(clients, "late_p99_ms"),
        "late_max_ms": _client_peak(clients, "late_max_ms"),
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


def _open_loop_verdict(totals: dict, scheduled: int, answered: int, reasons: list[str],
                       windows: list[WindowSample]) -> tuple[list[str], str]:
    """(further client-side reasons, server-side reason) for a point offered at a request rate.

    `reasons`: those already found; the server is blamed only when the generator is not.
    Sends held back by the in-flight limit are the server's doing, not lateness.
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
    more += _lateness_reasons(windows)
    if not reasons and not more and sent and answered < RATE_TOLERANCE * sent:
        return more, (f"requests went out on time but the server completed {totals['completed_per_s']:.0f}/s "
                      f"of {totals['achieved']:.0f}/s sent")
    return more, ""


def late_window(w: WindowSample) -> bool:
    """An open-loop window whose sends were late enough to be a real part of its tail latency.

    Judged at p99, or at the highest quantile with at least LATENESS_TAIL_SAMPLES requests
    beyond it when the window is short (a p99 of 80 requests is one request's luck), and
    not at all below 2 * LATENESS_TAIL_SAMPLES requests."""
    n = len(w.latencies_us)
    if not w.send_latencies_us or len(w.send_latencies_us) != n or n < 2 * LATENESS_TAIL_SAMPLES:
        return False
    q = min(99.0, 100.0 * (1.0 - LATENESS_TAIL_SAMPLES / n))
    sched = np.asarray(w.latencies_us, dtype=np.float64)
    late = sched - np.asarray(w.send_latencies_us, dtype=np.float64)
    late_ms = float(np.percentile(late, q)) / 1000.0
    return late_ms > max(LATENESS_FLOOR_MS, LATENESS_SHARE_LIMIT * float(np.percentile(sched, q)) / 1000.0)


def _lateness_reasons(windows: list[WindowSample]) -> list[str]:
    late = sum(1 for w in windows if late_window(w))
    if not late:
        return []
    return [f"in {late} of {len(windows)} windows the tail (p99) send lateness was > {LATENESS_SHARE_LIMIT:.0%} of "
            f"the tail latency and > {LATENESS_FLOOR_MS:g} ms (the client's delay, not the server's: see the send "
            "columns)"]


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
                                                 completed + errors, reasons, with_client)
        reasons += more
    elif out["mode"] == "concurrency" and not errors and out["target"] > 0:
        achieved = out["achieved"]
        if achieved < CONCURRENCY_TOLERANCE * out["target"]:
            reasons.append(f"{achieved:.1f} of {out['target']:g} requests in flight on average")
    out["bound"] = "client" if reasons else ("server" if server_reason else None)
    out["client_bound"] = bool(reasons)
    out["reason"] = "; ".join(reasons) or server_reason
    return out
