"""`tuner measure` and the load generator against the real embedded Triton."""

from __future__ import annotations

import json
import math
import subprocess

import pytest
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from tuner.errors import LoadError
from tuner.load.request import DTYPES, build_request, check_response
from tuner.load.spec import LoadSettings
from tuner.measure import measure_model, summary_json

from .conftest import ROOT, TUNER, subprocess_env

pytestmark = pytest.mark.timeout(180)
FAST = LoadSettings(warmup_s=0.3, window_s=0.5, min_windows=3, max_windows=4, stability_pct=15)


@pytest.mark.triton
def test_measure_synthetic_embedded(tmp_path):
    result = measure_model("synthetic", tmp_path / "run", concurrencies=[1, 4], settings=FAST)
    assert [p.concurrency for p in result.points] == [1, 4]
    c1, c4 = (p.summary() for p in result.points)
    # 2 ms fixed + 0.5 ms per item: one request can't finish faster than 2.5 ms.
    assert c1.latency_ms["p50"] >= 2.5
    assert c1.throughput_infer_per_s < 1000 / 2.5
    assert c4.throughput_infer_per_s > c1.throughput_infer_per_s * 0.9
    assert c1.errors == 0 and c4.errors == 0
    assert c4.server_ms is not None and c4.server_ms["compute_infer"] >= 2.0
    # queue time grows with concurrency on a model with no dynamic batching
    assert c4.server_ms["queue"] > c1.server_ms["queue"]
    doc = summary_json(result)
    assert doc["schema"] == 1 and doc["model"] == "synthetic"
    assert set(doc["points"][0]["latency_ms"]) == {"p50", "p90", "p95", "p99"}
    # raw samples are stored: every window's latencies are in the results file
    lines = [json.loads(x) for x in result.results_path.read_text().splitlines()]
    points = [x for x in lines if x["type"] == "point"]
    assert len(points) == 2 and all(len(w["latencies_us"]) > 0 for w in points[0]["windows"])


@pytest.mark.triton
def test_measure_cli_json_remote(remote_server, tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(
        TUNER + ["measure", "synthetic", "--url", remote_server.url, "--concurrency", "1,2",
                 "--window-s", "0.4", "--warmup-s", "0.2", "--max-windows", "4", "--json", str(out),
                 "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert [p["concurrency"] for p in doc["points"]] == [1, 2]
    for p in doc["points"]:
        assert p["throughput_infer_per_s"] > 10
        assert 0 < p["latency_ms"]["p50"] <= p["latency_ms"]["p99"]
        assert set(p["server_ms"]) == {"queue", "compute_input", "compute_infer", "compute_output"}
    assert "infer/s" in proc.stdout


@pytest.mark.triton
def test_measure_unknown_model_lists_models(remote_server, tmp_path):
    proc = subprocess.run(
        TUNER + ["measure", "nope", "--url", remote_server.url, "--out", str(tmp_path / "r")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=subprocess_env())
    assert proc.returncode != 0
    assert "nope" in proc.stderr and "synthetic" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def _config_with_all_types() -> mc.ModelConfig:
    cfg = mc.ModelConfig(name="all", max_batch_size=4)
    for dt in DTYPES:
        cfg.input.add(name=f"in_{mc.DataType.Name(dt)}", data_type=dt, dims=[3, 2])
    cfg.output.add(name="out", data_type=mc.TYPE_FP32, dims=[5])
    return cfg


def test_inputs_for_every_data_type():
    cfg = _config_with_all_types()
    plan = build_request(cfg, "all")
    req = service_pb2.ModelInferRequest.FromString(plan.payload)
    assert len(req.inputs) == len(DTYPES) == len(req.raw_input_contents)
    for tensor, raw in zip(req.inputs, req.raw_input_contents):
        assert list(tensor.shape) == [1, 3, 2]
        wire = tensor.datatype
        size = {v[0]: v[1] for v in DTYPES.values()}[wire]
        if wire == "BYTES":
            # 6 elements, each a 4-byte length then its bytes
            assert raw[:4] == (8).to_bytes(4, "little") and len(raw) == 6 * 12
        else:
            assert len(raw) == 6 * size
    assert plan.expected_outputs == (("out", 5 * 4),)


def test_variable_dims_need_a_shape():
    cfg = mc.ModelConfig(name="v", max_batch_size=0)
    cfg.input.add(name="tokens", data_type=mc.TYPE_INT64, dims=[-1, 8])
    cfg.output.add(name="out", data_type=mc.TYPE_FP32, dims=[-1])
    with pytest.raises(LoadError, match="tokens"):
        build_request(cfg, "v")
    plan = build_request(cfg, "v", shapes={"tokens": [2, 8]})
    req = service_pb2.ModelInferRequest.FromString(plan.payload)
    assert list(req.inputs[0].shape) == [2, 8] and len(req.raw_input_contents[0]) == 16 * 8
    with pytest.raises(LoadError, match="unknown input"):
        build_request(cfg, "v", shapes={"nope": [1]})


def test_empty_or_missized_output_is_an_error():
    expected = (("OUTPUT0", 64),)
    good = service_pb2.ModelInferResponse(raw_output_contents=[b"\0" * 64])
    good.outputs.add(name="OUTPUT0", datatype="FP32", shape=[1, 16])
    assert check_response(good.SerializeToString(), expected) is None
    empty = service_pb2.ModelInferResponse(raw_output_contents=[b""])
    empty.outputs.add(name="OUTPUT0", datatype="FP32", shape=[1, 16])
    assert "0 bytes" in check_response(empty.SerializeToString(), expected)
    short = service_pb2.ModelInferResponse(raw_output_contents=[b"\0" * 60])
    short.outputs.add(name="OUTPUT0", datatype="FP32", shape=[1, 15])
    assert "60 bytes" in check_response(short.SerializeToString(), expected)
    missing = service_pb2.ModelInferResponse()
    assert "missing" in check_response(missing.SerializeToString(), expected)


@pytest.mark.triton
def test_percentiles_recomputable_from_stored_windows(tmp_path):
    from tuner.results.store import load_results

    result = measure_model("synthetic", tmp_path / "run", concurrencies=[2], settings=FAST)
    stored = load_results(tmp_path / "run")
    again = stored.points[0].summary()
    first = result.points[0].summary()
    assert math.isclose(again.latency_ms["p99"], first.latency_ms["p99"])
    assert math.isclose(again.throughput_infer_per_s, first.throughput_infer_per_s)
