"""Requests over Triton's HTTP/1.1 endpoint: the KServe v2 REST protocol with binary tensors.

Why a second wire: at a fixed request rate a Python gRPC client pays for
every message on its own (the C core's poller thread hands each completion
to the event loop). Measured on a 2-core host against the identity model at
2000 requests/s (`bench.sh`, issue 18): 280-320 us of client CPU per request
over the gRPC stream, 90-105 us over plain HTTP/1.1 sockets, and the
send-based p50 0.15-0.25 ms lower, below perf_analyzer's own; in a closed
loop 16.1k/20.8k/22.8k requests/s at concurrency 16/64/128 against 9.3k/
15.4k/11.4k over unary gRPC, and a p50 of 0.25 ms at concurrency 1 against
the gRPC stream's 0.39. Here a request
is one write of bytes built before the load starts, and a response one or
two `data_received` calls parsed with a few `find`s.

HTTP/1.1 has no multiplexing: each request in flight holds a keep-alive
connection of its own (`HttpLoad`). A closed loop of N keeps N connections,
each sending its next request from the callback that received the last
one; an open loop keeps a pool that grows when a send finds no idle
connection (the request waits in a backlog meanwhile, and its send-based
latency runs from its actual write).

Each request body is the JSON inference header followed by the raw input
tensors (`Inference-Header-Content-Length`), made from the gRPC payload the
plan serialized, so both wires send the same tensors. Responses are checked
like gRPC ones (`ResponseChecker` with `check_http`): byte length against a
response already fully checked, a full parse of the JSON header on a sample.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

from tritonclient.grpc import service_pb2

from tuner.errors import LoadError

START_CONNECTIONS = 8  # an open loop opens these before its first send, more as sends find none idle
RECONNECT_PAUSE_S = 0.05  # after a refused or dropped connection: don't spin on a dead server
_DECODER = json.JSONDecoder()
_PARAM_KINDS = ("bool_param", "int64_param", "string_param", "double_param", "uint64_param")


def http_body(req: service_pb2.ModelInferRequest) -> tuple[bytes, int]:
    """The HTTP request body for a ModelInferRequest, and its JSON header's length."""
    inputs = []
    for t, raw in zip(req.inputs, req.raw_input_contents):
        inputs.append({"name": t.name, "shape": list(t.shape), "datatype": t.datatype,
                       "parameters": {"binary_data_size": len(raw)}})
    header: dict = {"inputs": inputs}
    params = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in req.parameters.items()
              if v.WhichOneof("parameter_choice") in _PARAM_KINDS}
    if req.outputs:
        header["outputs"] = [{"name": o.name, "parameters": {"binary_data": True}} for o in req.outputs]
    else:
        params["binary_data_output"] = True
    header["parameters"] = params
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + b"".join(req.raw_input_contents), len(head)


def http_message(payload: bytes, host: str, headers: tuple[tuple[str, str], ...] | None = None) -> bytes:
    """One whole HTTP/1.1 request (line, headers, body) for a serialized ModelInferRequest, ready to write."""
    req = service_pb2.ModelInferRequest.FromString(payload)
    body, head_len = http_body(req)
    version = req.model_version
    path = f"/v2/models/{req.model_name}" + (f"/versions/{version}" if version else "") + "/infer"
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/octet-stream",
             f"Inference-Header-Content-Length: {head_len}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers or ()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def check_http(body: bytes, expected) -> str | None:
    """None when an HTTP response body carries every expected output in binary; else the problem."""
    try:
        header, end = _DECODER.raw_decode(body.decode("latin-1"))
        outputs = {o["name"]: int((o.get("parameters") or {}).get("binary_data_size", -1))
                   for o in header.get("outputs", ())}
    except (ValueError, TypeError, KeyError, AttributeError):
        return "the response's JSON header does not parse"
    binary = len(body) - end
    if sum(max(0, n) for n in outputs.values()) != binary:
        return f"the response declares {sum(outputs.values())} bytes of outputs but carries {binary}"
    for name, size in expected:
        got = outputs.get(name)
        if got is None:
            return f"missing output {name}"
        if got <= 0 or (size >= 0 and got != size):
            return f"output {name} has {max(0, got)} bytes, expected {size if size >= 0 else '> 0'}"
    return None


def error_text(status: int, body: bytes) -> tuple[str, str]:
    """An error response's kind and message (Triton's JSON `{"error": ...}` when it sent one)."""
    try:
        detail = str(json.loads(body.decode("utf-8", "replace")).get("error", ""))
    except (ValueError, AttributeError):
        detail = body[:200].decode("utf-8", "replace")
    return f"HTTP_{status}", detail or f"HTTP status {status}"


def split_host(url: str) -> tuple[str, int]:
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit():
        raise LoadError(f"HTTP endpoint '{url}' is not host:port; pass --http-url HOST:PORT")
    return host.strip("[]"), int(port)


