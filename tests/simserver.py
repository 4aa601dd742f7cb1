"""A simulated Triton for the search tests (pure, fast): a discrete-event model of
Triton's dynamic batcher in front of the synthetic model (a fixed cost per execution + a
cost per batched item, noise and rare stalls, the surfaces' effects) under closed-loop load
from one load process; a load point becomes a `Measurement` with windows of raw latencies
and server statistics deltas (`batch_compute_infer` included), as the sweep stores them.
"""

from __future__ import annotations

import heapq
import zlib
from collections import deque

import numpy as np

from tuner.config import CandidateSpec
from tuner.profile import parse_profile
from tuner.search.recommend import recommend
from tuner.results.records import CandidateRecord, Measurement
from tuner.results.store import RunResults
from tuner.search.base import BASELINE, Step
from tuner.search.strategy import make_strategy
from tuner.search.surfaces import SURFACES, Surface
from tuner.results.stats import ServerDelta, WindowSample


class SimServer:
    """Closed-loop load on a simulated Triton: a dynamic batcher (max batch size, queue
    delay, preferred sizes) in front of `instance_count` instances that each take
    fixed_ms + per_item_ms * batch per execution (compute_infer), plus dispatch overhead,
    with noise and rare stalls; one load process spends client_ms per send and receive."""

    def __init__(self, fixed_ms=2.4, per_item_ms=0.53, net_ms=0.35, noise=0.05, stall_p=0.01, stall_ms=8.0,
                 contention=0.04, exec_overhead_ms=0.2, client_ms=0.1, warmup_s=0.2, window_s=0.4, windows=3,
                 seed=0, host_stall_p=0.0, surface: Surface | None = None):
        self.fixed_ms, self.per_item_ms, self.net_ms, self.noise = fixed_ms, per_item_ms, net_ms, noise
        self.surface = surface  # a cost model of the family (else fixed_ms + per_item_ms * batch)
        self.stall_p, self.stall_ms, self.contention = stall_p, stall_ms, contention
        self.exec_overhead_ms, self.client_ms = exec_overhead_ms, client_ms
        self.warmup_s, self.window_s, self.windows, self.seed = warmup_s, window_s, windows, seed
        self.host_stall_p = host_stall_p  # a point in which the whole host stalls once (a busy 2-core box)
        self.calls = 0
        self.measured_s = 0.0

    def measure(self, cid: str, spec: CandidateSpec, c: int) -> Measurement:
        self.calls += 1
        rng = np.random.default_rng(zlib.crc32(f"{self.seed}/{cid}/{c}".encode()))
        end_ms = (self.warmup_s + self.window_s * self.windows) * 1000.0
        stall_at = (float(rng.uniform(self.warmup_s, self.warmup_s + self.window_s * self.windows)) * 1000.0
                    if rng.random() < self.host_stall_p else None)
        mbs = max(1, spec.max_batch_size)
        target = min(mbs, max(spec.preferred_batch_size)) if spec.preferred_batch_size else mbs
        qd_ms = spec.max_queue_delay_us / 1000.0
        events: list = []
        seq = [0]

        def push(t, kind, data):
            seq[0] += 1
            heapq.heappush(events, (t, seq[0], kind, data))

        half = self.net_ms / 2
        client_free = 0.0
        for _ in range(c):
            client_free += self.client_ms
            push(client_free + half, "arrive", client_free)
        queue: deque = deque()
        state = {"free": spec.instance_count, "timer": None, "device": 0.0}
        done: list[tuple[float, float]] = []            # (received at, latency)
        execs: list[tuple[float, int, float, float]] = []  # (ends at, batch, compute, queue time summed)

        def dispatch(now):
            while state["free"] > 0 and queue:
                n = len(queue)
                if not spec.dynamic_batching:
                    size = 1
                elif n >= target:
                    size = target
                elif qd_ms <= 0 or now >= queue[0][0] + qd_ms - 1e-9:
                    size = min(n, mbs)
                else:
                    t = queue[0][0] + qd_ms
                    if state["timer"] is None or state["timer"] < now or state["timer"] > t + 1e-9:
                        state["timer"] = t
                        push(t, "timer", None)
                    return
                batch = [queue.popleft() for _ in range(size)]
                busy = spec.instance_count - state["free"]
                comp = self._cost(size, mbs, rng) * float(rng.lognormal(0.0, self.noise))
                comp *= 1.0 + self.contention * busy
                if rng.random() < self.stall_p:
                    comp += self.stall_ms * float(rng.random())
                if stall_at is not None and now <= stall_at < now + comp:
                    comp += 80.0  # everything in flight waits
                comp = self._device(now, comp, state)
                state["free"] -= 1
                execs.append((now + comp, size, comp, sum(now - a for a, _ in batch)))
                push(now + comp + self.exec_overhead_ms, "done", batch)

        while events:
            t, _, kind, data = heapq.heappop(events)
            if t > end_ms:
                break
            if kind == "arrive":
                queue.append((t, data))
            elif kind == "timer":
                if state["timer"] is not None and abs(state["timer"] - t) < 1e-9:
                    state["timer"] = None
            else:
                state["free"] += 1
                for _arrived, sent in data:
                    recv = max(t + half, client_free) + self.client_ms
                    done.append((recv, recv - sent))
                    client_free = recv + self.client_ms
                    push(client_free + half, "arrive", client_free)
            dispatch(t)

        windows = []
        w0 = self.warmup_s * 1000.0
        for w in range(self.windows):
            a, b = w0 + w * self.window_s * 1000.0, w0 + (w + 1) * self.window_s * 1000.0
            delta = ServerDelta()
            for end, size, comp, qsum in execs:
                if a <= end < b:
                    delta.execution_count += 1
                    delta.inference_count += size
                    delta.success_count += size
                    delta.compute_infer_ns += int(comp * 1e6) * size
                    delta.queue_ns += int(qsum * 1e6)
                    n0, ns0 = delta.batch_compute_infer.get(size, (0, 0))
                    delta.batch_compute_infer[size] = (n0 + 1, ns0 + int(comp * 1e6))
            windows.append(WindowSample(start_s=a / 1000.0, duration_s=self.window_s,
                                        latencies_us=[int(lat * 1000) for r, lat in done if a <= r < b],
                                        server=delta))
        self.measured_s += self.warmup_s + self.window_s * self.windows
        return Measurement(cid, c, windows, stable=True, summary_windows=self.windows)

    def _cost(self, size: int, mbs: int, rng) -> float:
        if self.surface is None:
            return self.fixed_ms + self.per_item_ms * size
        j = self.surface.jitter
        return self.surface.cost_ms(size, mbs) * (1.0 + (float(rng.uniform(-j, j)) if j else 0.0))

    def _device(self, now: float, comp: float, state: dict) -> float:
        """Instances sharing one device: the exclusive part of an execution waits its turn."""
        ov = self.surface.device_overlap if self.surface is not None else 1.0
        if ov >= 1.0:
            return comp
        start = max(now + comp * ov, state["device"])
        state["device"] = start + comp * (1.0 - ov)
        return state["device"] - now


