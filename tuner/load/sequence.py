"""Sequence (stateful) load: N concurrent sequences, each a chain of requests.

A model with `sequence_batching` keeps state per sequence, so its load is a
number of live sequences, not of requests: at concurrency N, N sequences run
at once, each with one request in flight; a sequence is `length` requests
under one correlation id, the first flagged start and the last flagged end;
when one ends, a new one (a new id) starts in its place. Every request is
timed on its own, so a latency budget applies to each request of a sequence
(the first one's wait for a free sequence slot included).

The flags ride on the serialized request of the plan's pool: a short
serialized `ModelInferRequest` holding only the parameters `sequence_id`,
`sequence_start` and `sequence_end` is appended to it (protobuf merges a
later map entry into the message), so a request still costs no encoding.
Ids come from a random 48-bit base per engine, so the engines of several load
processes (and successive points) never share one; a model whose CORRID
control input is TYPE_STRING gets them as strings.

At the end of a point every sequence left open is closed with one more,
untimed request flagged end, so the server frees its slot at once instead of
after `max_sequence_idle_microseconds` (which would hold back the next
point); a sequence whose request failed is closed the same way, best effort.
Requests go as unary calls: with one request in flight per sequence, Triton
sees each sequence's requests in order.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

import grpc
from tritonclient.grpc import service_pb2

DEFAULT_LENGTH = 8  # requests per sequence when the profile or command line gives none
ID_BITS = 48  # random base of an engine's correlation ids (int64 on the wire)


@dataclass(frozen=True)
class SequencePlan:
    """How a sequence model's load chains its requests."""

    length: int = DEFAULT_LENGTH  # requests per sequence, start and end included
    string_ids: bool = False  # the CORRID control input is TYPE_STRING: ids go as strings


def flags_tail(sequence_id: int, start: bool, end: bool, string_ids: bool = False) -> bytes:
    """The serialized parameters appended to a request of the plan's pool."""
    req = service_pb2.ModelInferRequest()
    if string_ids:
        req.parameters["sequence_id"].string_param = str(sequence_id)
    else:
        req.parameters["sequence_id"].int64_param = sequence_id
    req.parameters["sequence_start"].bool_param = start
    req.parameters["sequence_end"].bool_param = end
    return req.SerializeToString()


class SequenceRunner:
    """One engine's sequences (the engine records; this only sends them)."""

    def __init__(self, engine):
        self.e = engine
        seq: SequencePlan = engine.plan.sequence
        self.length = max(1, int(seq.length))
        self.string_ids = seq.string_ids
        self.next_id = (secrets.randbits(ID_BITS) << 8) + 1
        self.tasks: list[asyncio.Task] = []
        self.started = 0  # sequences begun (for tests and the curious)
        self.finished = 0  # sequences whose end request succeeded

    def new_id(self) -> int:
        sid = self.next_id
        self.next_id += 1
        return sid

    async def run(self, concurrency: int) -> None:
        self.tasks = [asyncio.create_task(self._one_slot()) for _ in range(concurrency)]
        await asyncio.gather(*self.tasks)

    async def finish(self, timeout_s: float) -> None:
        """After the engine stopped running: let every open sequence send its closing request."""
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=max(0.1, timeout_s))

    async def _close(self, sid: int) -> None:
        """End a sequence without timing it (errors ignored: the server's idle timeout frees it then)."""
        e = self.e
        tail = flags_tail(sid, False, True, self.string_ids)
        try:
            await e.infer(e.payloads[e.next_payload()] + tail, timeout=e.settings.request_timeout_s,
                          metadata=e.metadata)
        except grpc.aio.AioRpcError:
            pass

    async def _one_slot(self) -> None:
        """Sequences one after another, each request timed, until the engine stops."""
        e = self.e
        infer, payloads, md = e.infer, e.payloads, e.metadata
        timeout = e.settings.request_timeout_s
        perf = time.perf_counter_ns
        check = e.checker
        ends, lats = e.ends.append, e.lats.append
        track, shape_of, shapes = e.track, e.plan.shape_of, e.shape_idx.append
        last = self.length - 1
        while e.running:
            sid = self.new_id()
            self.started += 1
            # the flags of a sequence's first, middle and last requests, encoded once per sequence
            first, middle, final = (flags_tail(sid, True, last == 0, self.string_ids),
                                    flags_tail(sid, False, False, self.string_ids),
                                    flags_tail(sid, False, True, self.string_ids))
            step = 0
            while step <= last:
                if not e.running:
                    if step > 0:
                        await self._close(sid)
                    return
                p = e.next_payload()
                t0 = perf()
                e.inflight += 1
                try:
                    raw = await infer(payloads[p] + (first if step == 0 else final if step == last else middle),
                                      timeout=timeout, metadata=md)
                except grpc.aio.AioRpcError as err:
                    e.inflight -= 1
                    e.error(err.code().name, err.details() or "")
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        await asyncio.sleep(0.05)  # don't spin on a dead server
                    elif step > 0:
                        await self._close(sid)
                    break  # a new sequence: this one's state is in doubt
                t1 = perf()
                e.inflight -= 1
                step += 1
                problem = check(raw, p)
                if problem is not None:
                    e.error("BAD_OUTPUT", problem)
                    continue
                ends(t1)
                lats(t1 - t0)
                if track:
                    shapes(shape_of[p])
            else:
                self.finished += 1
