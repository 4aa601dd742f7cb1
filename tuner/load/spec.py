"""What load to offer and how: settings, closed or open loop, each process's share, and a point's raw samples."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from tuner.errors import LoadError
from tuner.load.request import RequestPlan
from tuner.server.connection import Connection
from tuner.load.schedule import ARRIVALS  # noqa: F401 - the load's names are read from here
from tuner.load.traffic import Traffic
from tuner.results.samples import WindowSample

@dataclass
class LoadSettings:
    warmup_s: float = 1.0
    window_s: float = 2.0
    min_windows: int = 3
    max_windows: int = 8
    stability_pct: float = 10.0
    request_timeout_s: float = 30.0
    workers: int = 0  # load processes; 0 = automatic (`auto_workers`); with ray_address: Ray actors, 0 = one per node
    # load from Ray actors (raypool.py): "auto" (RAY_ADDRESS or a local Ray) or "ray://HOST:PORT"; None = local
    ray_address: str | None = None
    check_every: int = 16  # fully parse one response in N (the rest: byte length check)
    transport: str = "auto"  # "unary" | "stream" | "http" | "auto" (see `pick_transport`)
    max_inflight: int = 0  # open loop: outstanding requests before sends wait; 0 = half a second's worth
    drain_s: float = 10.0  # open loop: wait this long for outstanding requests at a point's end


@dataclass(frozen=True)
class LoadSpec:
    """What load to offer: N requests in flight, or a request rate."""

    concurrency: int = 0
    rate: float = 0.0  # requests/s; > 0 means open loop (with `traffic`: its mean rate)
    arrivals: str = "closed"  # "closed" | "constant" | "poisson" | "intervals"
    traffic: Traffic | None = None  # open loop: a replayed intervals file, a step or ramp schedule

    @property
    def mode(self) -> str:
        return "rate" if self.rate > 0 else "concurrency"

    @property
    def label(self) -> str:
        """How sends are timed: "closed", "constant", "poisson", "intervals", "step ..." or "ramp ..."."""
        if self.traffic is not None and self.traffic.kind in ("step", "ramp"):
            return f"{self.traffic.kind} {self.arrivals}"
        return self.arrivals

    def share(self, i: int, n: int, seed: int = 0) -> "LoadShare":
        """Process i's part of the load when n processes offer it together."""
        if self.rate > 0:
            # constant: the processes interleave (process i sends at i/R, i/R + n/R, ...);
            # poisson: n independent Poisson processes of rate R/n merge into one of rate R;
            # traffic: process i takes sends i, i + n, ... of the one global schedule.
            return LoadShare(self, 0, self.rate / n, int(i * 1e9 / self.rate), seed * 1000 + i, i, n)
        base, extra = divmod(self.concurrency, n)
        return LoadShare(self, base + (1 if i < extra else 0), 0.0, 0, seed * 1000 + i, i, n)


@dataclass(frozen=True)
class LoadShare:
    spec: LoadSpec
    concurrency: int
    rate: float
    offset_ns: int
    seed: int
    index: int = 0  # this process, of `of` processes
    of: int = 1


TRANSPORTS = ("auto", "unary", "stream", "http")
STREAM_MAX_CONCURRENCY = 2
PER_PROCESS_CONCURRENCY = 64  # automatic workers: one load process per this many in flight
PER_PROCESS_RATE = 8000.0  # ... or per this many requests/s
STREAM_MAX_RATE = 2500.0  # "auto" transport: open loops up to this rate go over a stream
SPIN_LEAD_NS = 150_000  # open loop up to SPIN_MAX_RATE: wake this early and yield until the send time
SPIN_MAX_RATE = 1000.0


def pick_transport(plan: RequestPlan, settings: LoadSettings, share: "LoadShare",
                   connection: "Connection | None" = None) -> str:
    """The wire a load point's requests go over: "unary" gRPC calls, the gRPC "stream", or "http".

    Decoupled models: always the stream (only it carries several responses).
    Sequence models: unary calls (one request in flight per sequence keeps its order, load/sequence.py).
    Otherwise as set; "http" needs the server's HTTP endpoint (`Connection.http_url`) and no TLS.
    "auto" is HTTP whenever the endpoint is known (the embedded server's
    always is): a Python gRPC client pays ~0.2 ms of CPU per message at a
    fixed rate, which showed as latency (0.15-0.25 ms at p50 at 2000/s on 2
    cores) and as late sends, and in a closed loop it capped a near-zero-cost
    model at 0.6-0.75x of what HTTP reached (load/http.py has the figures).
    Without the endpoint: the stream for a closed loop of at most STREAM_MAX_CONCURRENCY requests in flight or an
    open loop of at most STREAM_MAX_RATE requests/s per process (a stream
    skips the per-call HTTP/2 stream set-up: ~0.1 ms less per request),
    unary calls above (one stream tops out near 10k requests/s and costs
    more client CPU per request there).
    """
    if settings.transport not in TRANSPORTS:
        raise LoadError(f"transport '{settings.transport}' is not supported; use {', '.join(TRANSPORTS)}")
    if plan.decoupled:
        return "stream"
    if plan.sequence is not None:
        return "unary"
    http_ok = connection is not None and bool(connection.http_url) and not connection.uses_tls
    if settings.transport == "http":
        if not http_ok:
            why = "TLS is only supported over gRPC" if connection is not None and connection.uses_tls else \
                "the server's HTTP endpoint is not known"
            raise LoadError(f"transport 'http': {why}; pass --http-url HOST:PORT (Triton's HTTP port, 8000 by "
                            "default) or use --transport auto")
        return "http"
    if settings.transport == "auto":
        if http_ok:
            return "http"
        if share.rate > 0:
            return "stream" if share.rate <= STREAM_MAX_RATE else "unary"
        return "stream" if 0 < share.concurrency <= STREAM_MAX_CONCURRENCY else "unary"
    return settings.transport


def max_inflight(settings: LoadSettings, rate: float) -> int:
    """Open loop: requests outstanding before sends wait (the server is saturated then)."""
    if settings.max_inflight and settings.max_inflight > 0:
        return settings.max_inflight
    return max(256, int(rate * 0.5))


def auto_workers(spec: LoadSpec, cores: int | None = None) -> int:
    """Load processes for a load point: enough that none is the bottleneck.

    At most half the cores (the rest for the server when it shares the host,
    and for the OS); one process per PER_PROCESS_CONCURRENCY requests in
    flight or PER_PROCESS_RATE requests/s. On a 2-core host: 1.
    """
    cores = cores or os.cpu_count() or 1
    budget = max(1, cores // 2)
    if spec.rate > 0:
        need = math.ceil(spec.rate / PER_PROCESS_RATE)
    else:
        need = math.ceil(max(1, spec.concurrency) / PER_PROCESS_CONCURRENCY)
    return max(1, min(budget, need, 16))


def resolve_workers(spec: LoadSpec, settings: LoadSettings) -> int:
    n = settings.workers if settings.workers and settings.workers > 0 else auto_workers(spec)
    if spec.rate <= 0:
        n = min(n, max(1, spec.concurrency))
    return max(1, n)


@dataclass
class PointSamples:
    """Raw result of one load point: every window's samples."""

    concurrency: int  # closed loop; 0 for an open-loop (request-rate) point
    windows: list[WindowSample] = field(default_factory=list)
    stable: bool = False
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    request_rate: float | None = None  # open loop: target requests/s
    arrivals: str = "closed"
    workers: int = 1
    # several load processes: each process's own windows (merged into `windows`)
    worker_windows: list[list[WindowSample]] | None = None
