"""Several models tuned together: an ensemble's steps and a BLS model's callees (issue 15).

Pure tests for the joint candidates and the coordinate-descent search; the rest sweep the
bundled `pipeline` ensemble and `bls` model on the real (remote-style) embedded Triton.
"""

from __future__ import annotations

import json
import signal
from collections import Counter

import pytest

from tuner.config import CandidateSpec, JointSpec, check_step_batch, ensemble_steps, format_config, read_config
from tuner.errors import ConfigError
from tuner.profile import load_profile
from tuner.results.records import CandidateRecord, Measurement
from tuner.results.samples import ServerDelta, WindowSample
from tuner.results.store import read_records
from tuner.search.joint import JointStrategy, step_times_ms
from tuner.server.install import BUNDLED_MODELS_DIR
from tuner.sweep import run_sweep

from .conftest import interrupt_sweep, write_profile

pytestmark = pytest.mark.timeout(240)
STEPS = ["pipeline_pre", "pipeline_model", "pipeline_post"]


def test_joint_spec_names_only_what_changes_and_round_trips():
    a, b = CandidateSpec(8, 0, (), 2), CandidateSpec(16, 500, (), 1)
    original = CandidateSpec(16, 0, (), 1, dynamic_batching=False)
    j = JointSpec().with_step("m2", b, original, ["m1", "m2"]).with_step("m1", a, original, ["m1", "m2"])
    assert j.candidate_id == "m1:mbs8-qd0-pbsauto-i2+m2:mbs16-qd500-pbsauto-i1"  # the run's model order
    assert j.with_step("m1", original, original, ["m1", "m2"]).candidate_id == "m2:mbs16-qd500-pbsauto-i1"
    assert JointSpec.from_dict(json.loads(json.dumps(j.to_dict()))) == j
    rec = CandidateRecord.from_record(CandidateRecord(j, "loaded").to_record())
    assert rec.spec == j and rec.candidate_id == j.candidate_id


def test_ensemble_steps_and_the_step_batch_rule():
    ens = read_config(BUNDLED_MODELS_DIR / "pipeline" / "config.pbtxt")
    assert ensemble_steps(ens) == STEPS
    assert ensemble_steps(read_config(BUNDLED_MODELS_DIR / "synthetic" / "config.pbtxt")) == []
    check_step_batch(ens, "pipeline_model", CandidateSpec(8))
    with pytest.raises(ConfigError, match="below the max_batch_size 8 of ensemble 'pipeline'.*>= 8"):
        check_step_batch(ens, "pipeline_model", CandidateSpec(4))


def _point(cid: str, level: int, infer_per_s: float, p99_ms: float, step_ms: dict[str, float]) -> Measurement:
    """A made-up point: 3 windows of 1 s, `infer_per_s` requests each, every step's time per request."""
    n = int(infer_per_s)
    windows = [WindowSample(start_s=float(i), duration_s=1.0, latencies_us=[int(p99_ms * 1000)] * n,
                            steps={m: ServerDelta(success_count=n, compute_infer_ns=int(ms * 1e6) * n)
                                   for m, ms in step_ms.items()}) for i in range(3)]
    return Measurement(candidate_id=cid, concurrency=level, windows=windows, stable=True)


def test_joint_search_tunes_the_limiting_step_first_and_skips_what_does_not_limit(tmp_path):
    prof = load_profile(str(write_profile(tmp_path / "p.toml", model="ens", concurrency=(1, 8), budget_ms=50.0)))
    nodb = CandidateSpec(8, dynamic_batching=False)
    option = CandidateSpec(8, 0, (), 2)
    s = JointStrategy(prof, ["a", "b", "c"], {"a": nodb, "b": nodb, "c": nodb}, {m: [option] for m in "abc"})
    slow_b = {"a": 2.0, "b": 9.0, "c": 0.1}
    steps = []
    while (step := s.next_step()) is not None:
        steps.append(step)
        if step.kind != "measure":
            continue
        tput = {"baseline": 100, "b:mbs8-qd0-pbsauto-i2": 300}.get(step.candidate_id, 310)
        times = slow_b if step.candidate_id == "baseline" else {"a": 6.0, "b": 3.0, "c": 0.1}
        s.observe(_point(step.candidate_id, step.concurrency, tput * step.concurrency ** 0.1, 10.0, times))
    measured = list(dict.fromkeys(st.candidate_id for st in steps if st.kind == "measure"))
    # b limits the baseline; with b batched, a limits; c (0.1 ms vs 6 ms) is skipped with the reason
    assert measured == ["baseline", "b:mbs8-qd0-pbsauto-i2", "a:mbs8-qd0-pbsauto-i2+b:mbs8-qd0-pbsauto-i2"]
    skips = [st for st in steps if st.kind == "skip"]
    assert skips and all(st.candidate_id.endswith("c:mbs8-qd0-pbsauto-i2") for st in skips)
    assert "c is not where time goes: 0.10 ms" in skips[0].reason
    assert step_times_ms(_point("x", 1, 10, 1.0, slow_b)) == pytest.approx(slow_b)


