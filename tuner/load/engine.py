"""One process's share of a load point: sends requests, records timestamps.

Closed loop (N requests in flight) or open loop (sends at scheduled times,
latency measured from the schedule: a steady rate, a replayed intervals file,
a step or ramp schedule); unary calls or the ModelStreamInfer stream
(decoupled models, and low load where it costs less latency). Requests come
from the plan's pool of serialized payloads, in the plan's order; with more
than one request shape, each latency keeps its request's shape index. Each
process only records; windows are cut at fixed boundaries of the system-wide
monotonic clock, so the windows of several processes line up (`Engine.cut`).
"""

from __future__ import annotations

import asyncio
import time
from array import array
from bisect import bisect_left

import grpc
import numpy as np

from tuner.load.channel import LoadChannel
from tuner.load.spec import LoadSettings, LoadShare, SPIN_LEAD_NS, SPIN_MAX_RATE, max_inflight, pick_transport
from tuner.load.http import HttpLoad, check_http
from tuner.load.request import RequestPlan, ResponseChecker, check_response
from tuner.load.schedule import Timer
from tuner.load.sequence import SequenceRunner
from tuner.load.stream import Streamer
from tuner.load.traffic import make_schedule
from tuner.results.samples import WindowSample
from tuner.results.selfcheck import LATE_SEND_MS


