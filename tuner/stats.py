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
    start_s: float
    duration_s: float
    latencies_us: list[int]
    errors: int = 0
    server: ServerDelta | None = None

    @property
    def completed(self) -> int:
        return len(self.latencies_us)

    @property
    def throughput(self) -> float:
        return self.completed / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "errors": self.errors,
            "latencies_us": list(self.latencies_us),
            "server": self.server.to_dict() if self.server else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "WindowSample":
        return cls(
            start_s=float(d["start_s"]),
            duration_s=float(d["duration_s"]),
            latencies_us=[int(x) for x in d["latencies_us"]],
            errors=int(d.get("errors", 0)),
            server=ServerDelta.from_dict(d.get("server")),
        )


def is_stable(windows: list[WindowSample], tolerance_pct: float) -> bool:
    """Throughput and mean latency of the windows agree within the tolerance.

    The same rule perf_analyzer applies to its last three windows.
    """
    if not windows or any(w.completed == 0 for w in windows):
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
    """Summary over the last `last` windows (the ones the stability rule judged)."""
    used = windows[-last:] if last > 0 else windows
    lats = np.fromiter((x for w in used for x in w.latencies_us), dtype=np.float64)
    duration = sum(w.duration_s for w in used)
    completed = int(lats.size)
    delta = merge_server([w.server for w in used])
    avg_batch = None
    if delta is not None and delta.execution_count > 0:
        avg_batch = delta.inference_count / delta.execution_count
    return PointSummary(
        throughput_infer_per_s=completed / duration if duration > 0 else 0.0,
        latency_ms=percentiles_ms(lats),
        errors=sum(w.errors for w in used),
        completed=completed,
        duration_s=duration,
        server_ms=server_breakdown_ms(delta),
        avg_batch_size=avg_batch,
    )