def _configs(control, models) -> dict[str, str]:
    return {m: format_config(control.model_config(m)) for m in models}


@pytest.mark.triton
@pytest.mark.quiet  # a tuned pipeline 1.3x the baseline, before and after --resume: beside two other tests it once was not
def test_pipeline_sweep_tunes_every_step_restores_and_resumes(remote_joint, remote_control, tmp_path):
    remote_control.load("pipeline")  # loads its steps too
    before = _configs(remote_control, STEPS)
    # max_batch_size 4 is below the ensemble's 8: refused before sending, recorded, the sweep goes on
    prof = load_profile(str(write_profile(tmp_path / "p.toml", model="pipeline", url=remote_joint.url,
                                          max_batch_size=(4, 8), instances=(2,), concurrency=(4, 16),
                                          budget_ms=200.0, window_s=0.3)))
    run = tmp_path / "run"
    out = run_sweep(prof, run)
    s = out.summary
    assert s["kind"] == "ensemble" and s["steps"] == STEPS
    assert s["recommended"]["throughput_infer_per_s"] > 1.3 * s["baseline"]["throughput_infer_per_s"]
    assert "pipeline_model" in s["recommended"]["steps"]  # the costliest step, unbatched at first
    for m in STEPS:
        assert (run / "recommended" / m / "config.pbtxt").exists() and (run / "recommended" / m / "config.diff").exists()
        assert set(s["step_times_ms"]["baseline"]["steps"][m]) == {"queue", "compute"}
    changed = read_config(run / "recommended" / "pipeline_model" / "config.pbtxt")
    assert changed.HasField("dynamic_batching") and changed.instance_group[0].count == 2
    assert any("below the max_batch_size 8 of ensemble" in f["reason"] for f in s["failed"])
    assert "Per step: queue and compute" in (run / "report.html").read_text()
    assert _configs(remote_control, STEPS) == before and remote_control.is_loaded("pipeline")

    # --resume: cut the file after the first tuned candidate, as a killed run leaves it
    lines = (run / "results.jsonl").read_text().splitlines(keepends=True)
    ends = [i for i, line in enumerate(lines) if '"candidate_end"' in line and '"baseline"' not in line]
    (run / "results.jsonl").write_text("".join(lines[:ends[0] + 1]))
    again = run_sweep(prof, run, resume=True)
    points = Counter((r["candidate_id"], r["concurrency"]) for r in read_records(run / "results.jsonl")
                     if r["type"] == "point" and r["status"] == "ok")
    assert max(points.values()) == 1  # nothing stored was measured again
    assert again.summary["recommended"]["steps"] and (run / "recommended" / "pipeline_pre" / "config.pbtxt").exists()
    assert _configs(remote_control, STEPS) == before


@pytest.mark.triton
def test_sigterm_mid_pipeline_sweep_restores_every_step(remote_joint, remote_control, tmp_path):
    remote_control.load("pipeline")
    before = _configs(remote_control, STEPS)
    profile = write_profile(tmp_path / "p.toml", model="pipeline", url=remote_joint.url, max_batch_size=(8,),
                            instances=(2,), concurrency=(4, 8, 16, 32), budget_ms=500.0, window_s=0.3)
    run = tmp_path / "run"
    code, err = interrupt_sweep(profile, run, signal.SIGTERM, lambda: _configs(remote_control, STEPS) != before)
    assert code == 143, err
    assert _configs(remote_control, STEPS) == before and remote_control.is_loaded("pipeline")


@pytest.mark.triton
def test_bls_sweep_tunes_its_composing_model(remote_joint, remote_control, tmp_path):
    remote_control.load("bls_model")
    remote_control.load("bls")
    before = _configs(remote_control, ["bls_model", "bls"])
    # bls_model is built for batches of at most 16: max_batch_size 32 fails on the server, recorded
    prof = load_profile(str(write_profile(tmp_path / "p.toml", model="bls", url=remote_joint.url,
                                          extra_model='composing_models = ["bls_model"]',
                                          max_batch_size=(8, 32), instances=(2,), concurrency=(4, 16),
                                          budget_ms=200.0, window_s=0.3)))
    run = tmp_path / "run"
    s = run_sweep(prof, run).summary
    assert s["kind"] == "bls" and s["steps"] == ["bls_model"]
    assert s["recommended"]["steps"]["bls_model"]["max_batch_size"] == 8
    assert s["recommended"]["throughput_infer_per_s"] > 1.3 * s["baseline"]["throughput_infer_per_s"]
    assert any("exceeds the engine's maximum batch size 16" in f["reason"] for f in s["failed"])
    assert (run / "recommended" / "bls_model" / "config.diff").read_text()
    assert _configs(remote_control, ["bls_model", "bls"]) == before
