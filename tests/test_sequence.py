"""Sequence (stateful) models: the sequence load, sequence-batcher candidates, and a sweep of the
bundled `accumulator` on the real server (a failing candidate, Ctrl-C, restore, resume)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from tritonclient.grpc import service_pb2

from tuner.config import (CandidateSpec, SequenceSpace, SequenceSpec, current_spec, diff_configs,
                          expand_sequence_specs, format_config, make_candidate, parse_config, read_config)
from tuner.errors import ConfigError, LoadError, ProfileError
from tuner.load.inputs import InputSpec
from tuner.load.request import build_request
from tuner.load.sequence import DEFAULT_LENGTH, flags_tail
from tuner.load.spec import LoadSettings
from tuner.profile import parse_profile
from tuner.results.records import CandidateRecord
from tuner.results.store import load_results, read_records
from tuner.search.strategy import make_strategy
from tuner.server.install import BUNDLED_MODELS_DIR

from .conftest import ROOT, TUNER, subprocess_env

CONFIGS = Path(__file__).parent / "configs"
ACCUMULATOR = BUNDLED_MODELS_DIR / "accumulator" / "config.pbtxt"


def sequence_profile(path: Path, *, url: str | None = None, config: str | None = None, extra_search: str = "",
                     sequence: str = 'strategy = ["direct", "oldest"]\nmax_candidate_sequences = [8]') -> Path:
    """A small, fast profile for the accumulator (windows as short as write_profile's)."""
    lines = ["[model]", 'name = "accumulator"', "sequence_length = 4",
             *([f'url = "{url}"'] if url else []), *([f'config = "{config}"'] if config else []),
             "[search]", "max_batch_size = [4, 8]", "instance_count = [1]", "concurrency = [1, 4]",
             "confirm = false", extra_search, "[search.sequence]", sequence,
             "[constraints]", 'latency_percentile = "p99"', "latency_budget_ms = 25.0",
             "[measurement]", "warmup_s = 0.3", "window_s = 0.3", "min_windows = 3", "max_windows = 4",
             "stability_pct = 15.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------ the load ---

def test_flags_ride_on_the_serialized_request():
    plan = build_request(read_config(ACCUMULATOR), "accumulator", inputs=InputSpec(sequence_length=5))
    assert plan.sequence is not None and plan.sequence.length == 5 and not plan.sequence.string_ids
    assert plan.mix["sequence_length"] == 5  # a check or compare must use the same sequences
    req = service_pb2.ModelInferRequest.FromString(plan.payload + flags_tail(2**47 + 3, True, False))
    assert req.model_name == "accumulator" and req.inputs[0].name == "VALUE"  # the pooled request is intact
    assert req.parameters["sequence_id"].int64_param == 2**47 + 3
    assert req.parameters["sequence_start"].bool_param and not req.parameters["sequence_end"].bool_param
    text = service_pb2.ModelInferRequest.FromString(plan.payload + flags_tail(9, False, True, string_ids=True))
    assert text.parameters["sequence_id"].string_param == "9" and text.parameters["sequence_end"].bool_param


def test_sequence_plan_only_for_stateful_models():
    assert build_request(read_config(ACCUMULATOR), "accumulator").sequence.length == DEFAULT_LENGTH
    synthetic = read_config(BUNDLED_MODELS_DIR / "synthetic" / "config.pbtxt")
    assert build_request(synthetic, "synthetic").sequence is None
    with pytest.raises(LoadError, match="no sequence_batching.*leave sequence_length"):
        build_request(synthetic, "synthetic", inputs=InputSpec(sequence_length=4))
    text_ids = read_config(ACCUMULATOR)
    text_ids.sequence_batching.control_input[3].control[0].data_type = 13  # TYPE_STRING
    assert build_request(text_ids, "accumulator").sequence.string_ids


# ---------------------------------------------------------- candidates ---

def test_sequence_candidates_and_their_ids():
    specs = expand_sequence_specs([4, 16], [1, 2], SequenceSpace(max_candidate_sequences=(8, 32),
                                                                 max_queue_delay_us=(0, 500)))
    ids = [s.candidate_id for s in specs]
    assert ids[:4] == ["seq-direct-mbs4-i1", "seq-direct-mbs4-i2", "seq-direct-mbs16-i1", "seq-direct-mbs16-i2"]
    assert "seq-oldest-mbs4-mcs8-qd500-pbsauto-i2" in ids
    assert not any("mbs16-mcs8" in i for i in ids)  # fewer candidate sequences than a batch: left out
    assert len(ids) == len(set(ids)) == 4 + 8 + 4
    for s in specs:  # the results file's form round-trips
        assert CandidateSpec.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    # a schema-1 spec (no "sequence") reads as before
    old = {"max_batch_size": 8, "max_queue_delay_us": 0, "preferred_batch_size": [], "instance_count": 1}
    assert CandidateSpec.from_dict(old) == CandidateSpec(8)


def test_rewrite_changes_only_the_sequence_batchers_tuned_fields():
    original = read_config(CONFIGS / "sequence_model.pbtxt")  # oldest, 64 candidates, preferred [8, 16]
    base = current_spec(original)
    assert base.candidate_id == "seq-oldest-mbs16-mcs64-qd1000-pbs8_16-i1" and not base.dynamic_batching
    direct = make_candidate(original, CandidateSpec(8, 0, (), 2, False, SequenceSpec("direct")))
    assert direct.sequence_batching.HasField("direct") and not direct.sequence_batching.HasField("oldest")
    oldest = make_candidate(original, CandidateSpec(4, 200, (4,), 1, False, SequenceSpec("oldest", 16)))
    assert (oldest.sequence_batching.oldest.max_candidate_sequences, oldest.max_batch_size) == (16, 4)
    for cand in (direct, oldest):
        assert not cand.HasField("dynamic_batching")
        for field in ("control_input", "max_sequence_idle_microseconds"):  # untouched
            assert getattr(cand.sequence_batching, field) == getattr(original.sequence_batching, field)
        for field in ("input", "output", "platform", "name"):
            assert getattr(cand, field) == getattr(original, field)
    # the bundled model's direct original stays as written when the strategy stays direct
    acc = read_config(ACCUMULATOR)
    diff = diff_configs(acc, make_candidate(acc, CandidateSpec(4, 0, (), 1, False, SequenceSpec("direct"))))
    assert [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")] == [
        "-max_batch_size: 1", "+max_batch_size: 4"]


@pytest.mark.parametrize("spec,why", [
    (CandidateSpec(8), r"uses sequence_batching.*\[search\.sequence\]"),
    (CandidateSpec(8, 500, (), 1, False, SequenceSpec("direct")), r"direct strategy takes no queue delay"),
    (CandidateSpec(8, 0, (), 1, False, SequenceSpec("oldest", 0)), r"max_candidate_sequences must be >= 1"),
    (CandidateSpec(8, 0, (16,), 1, False, SequenceSpec("oldest", 8)), r"preferred batch size 16"),
    (CandidateSpec(8, 0, (), 1, False, SequenceSpec("newest", 8)), r"strategy must be one of direct, oldest"),
])
def test_bad_sequence_candidates_are_refused(spec, why):
    with pytest.raises(ConfigError, match=why):
        make_candidate(read_config(ACCUMULATOR), spec)


def test_sequence_candidate_on_a_stateless_model_is_refused():
    cfg = parse_config('name: "m" backend: "python" max_batch_size: 8\n'
                       'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
                       'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n')
    with pytest.raises(ConfigError, match=r"no sequence_batching, so \[search\.sequence\] does not apply"):
        make_candidate(cfg, CandidateSpec(8, 0, (), 1, False, SequenceSpec("direct")))


# ------------------------------------------------------------- profile ---

def test_profile_sequence_table(tmp_path):
    p = parse_profile(sequence_profile(tmp_path / "p.toml").read_text(), tmp_path / "p.toml")
    assert p.search.strategy == "grid" and p.sequence_length == 4 and p.inputs.sequence_length == 4
    assert [s.candidate_id for s in p.search.specs()] == [
        "seq-direct-mbs4-i1", "seq-direct-mbs8-i1", "seq-oldest-mbs4-mcs8-qd0-pbsauto-i1",
        "seq-oldest-mbs8-mcs8-qd0-pbsauto-i1"]
    bundled = parse_profile((ROOT / "profiles" / "sequence.toml").read_text(), ROOT / "profiles" / "sequence.toml")
    assert bundled.model == "accumulator" and bundled.search.sequence is not None


@pytest.mark.parametrize("extra_search,sequence,why", [
    ('strategy = "smart"', 'strategy = "direct"', r"search\.strategy: smart search predicts the dynamic batcher"),
    ("max_queue_delay_us = [0]", 'strategy = "direct"', r"search\.max_queue_delay_us: applies to the dynamic "
                                                         r"batcher.*\[search\.sequence\] max_queue_delay_us"),
    ("", 'strategy = ["direct", "newest"]', r"search\.sequence\.strategy: must be direct and/or oldest"),
    ("", "max_candidate_sequences = [0]", r"search\.sequence\.max_candidate_sequences: values must be >= 1"),
    ("", "max_candidates = [8]", r"search\.sequence\.max_candidates: unknown key"),
])
def test_profile_sequence_mistakes_are_one_line(tmp_path, extra_search, sequence, why):
    path = sequence_profile(tmp_path / "p.toml", extra_search=extra_search, sequence=sequence)
    with pytest.raises(ProfileError, match=why):
        parse_profile(path.read_text(), path)


def test_smart_search_refuses_sequence_candidates(tmp_path):
    p = parse_profile(sequence_profile(tmp_path / "p.toml").read_text(), tmp_path / "p.toml")
    with pytest.raises(ProfileError, match="grid"):
        make_strategy("smart", p, [(s.candidate_id, s) for s in p.search.specs()])


# ------------------------------------------------- on the real server ---

@pytest.mark.triton
@pytest.mark.timeout(60)
def test_sequences_on_the_real_server(remote_accumulator, remote_control, tmp_path):
    """One slot (direct, max_batch_size 1): every sequence must start, end and free its slot, or the
    next waits out the 5 s idle timeout; the server refuses a sequence's request without its start."""
    from tuner.measure import measure_model

    remote_control.load("accumulator")
    settings = LoadSettings(warmup_s=0.3, window_s=0.3, min_windows=3, max_windows=3)
    result = measure_model("accumulator", tmp_path / "run", url=remote_accumulator.url, concurrencies=[1, 3],
                           settings=settings, inputs=InputSpec(sequence_length=3))
    for p in result.points:
        s = p.summary()
        assert p.status == "ok" and s.errors == 0, p.first_error
        assert s.throughput_infer_per_s > 50  # a slot held past a point's end would stall the next point
        assert s.latency_ms["p99"] < 1000
    assert result.input_mix["sequence_length"] == 3
    # three sequences share one slot: the ones waiting for it show in the tail, not as errors
    c1, c3 = (p.summary() for p in result.points)
    assert c3.latency_ms["p99"] > c1.latency_ms["p99"]


def _wait_for(path: Path, proc: subprocess.Popen, ok, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and ok(list(read_records(path))):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"nothing to wait for in {path}")


@pytest.mark.triton
@pytest.mark.quiet  # the recommendation 1.3x the one-slot baseline: beside two other tests it once was not
@pytest.mark.timeout(120)
def test_sequence_sweep_fault_interrupt_restore_resume(remote_accumulator, remote_control, tmp_path):
    """The accumulator swept on a remote server: a candidate whose load fails is recorded and the sweep
    goes on; Ctrl-C puts the original config back; --resume finishes without measuring a stored point
    again; the recommendation beats the one-slot baseline and keeps every untuned field."""
    remote_control.load("accumulator")
    original = format_config(remote_control.model_config("accumulator"))
    limited = tmp_path / "config.pbtxt"  # as if built for at most 4 items: the max_batch_size 8 candidates fail
    limited.write_text(ACCUMULATOR.read_text()
                       + 'parameters: { key: "max_supported_batch_size" value: { string_value: "4" } }\n')
    profile = sequence_profile(tmp_path / "p.toml", url=remote_accumulator.url, config=str(limited),
                               extra_search='strategy = "grid"')
    run = tmp_path / "run"
    proc = subprocess.Popen(TUNER + ["sweep", str(profile), "--out", str(run)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        _wait_for(run / "results.jsonl", proc,
                  lambda recs: any(r["type"] == "point" and r["candidate_id"] != "baseline" for r in recs))
        assert format_config(remote_control.model_config("accumulator")) != original
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err, err
    assert format_config(remote_control.model_config("accumulator")) == original
    before = Counter((r["candidate_id"], r["concurrency"]) for r in read_records(run / "results.jsonl")
                     if r["type"] == "point" and r["status"] == "ok")

    done = subprocess.run(TUNER + ["sweep", "--resume", str(run)], cwd=ROOT, capture_output=True, text=True,
                          timeout=90, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert format_config(remote_control.model_config("accumulator")) == original
    after = Counter((r["candidate_id"], r["concurrency"]) for r in read_records(run / "results.jsonl")
                    if r["type"] == "point")
    assert all(after[key] == 1 for key in before)  # nothing stored was measured again
    res = load_results(run / "results.jsonl")
    failed = {cid: c.reason for cid, c in res.candidates.items() if c.status == "failed"}
    assert set(failed) == {"seq-direct-mbs8-i1", "seq-oldest-mbs8-mcs8-qd0-pbsauto-i1"}
    assert all("maximum batch size 4" in why for why in failed.values()), failed
    assert {"seq-direct-mbs4-i1", "seq-oldest-mbs4-mcs8-qd0-pbsauto-i1"} <= {cid for cid, _ in after}
    assert isinstance(res.candidates["seq-direct-mbs4-i1"], CandidateRecord)

    summary = json.loads((run / "summary.json").read_text())
    rec, base = summary["recommended"], summary["baseline"]
    assert rec["candidate_id"].startswith("seq-") and rec["sequence_batching"]["strategy"] in ("direct", "oldest")
    assert rec["throughput_infer_per_s"] > 1.3 * base["throughput_infer_per_s"]  # one slot is poor by design
    chosen = read_config(run / "recommended" / "accumulator" / "config.pbtxt")
    assert chosen.max_batch_size == 4
    assert chosen.sequence_batching.control_input == read_config(limited).sequence_batching.control_input
    assert chosen.parameters == read_config(limited).parameters
    assert (run / "recommended" / "accumulator" / "config.diff").read_text().strip()


def test_init_writes_a_sequence_profile_for_a_stateful_model(tmp_path):
    from tuner.profile_init import profile_text

    text = profile_text(read_config(CONFIGS / "sequence_model.pbtxt"), "streaming_asr")
    p = parse_profile(text, tmp_path / "streaming_asr.toml")
    assert p.search.strategy == "grid" and p.sequence_length == 8
    assert "[search.sequence]" in text and "preferred_batch_size" not in text.split("[search.sequence]")[0]
    assert 64 in p.search.sequence.max_candidate_sequences  # the config's own value is among those tried
    assert all(s.sequence is not None for s in p.search.specs())
