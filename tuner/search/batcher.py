"""A deterministic simulation of Triton's dynamic batcher under closed-loop load.

Given one execution's cost per batch size (`costs.CostTable`), the time a request spends
outside the server (client, network: `costs.overhead_ms`) and a candidate config, it plays
`concurrency` clients against `instance_count` instances and returns the steady state:
throughput, latency distribution and the batch sizes formed. The search uses it to say
what an unmeasured candidate (another queue delay, max_batch_size, preferred sizes or
instance count) would do, before measuring it.

The batcher's rules, as Triton documents them:
  * without dynamic batching every request runs alone;
  * with it, a free instance takes max_batch_size requests (or the largest preferred
    size) as soon as that many wait; otherwise it waits for the oldest request to have
    waited max_queue_delay, then takes what is there (up to max_batch_size);
  * a response reaches its client, which sends the next request; that request reaches
    the queue `overhead_ms` after the execution ended. A client handles the responses of
    one batch one after another (`spacing_ms` each), so they come back spread out, not
    as one block: with no queue delay the batcher then takes the first of them alone,
    as the real one does.

Two properties of the server are parameters, fitted to measured points by `model.py`:
`gap_ms`, the time an instance stays busy after each execution beyond its reported
compute (the backend's own handling), and `overlap`, for instances that share one device:
the share of an execution that runs alongside the others, the rest (1 - overlap) holding
the device alone, in turn (1.0: no sharing, each instance as fast as one alone).

Costs are deterministic (their means), so the result is exact for the model and
cheap: events are whole batches and groups of requests that arrived together, not
single requests. Noise and tails are the caller's business (`model.py` calibrates
against measured points).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tuner.config import CandidateSpec


@dataclass(frozen=True)
class SimPoint:
    concurrency: int
    infer_per_s: float
    mean_ms: float
    latency_ms: dict[str, float]  # "p50", "p90", "p95", "p99" of the simulated steady state
    mean_batch: float


QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


def _quantiles(samples: list[tuple[float, int]]) -> dict[str, float]:
    samples.sort()
    total = sum(k for _, k in samples)
    out: dict[str, float] = {}
    for name, q in QUANTILES.items():
        need, run = q * total, 0
        for lat, k in samples:
            run += k
            if run >= need:
                out[name] = lat
                break
    return out


class _Batcher:
    """One simulation run (see the module docstring)."""

    PIECES = 16  # a returning batch comes back as up to this many groups, spacing_ms per request apart

    def __init__(self, cost_ms: Callable[[int], float], spec: CandidateSpec, overhead_ms: float,
                 spacing_ms: float, gap_ms: float = 0.0, overlap: float = 1.0):
        db = spec.dynamic_batching
        self.cost_ms = cost_ms
        self.mbs = max(1, spec.max_batch_size) if db else 1
        pref = [p for p in spec.preferred_batch_size if p <= self.mbs] if db else []
        self.target = max(pref) if pref else self.mbs
        self.delay_ms = spec.max_queue_delay_us / 1000.0 if db else 0.0
        self.instances = max(1, spec.instance_count)
        self.overhead_ms = max(0.0, overhead_ms)
        self.spacing_ms = max(0.0, spacing_ms)
        self.gap_ms = max(0.0, gap_ms)
        self.overlap = min(1.0, max(0.0, overlap))
        self.device_free = 0.0
        self.queue: deque[list] = deque()  # [arrived at, requests]
        self.waiting = 0
        self.arrivals: list[tuple[float, int]] = []  # heap: (reaches the queue at, requests)

    def _absorb(self, t: float) -> None:
        while self.arrivals and self.arrivals[0][0] <= t + 1e-12:
            at, k = heapq.heappop(self.arrivals)
            if self.queue and self.queue[-1][0] == at:
                self.queue[-1][1] += k
            else:
                self.queue.append([at, k])
            self.waiting += k

    def _take(self, n: int) -> list[tuple[float, int]]:
        out = []
        while n > 0:
            head = self.queue[0]
            k = min(n, head[1])
            out.append((head[0], k))
            head[1] -= k
            n -= k
            if head[1] == 0:
                self.queue.popleft()
        self.waiting -= sum(k for _, k in out)
        return out

    def _execute(self, t: float, cost: float) -> float:
        """How long an execution started at t takes: its exclusive part waits for the device."""
        if self.overlap >= 1.0 or self.instances == 1:
            return cost
        start = max(t + cost * self.overlap, self.device_free)
        self.device_free = start + cost * (1.0 - self.overlap)
        return self.device_free - t

    def _return(self, t: float, size: int) -> None:
        pieces = min(size, self.PIECES) if self.spacing_ms > 0 else 1
        base, extra = divmod(size, pieces)
        at = t
        for j in range(pieces):
            k = base + (1 if j < extra else 0)
            heapq.heappush(self.arrivals, (at, k))
            at += k * self.spacing_ms

    def _ready_at(self, t: float) -> float | None:
        """When the batcher would hand a batch to a free instance at or after t (None: now)."""
        if self.waiting >= self.target or self.delay_ms <= 0:
            return None
        due = self.queue[0][0] + self.delay_ms
        return None if t >= due - 1e-12 else due

    def run(self, concurrency: int, executions: int, warm: int) -> SimPoint:
        free = [0.0] * self.instances
        heapq.heappush(self.arrivals, (0.0, concurrency))
        t, n_exec, t_warm, items, samples = 0.0, 0, None, 0, []
        while n_exec < executions + warm:
            if not self.waiting:
                if not self.arrivals:
                    break
                t = max(t, self.arrivals[0][0])
                self._absorb(t)
                continue
            i = min(range(self.instances), key=free.__getitem__)
            t = max(t, free[i])
            self._absorb(t)
            due = self._ready_at(t)
            if due is not None:
                nxt = self.arrivals[0][0] if self.arrivals else math.inf
                t = min(due, nxt)
                self._absorb(t)
                continue
            size = min(self.waiting, self.target if self.waiting >= self.target else self.mbs)
            batch = self._take(size)
            cost = self._execute(t, self.cost_ms(size))
            free[i] = t + cost + self.gap_ms
            self._return(t + cost + self.gap_ms + self.overhead_ms, size)
            n_exec += 1
            if n_exec == warm:
                t_warm = t
            elif n_exec > warm:
                items += size
                samples.extend((t - at + cost + self.gap_ms + self.overhead_ms, k) for at, k in batch)
        span = (t - t_warm) if t_warm is not None else 0.0
        if span <= 0 or not samples:
            return SimPoint(concurrency, 0.0, math.inf, {k: math.inf for k in QUANTILES}, 0.0)
        n = sum(k for _, k in samples)
        mean = sum(lat * k for lat, k in samples) / n
        return SimPoint(concurrency, items / span * 1000.0, mean, _quantiles(samples), items / executions)


def simulate(cost_ms: Callable[[int], float], spec: CandidateSpec, concurrency: int, overhead_ms: float,
             spacing_ms: float = 0.1, gap_ms: float = 0.0, overlap: float = 1.0, executions: int = 48,
             warm: int = 16) -> SimPoint:
    """The steady state of `concurrency` closed-loop clients against the candidate."""
    return _Batcher(cost_ms, spec, overhead_ms, spacing_ms, gap_ms, overlap).run(max(1, int(concurrency)),
                                                                               executions, warm)