def _us(values_ns: array) -> list[int]:
    return (np.frombuffer(values_ns, dtype=np.int64) // 1000).tolist() if len(values_ns) else []


def _pct_ms(values_ns, q: float) -> float | None:
    if not len(values_ns):
        return None
    return float(np.percentile(np.frombuffer(values_ns, dtype=np.int64), q)) / 1e6


# ------------------------------------------------------------------ engine ---

class Engine:
    """One process's share of a load point: sends requests, records timestamps.

    Nothing here computes statistics: `cut(b)` slices what was recorded since
    the previous boundary into a WindowSample (samples belong to the window in
    which they completed), so windows of several processes line up exactly.
    """

    # Event-loop lag ticker period: each wake-up costs ~0.15 ms of CPU on a small
    # VM, so 20 a second (40 samples in a 2 s window) rather than 100.
    TICK_NS = 50_000_000

    def __init__(self, channel: LoadChannel, plan: RequestPlan, settings: LoadSettings, share: LoadShare):
        self.channel = channel
        # bound once: `_fire_unary` runs per request
        self.infer = channel.infer
        self.metadata = channel.metadata
        self.plan = plan
        self.payloads = plan.payloads
        self.order = plan.order
        self.next_k = share.index * len(plan.order) // max(1, share.of)  # processes start apart in the order
        self.track = plan.shapes > 1  # latencies keep their request's shape
        self.settings = settings
        self.share = share
        self.transport = pick_transport(plan, settings, share, channel.connection)
        self.stream = self.transport == "stream"
        self.ends = array("q")
        self.lats = array("q")
        self.sent_lats = array("q")  # open loop: latency from the actual send, parallel to lats
        self.shape_idx = array("i")  # several request shapes: each latency's shape index, parallel to lats
        self.firsts = array("q")
        self.nresp = array("q")
        self.err_ts = array("q")
        self.send_ts = array("q")
        self.late = array("q")
        self.capped_ts = array("q")
        self.lag_ts = array("q")
        self.lag = array("q")
        self.error_kinds: dict[str, int] = {}
        self.first_error = ""
        self.checker = ResponseChecker(plan.expected_outputs, settings.check_every, per_payload=plan.expected,
                                       full_check=check_http if self.transport == "http" else check_response)
        self.running = False
        self.inflight = 0
        self.tasks: list[asyncio.Task] = []
        self.pending: set[asyncio.Task] = set()
        self.schedule = None  # open loop: send times (schedule.Schedule or a traffic schedule)
        self.streamer: Streamer | None = None
        self.http: HttpLoad | None = None
        self.sequences: SequenceRunner | None = None  # a sequence model's load (closed loop only)
        self.crashed: BaseException | None = None
        self._idx: dict[str, int] = {}
        self._prev_b = 0
        self._prev_cpu = 0.0
        self._prev_wall = 0
        self._prev_checked = 0
        self._prev_sched = 0

    # -- recording
    def error(self, kind: str, detail: str) -> None:
        self.err_ts.append(time.perf_counter_ns())
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if not self.first_error:
            self.first_error = f"{kind}: {detail}"[:300]

    # -- lifecycle
    def start(self, t_start_ns: int) -> None:
        self.running = True
        self._prev_b = t_start_ns
        self._prev_cpu = time.process_time()
        self._prev_wall = time.perf_counter_ns()
        self.tasks.append(asyncio.create_task(self._main(t_start_ns)))
        self.tasks.append(asyncio.create_task(self._ticker()))

    async def _main(self, t_start_ns: int) -> None:
        try:
            await asyncio.sleep(max(0.0, (t_start_ns - time.perf_counter_ns()) / 1e9))
            share = self.share
            if self.plan.sequence is not None:
                self.sequences = SequenceRunner(self)
                await self.sequences.run(share.concurrency)
            elif self.stream:
                self.streamer = Streamer(self)
                if share.rate > 0:
                    self.tasks.append(asyncio.create_task(self.streamer.run(0)))
                    await self._scheduler(t_start_ns, self.streamer.send)
                else:
                    await self.streamer.run(share.concurrency)
            elif self.transport == "http":
                self.http = HttpLoad(self, self.channel.connection.http_url)
                if share.rate > 0:
                    await self.http.start()
                    await self._scheduler(t_start_ns, self.http.send)
                else:
                    await self.http.run(share.concurrency)
            elif share.rate > 0:
                await self._scheduler(t_start_ns, self._fire_unary)
            else:
                workers = [asyncio.create_task(self._closed_unary()) for _ in range(share.concurrency)]
                self.tasks.extend(workers)
                await asyncio.gather(*workers)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # a bug, not a server problem: surface it
            self.crashed = err
            raise

    async def stop(self) -> None:
        self.running = False
        if self.share.rate > 0:
            # Triton runs requests the client gave up on: wait for them, so the
            # next point doesn't start behind a backlog.
            deadline = time.perf_counter_ns() + int(self.settings.drain_s * 1e9)
            while time.perf_counter_ns() < deadline and (
                    self.pending or any(w is not None and w.pending for w in (self.streamer, self.http))):
                await asyncio.sleep(0.01)
        for wire in (self.streamer, self.http):
            if wire is not None:
                wire.close()
        if self.sequences is not None:  # open sequences send their end flag, so the server frees their slots
            await self.sequences.finish(self.settings.drain_s)
        tasks = self.tasks + list(self.pending)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def alive(self) -> bool:
        return self.crashed is None and not (self.tasks and self.tasks[0].done())

    # -- closed loop, unary
    async def _closed_unary(self) -> None:
        infer = self.infer
        payloads, order = self.payloads, self.order
        n_order = len(order)
        timeout = self.settings.request_timeout_s
        md = self.metadata
        perf = time.perf_counter_ns
        check = self.checker
        ends, lats = self.ends.append, self.lats.append
        track, shape_of, shapes = self.track, self.plan.shape_of, self.shape_idx.append
        while self.running:
            k = self.next_k
            self.next_k = k + 1 if k + 1 < n_order else 0
            p = order[k]
            t0 = perf()
            self.inflight += 1
            try:
                raw = await infer(payloads[p], timeout=timeout, metadata=md)
            except grpc.aio.AioRpcError as err:
                self.inflight -= 1
                self.error(err.code().name, err.details() or "")
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(0.05)  # don't spin on a dead server
                continue
            t1 = perf()
            self.inflight -= 1
            problem = check(raw, p)
            if problem is not None:
                self.error("BAD_OUTPUT", problem)
                continue
            ends(t1)
            lats(t1 - t0)
            if track:
                shapes(shape_of[p])

    # -- open loop
    async def _scheduler(self, t_start_ns: int, fire) -> None:
        share = self.share
        sched = self.schedule = make_schedule(t_start_ns, share, int(self.settings.warmup_s * 1e9),
                                              int(self.settings.window_s * 1e9))
        timer = Timer()
        perf = time.perf_counter_ns
        cap = max_inflight(self.settings, share.rate)
        send_ts, late, capped = self.send_ts.append, self.late.append, self.capped_ts.append
        i, last_capped = 0, -1
        t = sched.at(0)
        # At low rates, wake SPIN_LEAD_NS early and yield to the loop until the
        # send time: a sleeping loop wakes ~70 us late, which counts as latency
        # (measured from the schedule). Costs at most SPIN_LEAD_NS of CPU per send.
        lead = SPIN_LEAD_NS if share.rate <= SPIN_MAX_RATE else 0
        try:
            while self.running:
                now = perf()
                if t > now:
                    if t - now > lead:
                        await timer.sleep_until(t - lead)
                    else:
                        await asyncio.sleep(0)
                    continue
                n = 0
                while t <= now and n < 256:
                    if self.inflight >= cap:
                        if last_capped != i:
                            capped(now)
                            last_capped = i
                        break
                    t_send = perf()  # later sends of a burst go out later than `now`
                    send_ts(t_send)
                    late(t_send - t)
                    fire(t, t_send)
                    i += 1
                    n += 1
                    t = sched.at(i)
                if n == 0:
                    await asyncio.sleep(0.0005)  # at the in-flight cap: let requests complete
                elif t <= perf():
                    await asyncio.sleep(0)  # behind schedule: let responses in between bursts
        finally:
            timer.close()

    def next_payload(self) -> int:
        """The next payload in the plan's order (cycled)."""
        k = self.next_k
        self.next_k = k + 1 if k + 1 < len(self.order) else 0
        return self.order[k]

    def _fire_unary(self, t_sched: int, t_send: int) -> None:
        self.inflight += 1
        p = self.next_payload()
        # The call is made here, not in the task: its send is queued now, one
        # event-loop turn earlier than from inside a new task.
        call = self.infer(self.payloads[p], timeout=self.settings.request_timeout_s, metadata=self.metadata)
        task = asyncio.get_running_loop().create_task(self._one_unary(call, t_sched, t_send, p))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _one_unary(self, call, t_sched: int, t_send: int, p: int) -> None:
        try:
            raw = await call
        except asyncio.CancelledError:
            call.cancel()
            raise
        except grpc.aio.AioRpcError as err:
            self.error(err.code().name, err.details() or "")
            return
        finally:
            self.inflight -= 1
        t1 = time.perf_counter_ns()
        problem = self.checker(raw, p)
        if problem is not None:
            self.error("BAD_OUTPUT", problem)
            return
        self.ends.append(t1)
        self.lats.append(t1 - t_sched)
        self.sent_lats.append(t1 - t_send)
        if self.track:
            self.shape_idx.append(self.plan.shape_of[p])

    # -- self-check
    async def _ticker(self) -> None:
        timer = Timer()
        perf = time.perf_counter_ns
        tick = self.TICK_NS
        try:
            t = perf()
            while self.running:
                target = t + tick
                await timer.sleep_until(target)
                now = perf()
                self.lag_ts.append(now)
                self.lag.append(max(0, now - target))
                t = now
        finally:
            timer.close()

    def _since(self, key: str, arr: array, b: int) -> tuple[int, int]:
        i0 = self._idx.get(key, 0)
        i1 = bisect_left(arr, b, i0)
        self._idx[key] = i1
        return i0, i1

    def cut(self, b: int) -> WindowSample:
        """What completed in [previous boundary, b), as one window of this process."""
        now_cpu, now_wall = time.process_time(), time.perf_counter_ns()
        prev = self._prev_b
        i0, i1 = self._since("ends", self.ends, b)
        e0, e1 = self._since("errors", self.err_ts, b)
        duration_ns = max(1, b - prev)
        client = _self_check(self, b, duration_ns, self.lats[i0:i1], e1 - e0, now_cpu, now_wall)
        batch = self.plan.batch_size
        window = WindowSample(
            start_s=prev / 1e9,
            duration_s=duration_ns / 1e9,
            latencies_us=_us(self.lats[i0:i1]),
            errors=e1 - e0,
            client=client,
            send_latencies_us=_us(self.sent_lats[i0:i1]) if self.share.rate > 0 else None,
            shape_index=self.shape_idx[i0:i1].tolist() if self.track else None,
            batch_size=batch if batch > 1 else None,
        )
        if self.stream:  # the stream parses and checks every response
            responses = int(sum(self.nresp[i0:i1]))
            client["checked"] = responses
            if self.plan.decoupled:  # else first response = the response: nothing to add
                window.first_response_us = _us(self.firsts[i0:i1])
                window.responses = responses
        self._prev_b = b
        self._prev_cpu, self._prev_wall = now_cpu, now_wall
        self._prev_checked = self.checker.checked
        return window


def _self_check(e: "Engine", b: int, duration_ns: int, lats: array, errors: int, now_cpu: float,
                now_wall: int) -> dict:
    """An engine's record of itself over a window (`selfcheck.py` documents the keys)."""
    s0, s1 = e._since("sends", e.send_ts, b)
    c0, c1 = e._since("capped", e.capped_ts, b)
    l0, l1 = e._since("lag", e.lag_ts, b)
    share = e.share
    open_loop = share.rate > 0
    late = e.late[s0:s1]
    lag = e.lag[l0:l1]
    cpu_s = now_cpu - e._prev_cpu
    wall_s = max(1e-9, (now_wall - e._prev_wall) / 1e9)
    scheduled = None
    if e.schedule is not None:
        n = e.schedule.count_before(b)
        scheduled, e._prev_sched = n - e._prev_sched, n
    target = share.rate if open_loop else float(share.concurrency)
    if share.spec.traffic is not None and scheduled is not None:
        target = scheduled / (duration_ns / 1e9)  # the schedule's own rate over this window
    return {
        "mode": share.spec.mode,
        "arrivals": share.spec.arrivals if open_loop else "closed",
        "target": target,
        "achieved": ((s1 - s0) / (duration_ns / 1e9)) if open_loop else float(sum(lats)) / duration_ns,
        "scheduled": scheduled,
        "sent": (s1 - s0) if open_loop else len(lats) + errors,
        "late_sends": (int(np.count_nonzero(np.frombuffer(late, dtype=np.int64) > LATE_SEND_MS * 1e6))
                       if open_loop else None),
        "late_p50_ms": _pct_ms(late, 50) if open_loop else None,
        "late_p99_ms": _pct_ms(late, 99) if open_loop else None,
        "late_max_ms": (max(late) / 1e6) if open_loop and len(late) else None,
        "capped_sends": (c1 - c0) if open_loop else None,
        "inflight": e.inflight if not e.streamer else len(e.streamer.pending),
        "loop_lag_p99_ms": _pct_ms(lag, 99),
        "loop_lag_max_ms": (max(lag) / 1e6) if len(lag) else None,
        "cpu_s": cpu_s,
        "cpu_util_max": cpu_s / wall_s,
        "checked": e.checker.checked - e._prev_checked,
        "workers": 1,
    }