SPACE = """
[model]
name = "synthetic"
[search]
max_batch_size = [1, 2, 4, 8, 16, 24, 32]
max_queue_delay_us = [0, 500, 2000]
preferred_batch_size = {preferred}
instance_count = {instances}
concurrency = [1, 2, 4, 8, 16, 32, 64]
strategy = "{strategy}"
[constraints]
latency_percentile = "p99"
latency_budget_ms = {budget}
{constraints}
[objective]
goal = "{goal}"
"""
BASE_SPEC = CandidateSpec(32, 0, (), 1, dynamic_batching=False)  # the synthetic model's original config


def space(strategy: str, *, budget: float = 40.0, instances=(1,), preferred='"none"', goal="max_throughput",
          constraints: str = "") -> str:
    return SPACE.format(strategy=strategy, budget=budget, instances=list(instances), preferred=preferred,
                        goal=goal, constraints=constraints)


class SimRun:
    """A sweep against the simulator, as `Sweep._measure_all` drives a strategy."""

    def __init__(self, text: str, seed: int = 0, stored: dict | None = None, stop_after: int | None = None,
                 fails=lambda spec: None, surface: Surface | None = None, base_spec: CandidateSpec = None):
        self.profile = parse_profile(text, "sim.toml")
        self.candidates = [(BASELINE, base_spec or BASE_SPEC)] + [(s.candidate_id, s)
                                                                  for s in self.profile.search.specs()]
        self.strategy = make_strategy(self.profile.search.strategy, self.profile, list(self.candidates))
        self.sim = SimServer(seed=seed, surface=surface)
        self.steps: list[Step] = []
        self.points: list[Measurement] = []
        measured = 0
        while (step := self.strategy.next_step()) is not None:
            self.steps.append(step)
            if step.kind != "measure":
                continue
            key = (step.candidate_id, step.concurrency)
            assert key not in {(m.candidate_id, m.concurrency) for m in self.points}, f"{key} asked twice"
            why = fails(step.spec)
            if why:  # the server refuses the config (sweep: the load API fails)
                self.strategy.observe_failed(step.candidate_id, why)
                continue
            if stored and key in stored:
                m = stored[key]
            else:
                if stop_after is not None and measured >= stop_after:
                    break  # killed
                m = self.sim.measure(step.candidate_id, step.spec, step.concurrency)
                measured += 1
            self.points.append(m)
            self.strategy.observe(m)
        self.measured = measured
        specs = dict(self.candidates)
        specs.update({s.candidate_id: s.spec for s in self.steps if s.spec is not None})  # refined ones too
        self.specs = specs
        status = {cid: "loaded" for cid in {m.candidate_id for m in self.points}}
        status.update({s.candidate_id: "skipped" for s in self.steps if s.kind == "skip"})
        reasons = {s.candidate_id: s.reason for s in self.steps if s.kind == "skip"}
        self.results = RunResults({}, {cid: CandidateRecord(spec, status.get(cid, "planned"), reasons.get(cid, ""),
                                                            is_baseline=cid == BASELINE)
                                       for cid, spec in specs.items()}, list(self.points))
        self.rec = recommend(self.results, self.profile.constraints, self.profile.goal)

    @property
    def best_throughput(self) -> float:
        return self.rec.best.throughput_infer_per_s if self.rec.best else 0.0

    def trace(self) -> list[tuple]:
        return [(s.kind, s.candidate_id, s.concurrency, s.reason) for s in self.steps]


SURFACE_PROFILE = """
[model]
name = "synthetic"
[search]
{search}strategy = "{strategy}"
[constraints]
latency_percentile = "p99"
latency_budget_ms = {budget}
"""


def surface_run(name: str, strategy: str, seed: int = 0, **kw) -> SimRun:
    surf = SURFACES[name]
    text = SURFACE_PROFILE.format(search=surf.profile_search(), strategy=strategy, budget=surf.budget_ms)
    return SimRun(text, seed, surface=surf, **kw)


def remeasured(run: SimRun, seeds=(101, 102, 103)) -> float:
    """The pick's throughput measured again (other seeds), as bench_search re-measures both picks."""
    b = run.rec.best
    spec = run.specs[b.candidate_id]
    return float(np.mean([SimServer(seed=s, surface=run.sim.surface).measure(b.candidate_id, spec, b.concurrency)
                          .summary().throughput_infer_per_s for s in seeds]))