class _Conn(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight (`state`), its response parsed as it arrives."""

    __slots__ = ("load", "tr", "buf", "state", "closed")

    def __init__(self, load: "HttpLoad"):
        self.load = load
        self.tr: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state: list | None = None  # [t_sched, t_send, payload index]
        self.closed = False

    def connection_made(self, transport) -> None:
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        t = time.perf_counter_ns()
        buf = self.buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        j = buf.find(b"\r\nContent-Length: ", 0, end)
        if j >= 0:
            j += 18
        else:  # another spelling of the header name
            j = bytes(buf[:end]).lower().find(b"\r\ncontent-length:")
            if j < 0:
                self.load._broken(self, "a response without Content-Length")
                return
            j += 17
        n = int(buf[j:buf.find(b"\r\n", j)])
        total = end + 4 + n
        if len(buf) < total:
            return
        status = int(buf[9:12])
        body = bytes(buf[end + 4:total])
        del buf[:total]
        state, self.state = self.state, None
        if state is not None:
            self.load._done(self, state, t, status, body)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.load._lost(self)


class HttpLoad:
    """One engine's requests over HTTP/1.1: a closed loop (`run`) or the open loop's sends (`send`)."""

    def __init__(self, engine, url: str):
        self.e = engine
        self.host, self.port = split_host(url)
        plan = engine.plan
        self.messages = tuple(http_message(p, url, engine.metadata)
                              for p in plan.payloads)
        self.idle: list[_Conn] = []
        self.conns: set[_Conn] = set()
        self.backlog: deque = deque()  # open loop: sends waiting for a connection
        self.opening = 0
        self.busy = 0  # requests written, not yet answered
        self.closed_loop = False

    @property
    def pending(self) -> int:
        return self.busy + len(self.backlog)

    async def _open(self) -> _Conn | None:
        loop = asyncio.get_running_loop()
        self.opening += 1
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError as err:
            self.e.error("UNAVAILABLE", f"cannot connect to {self.host}:{self.port}: {err.strerror or err}")
            await asyncio.sleep(RECONNECT_PAUSE_S)
            return None
        finally:
            self.opening -= 1
        self.conns.add(conn)
        return conn

    def _write(self, conn: _Conn, t_sched: int, t_send: int, p: int) -> None:
        conn.state = [t_sched, t_send, p]
        self.busy += 1
        conn.tr.write(self.messages[p])

    # -- open loop
    async def start(self, connections: int = START_CONNECTIONS) -> None:
        """Open the pool's first connections (an open loop's); more open when sends find none idle."""
        for conn in await asyncio.gather(*(self._open() for _ in range(max(1, connections)))):
            if conn is not None:
                self.idle.append(conn)

    def send(self, t_sched: int, t_send: int = 0) -> None:
        """One request at its scheduled time: on an idle connection now, else once one is free."""
        e = self.e
        p = e.next_payload()
        if self.idle:
            self._write(self.idle.pop(), t_sched, t_send or time.perf_counter_ns(), p)
        else:
            self.backlog.append((t_sched, p))
            if self.opening < len(self.backlog):
                asyncio.get_running_loop().create_task(self._grow())
        e.inflight = self.pending

    async def _grow(self) -> None:
        conn = await self._open()
        if conn is not None:
            self._free(conn)

    def _free(self, conn: _Conn) -> None:
        if self.backlog:
            t_sched, p = self.backlog.popleft()
            self._write(conn, t_sched, time.perf_counter_ns(), p)
        elif self.closed_loop and self.e.running:
            self._write(conn, 0, 0, self.e.next_payload())
        else:
            self.idle.append(conn)

    # -- closed loop
    async def run(self, concurrency: int) -> None:
        """N connections, each sending its next request as soon as the last is answered."""
        self.closed_loop = True
        e = self.e
        while e.running:
            want = concurrency - len(self.conns) - self.opening
            for _ in range(want):
                asyncio.get_running_loop().create_task(self._grow())
            await asyncio.sleep(RECONNECT_PAUSE_S)

    # -- responses
    def _done(self, conn: _Conn, state: list, t: int, status: int, body: bytes) -> None:
        e = self.e
        self.busy -= 1
        t_sched, t_send, p = state
        if status != 200:
            e.error(*error_text(status, body))
        else:
            problem = e.checker(body, p)
            if problem is not None:
                e.error("BAD_OUTPUT", problem)
            else:
                e.ends.append(t)
                if self.closed_loop:
                    e.lats.append(t - t_send)
                else:
                    e.lats.append(t - t_sched)
                    e.sent_lats.append(t - t_send)
                if e.track:
                    e.shape_idx.append(e.plan.shape_of[p])
        if self.closed_loop and e.running:
            self._write(conn, 0, time.perf_counter_ns(), e.next_payload())
        else:
            self._free(conn)
        e.inflight = self.pending

    def _broken(self, conn: _Conn, why: str) -> None:
        self.e.error("BAD_RESPONSE", why)
        conn.tr.close()

    def _lost(self, conn: _Conn) -> None:
        self.conns.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.state is not None:  # a request the server never answered
            conn.state = None
            self.busy -= 1
            if self.e.running:
                self.e.error("UNAVAILABLE", f"the server closed the connection to {self.host}:{self.port}")
        self.e.inflight = self.pending

    def close(self) -> None:
        self.closed_loop = False
        self.backlog.clear()
        for conn in list(self.conns):
            if conn.tr is not None:
                conn.tr.close()

