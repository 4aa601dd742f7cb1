"""The ModelStreamInfer stream: one bidirectional gRPC stream carrying an engine's requests."""

from __future__ import annotations

import asyncio
import time

import grpc
from tritonclient.grpc import service_pb2

from tuner.load.request import check_parsed, stream_payload


class Streamer:
    """Requests over one bidirectional ModelStreamInfer stream (decoupled models).

    Each request gets an id (appended to the serialized request: a later
    field wins in protobuf) so responses can be matched; Triton flags each
    request's final response (`triton_final_response`, asked for with the
    request parameter `triton_enable_empty_final_response`). Latency runs from
    when the request was queued to be written (its scheduled time in open
    loop), to the first response and to the final one.
    """

    def __init__(self, engine):
        self.e = engine
        self.payloads = tuple(stream_payload(p) for p in engine.plan.payloads)
        self.expected = engine.plan.expected
        self.shape_of = engine.plan.shape_of
        self.decoupled = engine.plan.decoupled
        # id -> [t_sched, t_first, responses, problem, t_send, payload]
        self.pending: dict[str, list] = {}
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seq = 0
        self.concurrency = 0
        self.call = None

    def send(self, t_sched: int, t_send: int = 0) -> None:
        """Queue one request; on a stream, its send time is when it is queued to be written."""
        self.seq += 1
        rid = str(self.seq)
        b = rid.encode()
        p = self.e.next_payload()
        self.pending[rid] = [t_sched, 0, 0, None, t_send or t_sched, p]
        self.e.inflight = len(self.pending)
        self.queue.put_nowait(self.payloads[p] + b"\x1a" + bytes((len(b),)) + b)

    async def _requests(self, queue: asyncio.Queue):
        while True:
            item = await queue.get()
            if item is None:
                return
            yield item

    async def run(self, concurrency: int) -> None:
        """Read responses until stopped; reopen the stream after a failure."""
        e = self.e
        self.concurrency = concurrency
        first = True
        while e.running:
            if not first:  # after a failure: a new stream, nothing outstanding
                self.queue = asyncio.Queue()
                self.pending.clear()
            first = False
            for _ in range(concurrency):
                self.send(time.perf_counter_ns())
            self.call = e.channel.stream(self._requests(self.queue), timeout=None, metadata=e.metadata)
            try:
                async for raw in self.call:
                    self._handle(raw)
                detail, kind = "the server ended the stream", "STREAM_ENDED"
            except grpc.aio.AioRpcError as err:
                kind, detail = err.code().name, err.details() or ""
            if not e.running:
                return
            for _ in range(max(1, len(self.pending))):
                e.error(kind, detail)
            self.pending.clear()
            e.inflight = 0
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self.queue.put_nowait(None)
        if self.call is not None:
            self.call.cancel()

    def _handle(self, raw: bytes) -> None:
        t = time.perf_counter_ns()
        e = self.e
        r = service_pb2.ModelStreamInferResponse.FromString(raw)
        ir = r.infer_response
        pending = self.pending
        st = pending.get(ir.id)
        if r.error_message:
            rid = ir.id if st is not None else next(iter(pending), None)
            if rid is None:
                return
            del pending[rid]
            e.error("STREAM_ERROR", r.error_message)
            self._next()
            return
        if st is None:
            return  # a request already given up on
        if len(ir.outputs):
            st[2] += 1
            if not st[1]:
                st[1] = t
            if st[3] is None:
                st[3] = check_parsed(ir, self.expected[st[5]])
        flag = ir.parameters.get("triton_final_response")
        final = flag.bool_param if flag is not None else not self.decoupled
        if not final:
            return
        del pending[ir.id]
        if st[3] is not None:
            e.error("BAD_OUTPUT", st[3])
        elif st[2] == 0 and not self.decoupled:
            e.error("BAD_OUTPUT", "final response without outputs")
        else:
            e.ends.append(t)
            e.lats.append(t - st[0])
            e.sent_lats.append(t - st[4])
            e.firsts.append((st[1] or t) - st[0])
            e.nresp.append(st[2])
            if e.track:
                e.shape_idx.append(self.shape_of[st[5]])
        self._next()

    def _next(self) -> None:
        e = self.e
        e.inflight = len(self.pending)
        if self.concurrency and e.running:
            self.send(time.perf_counter_ns())
