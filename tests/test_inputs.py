"""Production-like load: input data, shape mixes, client batches, traffic shapes, results as data.

Pure tests parse formats and build requests from made-up configs; the ones
marked `triton` run against one real server started by `tuner serve`
(module-scoped, short windows) and never mock it or gRPC.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import signal
import subprocess
from collections import Counter

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from tuner.config import CandidateSpec
from tuner.errors import LoadError, ProfileError
from tuner.load.inputs import InputSpec, ShapeChoice, parse_shape_mix, parse_shape_option
from tuner.load.request import ResponseChecker, build_request
from tuner.load.traffic import IntervalSchedule, RateSchedule, Traffic, parse_rate_range, rate_segments, read_intervals
from tuner.profile import parse_profile
from tuner.results.environment import differences
from tuner.results.frame import CSV_COLUMNS, POINT_COLUMNS, export_csv, load_frame, shape_latencies
from tuner.results.records import CandidateRecord, Measurement, RunRecord
from tuner.results.samples import WindowSample
from tuner.results.stats import merge_windows, summarize
from tuner.results.store import ResultsFile

from .conftest import ROOT, TUNER, subprocess_env

pytestmark = pytest.mark.timeout(180)


def _textlen_cfg(max_batch_size: int = 8) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name="textlen", max_batch_size=max_batch_size)
    cfg.input.add(name="INPUT0", data_type=mc.TYPE_INT32, dims=[-1])
    cfg.output.add(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[-1])
    return cfg


def _write(tmp_path, doc, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def _inputs(req: bytes) -> list[tuple[str, list[int], bytes]]:
    r = service_pb2.ModelInferRequest.FromString(req)
    return [(t.name, list(t.shape), raw) for t, raw in zip(r.inputs, r.raw_input_contents)]


# ------------------------------------------------------------ input data ---

def test_perf_analyzer_format_every_content_form(tmp_path):
    b64 = base64.b64encode(np.arange(5, dtype=np.int32).tobytes()).decode()
    doc = {"data": [
        {"INPUT0": [1, 2, 3, 4]},                                         # flat values, shape inferred
        {"INPUT0": {"content": [1, 2, 3, 4, 5, 6], "shape": [6]}},
        {"INPUT0": {"b64": b64}},                                         # 5 INT32s
        {"INPUT0": {"content": {"b64": b64}, "shape": [5]}},
    ], "validation_data": [{"OUTPUT0": [0]}]}
    plan = build_request(_textlen_cfg(), "textlen", inputs=InputSpec(data_path=_write(tmp_path, doc)))
    assert len(plan.payloads) == 4 and plan.order == (0, 1, 2, 3)  # used in order, cycled
    shapes = [_inputs(p)[0][1] for p in plan.payloads]
    assert shapes == [[1, 4], [1, 6], [1, 5], [1, 5]]
    assert np.frombuffer(_inputs(plan.payloads[0])[0][2], dtype=np.int32).tolist() == [1, 2, 3, 4]
    assert np.frombuffer(_inputs(plan.payloads[2])[0][2], dtype=np.int32).tolist() == [0, 1, 2, 3, 4]
    # expectations follow each request's shape: OUTPUT0 [-1] is declared like INPUT0 [-1]
    assert [e[0][1] for e in plan.expected] == [16, 24, 20, 20]
    mix = plan.mix
    assert mix["source"] == "file" and mix["entries"] == 4 and len(mix["data_sha256"]) == 64
    assert [s["shape"] for s in mix["shapes"]] == ["INPUT0=[4]", "INPUT0=[6]", "INPUT0=[5]"]
    assert plan.shape_of == (0, 1, 2, 2) and mix["shapes"][2]["weight"] == 0.5


def test_strings_feed_bytes_inputs_and_b64_keeps_the_wire_form(tmp_path):
    cfg = mc.ModelConfig(name="s", max_batch_size=4)
    cfg.input.add(name="TEXT", data_type=mc.TYPE_STRING, dims=[-1])
    cfg.output.add(name="OUT", data_type=mc.TYPE_FP32, dims=[1])
    wire = b"".join(len(x).to_bytes(4, "little") + x for x in (b"ab", b"cde"))
    doc = {"data": [{"TEXT": ["hello", "wörld"]}, {"TEXT": {"b64": base64.b64encode(wire).decode()}}]}
    plan = build_request(cfg, "s", inputs=InputSpec(data_path=_write(tmp_path, doc)))
    (name, shape, raw), = _inputs(plan.payloads[0])
    assert shape == [1, 2] and raw == b"\x05\0\0\0hello" + len("wörld".encode()).to_bytes(4, "little") + "wörld".encode()
    assert _inputs(plan.payloads[1])[0][1] == [1, 2]
    assert plan.expected[0] == (("OUT", 4),)


def test_numpy_folders(tmp_path):
    npz = tmp_path / "npz"
    npz.mkdir()
    np.savez(npz / "a.npz", INPUT0=np.arange(3, dtype=np.int32))
    np.savez(npz / "b.npz", INPUT0=np.arange(7, dtype=np.int32))
    plan = build_request(_textlen_cfg(), "textlen", inputs=InputSpec(data_path=npz))
    assert [_inputs(p)[0][1] for p in plan.payloads] == [[1, 3], [1, 7]]
    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "INPUT0.npy", np.arange(12, dtype=np.int16).reshape(3, 4))  # int16 -> INT32: exact
    plan = build_request(_textlen_cfg(), "textlen", inputs=InputSpec(data_path=npy))
    assert len(plan.payloads) == 3 and plan.shapes == 1 and plan.mix["shapes"][0]["shape"] == "INPUT0=[4]"
    np.save(npy / "INPUT0.npy", np.zeros((2, 4), dtype=np.float64))
    with pytest.raises(LoadError, match="float64 and the model takes INT32; save it as int32"):
        build_request(_textlen_cfg(), "textlen", inputs=InputSpec(data_path=npy))


@pytest.mark.parametrize("doc, match", [
    ("{not json", "not valid JSON"),
    ({"rows": []}, 'needs a non-empty "data" list'),
    ({"data": [[{"INPUT0": [1]}]]}, "sequence streams are not supported"),
    ({"data": [{"INPUT9": [1]}]}, r"unknown input\(s\) \['INPUT9'\]; the model's inputs are \['INPUT0'\]"),
    ({"data": [{"INPUT0": ["a", "b"]}]}, "takes INT32; give numbers, got strings"),
    ({"data": [{"INPUT0": [1.5, 2]}]}, r"INT32 \(integers\); the data has fractions"),
    ({"data": [{"INPUT0": {"content": [1, 2, 3], "shape": [4]}}]}, r"3 elements for shape \[4\]"),
    ({"data": [{"INPUT0": {"content": [1, 2, 3, 4], "shape": [2, 2]}}]}, r"does not fit the model's dims \[-1\]"),
    ({"data": [{"INPUT0": {"b64": "@@"}}]}, "not valid base64"),
    ({"data": [{"INPUT0": {"b64": "AAA="}}]}, "not a whole number of INT32 elements"),
    ({"data": [{"INPUT0": [[1, 2], [3]]}]}, "unequal lengths"),
])
def test_bad_input_data_is_one_line_naming_cause_and_fix(tmp_path, doc, match):
    with pytest.raises(LoadError, match=match) as err:
        build_request(_textlen_cfg(), "textlen", inputs=InputSpec(data_path=_write(tmp_path, doc)))
    assert "\n" not in str(err.value) and "data.json" in str(err.value)


def test_missing_input_and_batches_that_would_mix_shapes(tmp_path):
    cfg = _textlen_cfg()
    cfg.input.add(name="MASK", data_type=mc.TYPE_INT32, dims=[-1])
    doc = {"data": [{"INPUT0": [1, 2], "MASK": [1, 1]}, {"INPUT0": [1, 2, 3]}]}
    with pytest.raises(LoadError, match="entry 2 has no 'MASK'"):
        build_request(cfg, "m", inputs=InputSpec(data_path=_write(tmp_path, doc)))
    doc = {"data": [{"INPUT0": [1, 2]}, {"INPUT0": [3, 4]}, {"INPUT0": [5, 6, 7]}, {"INPUT0": [8, 9, 0]}]}
    plan = build_request(_textlen_cfg(), "t", inputs=InputSpec(data_path=_write(tmp_path, doc), batch_size=2))
    assert [_inputs(p)[0][1] for p in plan.payloads] == [[2, 2], [2, 3]]
    assert np.frombuffer(_inputs(plan.payloads[1])[0][2], dtype=np.int32).tolist() == [5, 6, 7, 8, 9, 0]
    assert plan.expected == ((("OUTPUT0", 16),), (("OUTPUT0", 24),)) and plan.batch_size == 2
    with pytest.raises(LoadError, match="form one request \\(batch size 3\\) but 'INPUT0' has shapes"):
        build_request(_textlen_cfg(), "t", inputs=InputSpec(data_path=_write(tmp_path, doc), batch_size=3))


def test_batch_size_is_checked_against_the_model():
    with pytest.raises(LoadError, match="above 'textlen''s max_batch_size 8"):
        build_request(_textlen_cfg(8), "textlen", shapes={"INPUT0": [4]}, batch_size=16)
    with pytest.raises(LoadError, match="max_batch_size 0: use batch size 1"):
        build_request(_textlen_cfg(0), "textlen", shapes={"INPUT0": [4]}, batch_size=2)


# ----------------------------------------------------------- shape mixes ---

def test_shape_mix_parsing_old_and_weighted_forms():
    assert parse_shape_mix([128]) == (ShapeChoice((128,), 1.0),)
    assert parse_shape_mix([{"dims": [128], "weight": 2}, {"dims": [256]}]) == (
        ShapeChoice((128,), 2.0), ShapeChoice((256,), 1.0))
    for bad, match in [([0], "positive integers"), ([{"dims": [1], "weight": 0}], "weight must be"),
                       ([{"dim": [1]}], "must be {dims"), ([{"dims": [1]}, {"dims": [1]}], "listed twice")]:
        with pytest.raises(ValueError, match=match):
            parse_shape_mix(bad)
    assert parse_shape_option(["INPUT0=128@2", "INPUT0=256", "B=3,4"]) == {
        "INPUT0": (ShapeChoice((128,), 2.0), ShapeChoice((256,), 1.0)), "B": (ShapeChoice((3, 4), 1.0),)}
    with pytest.raises(ValueError, match="NAME=D1,D2@WEIGHT"):
        parse_shape_option(["INPUT0=12x"])


def test_profile_takes_shape_mixes_input_data_and_batch_size(tmp_path):
    (tmp_path / "d.json").write_text('{"data": [{"INPUT0": [1]}]}')
    text = ('[model]\nname = "textlen"\ninput_data = "d.json"\nbatch_size = 2\n[model.shapes]\n'
            'INPUT0 = [{dims = [64], weight = 3}, {dims = [128], weight = 1}]\nOTHER = [4, 4]\n')
    p = parse_profile(text, tmp_path / "t.toml")
    assert p.inputs.data_path == tmp_path / "d.json" and p.inputs.batch_size == 2
    assert p.shapes["INPUT0"] == (ShapeChoice((64,), 3.0), ShapeChoice((128,), 1.0))
    assert p.shapes["OTHER"] == (ShapeChoice((4, 4), 1.0),)
    with pytest.raises(ProfileError, match=r"model.shapes.INPUT0: shape 1: weight must be a number > 0"):
        parse_profile('[model]\nname = "m"\n[model.shapes]\nINPUT0 = [{dims = [4], weight = -1}]\n', "p.toml")
    with pytest.raises(ProfileError, match="model.input_data: .*nope.json does not exist"):
        parse_profile('[model]\nname = "m"\ninput_data = "nope.json"\n', tmp_path / "p.toml")
    with pytest.raises(ProfileError, match="model.batch_size: must be >= 1"):
        parse_profile('[model]\nname = "m"\nbatch_size = 0\n', "p.toml")


def test_shape_mix_draw_is_seeded_and_follows_the_weights():
    shapes = {"INPUT0": [{"dims": [64], "weight": 3}, {"dims": [128], "weight": 2}, {"dims": [256], "weight": 1}]}
    a = build_request(_textlen_cfg(), "textlen", shapes=shapes)
    b = build_request(_textlen_cfg(), "textlen", shapes=shapes)
    assert a.order == b.order and a.payloads == b.payloads  # deterministic
    assert build_request(_textlen_cfg(), "textlen", shapes=shapes, seed=1).order != a.order
    counts = Counter(a.shape_of[p] for p in a.order)
    assert [round(counts[i] / len(a.order), 2) for i in range(3)] == pytest.approx([0.5, 0.33, 0.17], abs=0.02)
    assert [s["weight"] for s in a.mix["shapes"]] == pytest.approx([0.5, 1 / 3, 1 / 6], abs=1e-4)
    assert [e[0][1] for e in a.expected] == [64 * 4, 128 * 4, 256 * 4]
    with pytest.raises(LoadError, match=r"shape of input 'INPUT0': shape \[4, 4\] does not fit"):
        build_request(_textlen_cfg(), "textlen", shapes={"INPUT0": [4, 4]})


def test_checker_holds_each_response_to_its_own_request():
    def resp(nbytes: int) -> bytes:
        r = service_pb2.ModelInferResponse(raw_output_contents=[b"\0" * nbytes])
        r.outputs.add(name="OUTPUT0", datatype="FP32", shape=[1, nbytes // 4])
        return r.SerializeToString()

    check = ResponseChecker((), every=1000, per_payload=((("OUTPUT0", 256),), (("OUTPUT0", 512),)))
    assert check(resp(256), 0) is None and check(resp(512), 1) is None
    for _ in range(50):  # known-good lengths pass by length, per payload
        assert check(resp(256), 0) is None
    assert "256 bytes, expected 512" in check(resp(256), 1)  # good for payload 0, wrong for payload 1


# ---------------------------------------------------------- traffic shapes ---

def test_intervals_file_and_rate_ranges(tmp_path):
    f = tmp_path / "iv.txt"
    f.write_text("# bursty\n100000\n200000\n\n500000\n")
    t = read_intervals(f)
    assert t.intervals_us == (100000, 200000, 500000) and t.mean_rate == pytest.approx(3 / 0.8)
    sched = IntervalSchedule(0, t.intervals_us)
    assert [sched.at(i) / 1e9 for i in range(6)] == pytest.approx([0.1, 0.3, 0.8, 0.9, 1.1, 1.6])
    assert sched.count_before(int(1.0e9)) == 4
    f.write_text("100\nabc\n")
    with pytest.raises(LoadError, match=r"iv.txt:2: 'abc' is not a whole number of microseconds"):
        read_intervals(f)
    assert parse_rate_range("100:1000:100") == tuple(float(r) for r in range(100, 1001, 100))
    assert parse_rate_range("100,200") is None
    for bad in ("0:10:1", "10:5:1", "1:2", "1:100000:1"):
        with pytest.raises(ValueError):
            parse_rate_range(bad)


@pytest.mark.parametrize("kind, poisson", [("step", False), ("ramp", False), ("step", True)])
def test_step_and_ramp_schedules_and_their_split_over_processes(kind, poisson):
    t = Traffic(kind, rates=(100.0, 200.0, 300.0))
    segs = rate_segments(t, 1_000_000_000, 1_000_000_000)
    one = RateSchedule(0, segs, poisson, seed=7)
    counts = [one.count_before(int(k * 1e9)) for k in range(5)]
    per_window = np.diff(counts)[1:]
    expected = [100, 200, 300] if kind == "step" else [133, 200, 267]
    assert per_window == pytest.approx(expected, rel=0.25 if poisson else 0.01)
    # three processes together keep exactly the one global schedule
    parts = [RateSchedule(0, segs, poisson, seed=7, phase=i, stride=3) for i in range(3)]
    assert [sum(p.count_before(int(k * 1e9)) for p in parts) for k in range(5)] == counts
    merged = sorted(p.at(i) for p in parts for i in range(50))[:100]
    assert merged == [one.at(i) for i in range(100)]


# ------------------------------------------------------ results as data ---

def _window(lats, shapes=None, batch=None, start=0.0) -> WindowSample:
    return WindowSample(start_s=start, duration_s=1.0, latencies_us=list(lats), shape_index=shapes,
                        batch_size=batch)


def test_throughput_counts_items_and_windows_keep_shapes():
    w = _window([1000, 2000, 3000, 4000], shapes=[0, 1, 0, 1], batch=4)
    s = summarize([w], 1)
    assert s.throughput_infer_per_s == 16 and s.throughput_requests_per_s == 4
    assert WindowSample.from_dict(w.to_dict()) == w
    merged = merge_windows([w, _window([5000], shapes=[1], batch=4)])
    assert merged.shape_index == [0, 1, 0, 1, 1] and merged.batch_size == 4
    mix = {"shapes": [{"shape": "INPUT0=[64]", "weight": 0.5}, {"shape": "INPUT0=[128]", "weight": 0.5}]}
    per = shape_latencies([merged], mix)
    assert [r["requests"] for r in per] == [2, 3] and per[1]["p50_ms"] == 4.0
    assert shape_latencies([_window([1, 2])], {"shapes": mix["shapes"][:1]}) is None


def _run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    f = ResultsFile(run / "results.jsonl")
    f.append(RunRecord(command="sweep", model="m", environment={"input_mix": {"source": "random"}}))
    f.append(CandidateRecord(spec=CandidateSpec(8, 0), status="loaded", is_baseline=True))
    for c, lat in ((1, 2000), (4, 5000)):
        f.append(Measurement("baseline", c, [_window([lat] * 100, start=k) for k in range(3)], True))
    return run


def test_export_writes_perf_analyzer_columns_and_load_frame(tmp_path):
    run = _run_folder(tmp_path)
    out = tmp_path / "pa.csv"
    assert export_csv(run, out) == 2
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0])[:len(CSV_COLUMNS)] == CSV_COLUMNS
    assert [r["Concurrency"] for r in rows] == ["1", "4"]
    assert float(rows[0]["Inferences/Second"]) == 100 and rows[1]["p99 latency"] == "5000"
    assert rows[0]["Candidate"] == "baseline"
    df = load_frame(run)
    assert list(df.columns) == POINT_COLUMNS and df["p50_ms"].tolist() == [2.0, 5.0]
    assert len(load_frame(run, windows=True)) == 6
    with pytest.raises(ValueError, match="no points of candidate 'x'"):
        export_csv(run, out, "x")


def test_a_baseline_of_another_input_mix_does_not_compare():
    mix = {"source": "random", "batch_size": 1, "shapes": [{"shape": "INPUT0=[64]", "weight": 1.0}]}
    assert differences({"input_mix": mix}, {"input_mix": dict(mix)})[0] == []
    for other in ({**mix, "batch_size": 4}, {**mix, "source": "file", "data_sha256": "ab" * 32},
                  {**mix, "shapes": [{"shape": "INPUT0=[64]", "weight": 0.5},
                                     {"shape": "INPUT0=[128]", "weight": 0.5}]}):
        (line,) = differences({"input_mix": mix}, {"input_mix": other})[0]
        assert line.startswith("input_mix: baseline (random; INPUT0=[64] 100%; batch 1), current (")
    _, unknown, _ = differences({}, {"input_mix": mix})
    assert "input_mix: not recorded in the baseline results" in unknown


# ----------------------------------------------- on a real server (`tuner serve`) ---

FAST = ["--window-s", "0.3", "--warmup-s", "0.3", "--max-windows", "3"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`tuner serve` with the bundled textlen and identity models: a Triton tuner reaches by URL."""
    from tuner.server.install import prepare_repository

    folder = tmp_path_factory.mktemp("served")
    repo = prepare_repository(folder / "repo", ["textlen", "identity"])
    proc = subprocess.Popen(TUNER + ["serve", "--model-repository", str(repo), "--load", "textlen,identity",
                                     "--log", str(folder / "ts.log")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        line = proc.stdout.readline()
        m = re.search(r"grpc (127\.0\.0\.1:\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield m.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _tuner(*args, timeout=120):
    return subprocess.run(TUNER + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env())


@pytest.mark.triton
def test_measure_with_a_two_shape_data_file_checks_every_response(served, tmp_path):
    doc = {"data": [{"INPUT0": {"content": list(range(32)), "shape": [32]}},
                    {"INPUT0": {"content": list(range(96)), "shape": [96]}},
                    {"INPUT0": list(range(32))}]}
    data, out, run = _write(tmp_path, doc), tmp_path / "m.json", tmp_path / "run"
    proc = _tuner("measure", "textlen", "--url", served, "--input-data", data, "--concurrency", "1,4",
                  *FAST, "--json", out, "--out", run)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    mix = doc["input_mix"]
    assert mix["source"] == "file" and mix["data_file"] == "data.json" and mix["entries"] == 3
    assert [(s["shape"], round(s["weight"], 3)) for s in mix["shapes"]] == [("INPUT0=[32]", 0.667),
                                                                             ("INPUT0=[96]", 0.333)]
    c1, c4 = doc["points"]
    for p in (c1, c4):
        assert p["errors"] == 0 and p["status"] == "ok" and p["throughput_infer_per_s"] > 10
        shares = [s["share"] for s in p["latency_by_shape"]]
        assert shares == pytest.approx([2 / 3, 1 / 3], abs=0.05)
    # at concurrency 1 the stream parses every response; at 4, unary calls are checked by length per payload
    assert c1["client"]["checked"] >= sum(s["requests"] for s in c1["latency_by_shape"])
    assert "latency per request shape" in proc.stdout and "INPUT0=[96]" in proc.stdout
    # the run as data, and as perf_analyzer's CSV
    csv_out = tmp_path / "pa.csv"
    proc = _tuner("export", run, "--csv", csv_out)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(csv_out.open()))
    assert list(rows[0])[:len(CSV_COLUMNS)] == CSV_COLUMNS and [r["Concurrency"] for r in rows] == ["1", "4"]
    assert int(rows[0]["p50 latency"]) > 3000  # textlen: 3 ms per execution at least, in microseconds


@pytest.mark.triton
def test_shape_mix_with_client_batches(served, tmp_path):
    from tuner.measure import measure_model
    from tuner.load.spec import LoadSettings
    from tuner.server.connection import Connection

    shapes = {"INPUT0": (ShapeChoice((16,), 3.0), ShapeChoice((48,), 1.0))}
    settings = LoadSettings(warmup_s=0.3, window_s=0.3, min_windows=3, max_windows=3, stability_pct=50)
    res = measure_model("textlen", tmp_path / "run", url=Connection(served), concurrencies=[2], settings=settings,
                        inputs=InputSpec(shapes=shapes, batch_size=4))
    (p,) = res.points
    s = p.summary()
    assert s.errors == 0 and s.throughput_infer_per_s == pytest.approx(4 * s.throughput_requests_per_s)
    assert s.avg_batch_size >= 4  # the server executed batches of at least the client's 4 items
    assert res.input_mix["batch_size"] == 4 and all(w.batch_size == 4 for w in p.windows)
    per = shape_latencies(p.windows, res.input_mix, 3)
    assert [r["shape"] for r in per] == ["INPUT0=[16]", "INPUT0=[48]"]
    assert per[0]["share"] == pytest.approx(0.75, abs=0.1)


@pytest.mark.triton
def test_request_intervals_replay_keeps_its_schedule(served, tmp_path):
    iv = tmp_path / "iv.txt"
    iv.write_text("1000\n4000\n2000\n1000\n")  # bursty, 2 ms on average: 500/s
    out = tmp_path / "i.json"
    proc = _tuner("measure", "identity", "--url", served, "--request-intervals", iv, *FAST, "--json", out,
                  "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    (p,) = json.loads(out.read_text())["points"]
    c = p["client"]
    assert p["arrivals"] == "intervals" and p["request_rate"] == pytest.approx(500)
    assert c["sent"] == pytest.approx(0.9 * 500, rel=0.02)  # the 3 windows (0.9 s at 500/s) kept to the schedule
    assert c["achieved"] == pytest.approx(c["target"], rel=0.02)
    assert p["lateness_ms"]["p50"] < 1.0 and p["errors"] == 0
    assert "coordinated-omission safe" in proc.stdout


@pytest.mark.triton
def test_step_schedule_one_point_per_window(served, tmp_path):
    out = tmp_path / "s.json"
    proc = _tuner("measure", "identity", "--url", served, "--request-rate", "100:300:100", *FAST, "--json", out,
                  "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stderr
    points = json.loads(out.read_text())["points"]
    assert [p["request_rate"] for p in points] == [100, 200, 300]
    assert all(p["arrivals"] == "step constant" for p in points)
    for p in points:
        assert p["client"]["achieved"] == pytest.approx(p["request_rate"], rel=0.05)
        assert p["latency_send_ms"] is not None and p["lateness_ms"] is not None


@pytest.mark.triton
def test_check_refuses_a_baseline_of_another_mix(served, tmp_path):
    run = tmp_path / "base"
    proc = _tuner("measure", "textlen", "--url", served, "--shape", "INPUT0=32", "--concurrency", "1", *FAST,
                  "--out", run)
    assert proc.returncode == 0, proc.stderr
    prof = tmp_path / "t.toml"
    prof.write_text(f'[model]\nname = "textlen"\nurl = "{served}"\n[model.shapes]\nINPUT0 = [64]\n')
    proc = _tuner("check", prof, "--baseline", run, "--out", tmp_path / "chk")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "input_mix: baseline (random; INPUT0=[32] 100%; batch 1), current (random; INPUT0=[64] 100%" in proc.stderr
