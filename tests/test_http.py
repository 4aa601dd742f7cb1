"""Load over Triton's HTTP endpoint (load/http.py) against the real embedded server: open and
closed loops, per-request shape checks, bad outputs, errors the server answers, a server that
dies. The pure ones: which wire a point picks, and the response check on made-up bodies."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from tuner.errors import LoadError
from tuner.load.client import LoadClient
from tuner.load.http import check_http, http_message
from tuner.load.inputs import InputSpec, ShapeChoice
from tuner.load.request import build_request
from tuner.load.spec import LoadSettings, LoadSpec, pick_transport
from tuner.results.stats import summarize
from tuner.server.connection import Connection
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer
from tuner.server.install import prepare_repository

from .conftest import request_plan
from .test_load import add_broken_models

pytestmark = pytest.mark.timeout(180)
FAST = LoadSettings(warmup_s=0.3, window_s=0.5, min_windows=2, max_windows=2, stability_pct=100)


def _conn(srv: EmbeddedServer) -> Connection:
    return Connection(srv.url, http_url=srv.http_url)


def _run(conn, model, plan, *, concurrency=None, rate=None, settings=FAST):
    async def go():
        async with LoadClient(conn, model) as client:
            if rate is not None:
                return await client.open_loop(plan, rate, settings)
            return await client.closed_loop(plan, concurrency, settings)

    return asyncio.run(go())


# ------------------------------------------------------------------- pure ---

def _plan(**kw):
    from tritonclient.grpc import model_config_pb2 as mc
    from google.protobuf import text_format

    cfg = text_format.Parse('name: "m" max_batch_size: 8 input [{ name: "X" data_type: TYPE_FP32 dims: [4] }] '
                            'output [{ name: "Y" data_type: TYPE_FP32 dims: [4] }]', mc.ModelConfig())
    for k, v in kw.items():
        if k == "decoupled":
            cfg.model_transaction_policy.decoupled = v
    return build_request(cfg, "m")


def test_the_wire_follows_the_endpoint_the_model_and_the_setting():
    plan = _plan()
    with_http = Connection("h:8001", http_url="h:8000")
    grpc_only = Connection("h:8001")
    tls = Connection("h:8001", ssl=True, http_url="h:8000")
    closed, rate = LoadSpec(concurrency=4).share(0, 1), LoadSpec(rate=500.0).share(0, 1)
    auto = LoadSettings()
    assert pick_transport(plan, auto, closed, with_http) == "http"
    assert pick_transport(plan, auto, rate, with_http) == "http"
    assert pick_transport(plan, auto, closed, grpc_only) == "unary"
    assert pick_transport(plan, auto, rate, grpc_only) == "stream"
    assert pick_transport(plan, auto, rate, tls) == "stream"  # TLS: gRPC only
    assert pick_transport(plan, LoadSettings(transport="unary"), rate, with_http) == "unary"
    assert pick_transport(_plan(decoupled=True), auto, closed, with_http) == "stream"
    for conn in (grpc_only, tls):
        with pytest.raises(LoadError, match="--http-url"):
            pick_transport(plan, LoadSettings(transport="http"), closed, conn)


def test_an_http_response_is_checked_output_by_output():
    def body(outputs, binary: bytes) -> bytes:
        return json.dumps({"model_name": "m", "outputs": outputs}).encode() + binary

    good = body([{"name": "Y", "parameters": {"binary_data_size": 16}}], b"\0" * 16)
    assert check_http(good, (("Y", 16),)) is None
    assert check_http(good, (("Y", -1),)) is None
    assert "expected 32" in check_http(good, (("Y", 32),))
    assert "missing output Z" in check_http(good, (("Z", -1),))
    empty = body([{"name": "Y", "parameters": {"binary_data_size": 0}}], b"")
    assert "has 0 bytes" in check_http(empty, (("Y", -1),))
    short = body([{"name": "Y", "parameters": {"binary_data_size": 16}}], b"\0" * 8)
    assert "carries 8" in check_http(short, (("Y", 16),))
    assert "does not parse" in check_http(b"{not json", (("Y", 16),))


def test_the_http_request_carries_the_grpc_payloads_tensors():
    plan = _plan()
    msg = http_message(plan.payload, "h:8000", (("x-token", "s"),))
    head, _, body = msg.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v2/models/m/infer HTTP/1.1" and "x-token: s" in lines
    n_head = int(next(x for x in lines if x.startswith("Inference-Header-Content-Length")).split(": ")[1])
    assert int(next(x for x in lines if x.startswith("Content-Length")).split(": ")[1]) == len(body)
    header = json.loads(body[:n_head])
    assert header["inputs"] == [{"name": "X", "shape": [1, 4], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 16}}]
    assert header["parameters"] == {"binary_data_output": True} and len(body) == n_head + 16


# ------------------------------------------------------------ real server ---

@pytest.fixture(scope="module")
def http_server(tmp_path_factory):
    """Identity, textlen (variable length) and two models with bad outputs, reached over HTTP."""
    repo = add_broken_models(prepare_repository(tmp_path_factory.mktemp("http_repo"), ["identity", "textlen"]))
    with EmbeddedServer(repo, tmp_path_factory.mktemp("http_logs") / "tritonserver.log") as srv:
        yield srv


@pytest.mark.triton
def test_an_open_loop_over_http_keeps_its_rate_and_both_latencies(http_server):
    plan = request_plan(http_server.url, "identity")
    ps = _run(_conn(http_server), "identity", plan, rate=300)
    assert ps.error_kinds == {}, ps.first_error
    s = summarize(ps.windows)
    assert s.client["achieved"] == pytest.approx(300, rel=0.03)
    assert s.throughput_infer_per_s == pytest.approx(300, rel=0.05)
    # from the schedule >= from the send, request by request, and the sample check ran
    for w in ps.windows:
        assert len(w.send_latencies_us) == len(w.latencies_us) > 100
        assert all(a >= b for a, b in zip(w.latencies_us, w.send_latencies_us))
        assert w.client["checked"] > 0
    assert 0 < s.latency_send_ms["p50"] <= s.latency_ms["p50"] < 50


@pytest.mark.triton
def test_a_closed_loop_over_http_checks_each_shape_of_a_mix(http_server):
    ctl = ServerControl(http_server.url)
    try:
        ctl.load("textlen")
        cfg = ctl.model_config("textlen")
    finally:
        ctl.close()
    spec = InputSpec(shapes={"INPUT0": (ShapeChoice((8,), 1.0), ShapeChoice((64,), 1.0))})
    plan = build_request(cfg, "textlen", inputs=spec)
    ps = _run(_conn(http_server), "textlen", plan, concurrency=4)
    assert ps.error_kinds == {}, ps.first_error
    shapes = {i for w in ps.windows for i in w.shape_index}
    assert shapes == {0, 1} and sum(w.completed for w in ps.windows) > 20
    # every distinct length was fully parsed at least once: the known-good lengths are per shape
    assert sum(w.client["checked"] for w in ps.windows) >= 2


@pytest.mark.triton
@pytest.mark.parametrize("model, problem", [("empty_out", "has 0 bytes"), ("short_out", "has 32 bytes")])
def test_bad_outputs_over_http_count_as_errors(http_server, model, problem):
    plan = request_plan(http_server.url, model)
    ps = _run(_conn(http_server), model, plan, concurrency=2)
    assert set(ps.error_kinds) == {"BAD_OUTPUT"} and problem in ps.first_error
    assert sum(w.completed for w in ps.windows) == 0


@pytest.mark.triton
def test_an_unknown_model_over_http_is_an_error_with_the_servers_reason(http_server):
    ctl = ServerControl(http_server.url)
    try:
        ctl.load("identity")
        plan = build_request(ctl.model_config("identity"), "no_such_model")  # requests name the model
    finally:
        ctl.close()
    ps = _run(_conn(http_server), "no_such_model", plan, rate=100)
    kinds = set(ps.error_kinds)
    assert kinds and all(k.startswith("HTTP_4") for k in kinds), ps.error_kinds
    assert "no_such_model" in ps.first_error


@pytest.mark.triton
def test_a_server_that_dies_under_http_load_ends_in_errors_not_a_hang(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["identity"])
    srv = EmbeddedServer(repo, tmp_path / "tritonserver.log", exit_timeout_s=1).start()
    try:
        plan = request_plan(srv.url, "identity")
        settings = LoadSettings(warmup_s=0.3, window_s=0.5, min_windows=4, max_windows=4, stability_pct=100,
                                drain_s=1.0)

        async def go():
            async with LoadClient(_conn(srv), "identity") as client:
                async def kill():
                    await asyncio.sleep(0.8)
                    srv.proc.kill()
                killer = asyncio.ensure_future(kill())
                ps = await client.closed_loop(plan, 4, settings)
                await killer
                return ps

        t0 = time.monotonic()
        ps = asyncio.run(go())
        assert time.monotonic() - t0 < 30
        assert "UNAVAILABLE" in ps.error_kinds, ps.error_kinds
        assert ps.windows[-1].completed == 0
    finally:
        srv.stop()
