"""`tuner sweep` end to end against the real embedded Triton."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tuner.config import format_config, read_config
from tuner.profile import load_profile
from tuner.results.store import load_results, read_records
from tuner.server.install import BUNDLED_MODELS_DIR
from tuner.sweep import run_sweep

from .conftest import ROOT, TUNER, interrupt_sweep, subprocess_env, write_profile

pytestmark = pytest.mark.timeout(240)


def limited_config(tmp_path: Path, limit: int) -> Path:
    """The synthetic model's config, as if its engine were built for `limit` items."""
    text = (BUNDLED_MODELS_DIR / "synthetic" / "config.pbtxt").read_text()
    text += f'parameters: {{ key: "max_supported_batch_size" value: {{ string_value: "{limit}" }} }}\n'
    p = tmp_path / "config.pbtxt"
    p.write_text(text)
    return p


@pytest.mark.triton
def test_sweep_recommends_config_that_beats_baseline(tmp_path):
    prof = load_profile(str(write_profile(tmp_path / "p.toml", max_batch_size=(8, 16), queue_delay_us=(0,),
                                          instances=(1, 2), concurrency=(1, 8, 16), budget_ms=40.0,
                                          strategy="grid")))
    run = tmp_path / "run"
    events = []
    outcome = run_sweep(prof, run, on_event=lambda kind, **kw: events.append(kind))
    s = json.loads((run / "summary.json").read_text())
    assert s["schema"] == 1 and s["model"] == "synthetic" and s["profile"] == "p"
    rec, base = s["recommended"], s["baseline"]
    assert rec is not None and rec["candidate_id"] != "baseline"
    assert rec["latency_ms"]["p99"] <= 40.0
    # The original has no dynamic batching: batching must beat it clearly.
    assert rec["throughput_infer_per_s"] > 1.5 * base["throughput_infer_per_s"]
    assert s["candidates_measured"] == 4 and s["candidates_failed"] == 0
    assert "binding" in s and s["constraints"]["latency_budget_ms"] == 40.0
    # The deployable config: the original with only the tuned fields changed.
    deployed = read_config(run / "recommended" / "config.pbtxt")
    assert deployed.name == "synthetic" and deployed.max_batch_size == rec["max_batch_size"]
    assert deployed.instance_group[0].count == rec["instance_count"]
    assert deployed.HasField("dynamic_batching")
    assert set(deployed.parameters) == {"fixed_cost_ms", "per_item_cost_ms"}
    diff = (run / "recommended" / "config.diff").read_text()
    assert "+dynamic_batching" in diff
    assert (run / "report.html").stat().st_size > 100_000
    assert outcome.candidates_measured == 4
    assert events.count("candidate") == 5 and "restore" in events


@pytest.mark.triton
def test_candidate_that_cannot_load_is_recorded_and_sweep_goes_on(tmp_path):
    cfg = limited_config(tmp_path, 8)
    prof = load_profile(str(write_profile(tmp_path / "p.toml", config=str(cfg), max_batch_size=(4, 16),
                                          concurrency=(1, 4))))
    run = tmp_path / "run"
    run_sweep(prof, run)
    res = load_results(run)
    failed = res.candidates["mbs16-qd0-pbsauto-i1"]
    assert failed.status == "failed"
    assert "exceeds the engine's maximum batch size 8" in failed.reason
    assert res.candidates["mbs4-qd0-pbsauto-i1"].status == "loaded"
    assert res.points_of("mbs4-qd0-pbsauto-i1")
    s = json.loads((run / "summary.json").read_text())
    assert s["candidates_failed"] == 1 and s["failed"][0]["candidate_id"] == "mbs16-qd0-pbsauto-i1"
    assert s["recommended"]["candidate_id"] in ("mbs4-qd0-pbsauto-i1", "baseline")


def _wait_for_points(results: Path, n: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if results.exists() and sum(1 for r in read_records(results) if r["type"] == "point") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("sweep made no progress")


@pytest.mark.triton
def test_killed_sweep_resumes_without_remeasuring(tmp_path):
    # grid: every listed candidate, none refined, so the set after resume is known
    profile = write_profile(tmp_path / "p.toml", max_batch_size=(4, 16), concurrency=(1, 4), strategy="grid")
    run = tmp_path / "run"
    proc = subprocess.Popen(TUNER + ["sweep", str(profile), "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    try:
        _wait_for_points(run / "results.jsonl", 3, proc)
    finally:
        proc.kill()
        proc.communicate()
    before = Counter((r["candidate_id"], r["concurrency"]) for r in read_records(run / "results.jsonl")
                     if r["type"] == "point")
    assert len(before) >= 3
    done = subprocess.run(TUNER + ["sweep", "--resume", str(run)], cwd=ROOT, capture_output=True, text=True,
                          timeout=200, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    after = Counter((r["candidate_id"], r["concurrency"]) for r in read_records(run / "results.jsonl")
                    if r["type"] == "point")
    # every point stored before the kill was kept and not measured again
    for key in before:
        assert after[key] == 1, key
    ids = {cid for cid, _ in after}
    assert ids == {"baseline", "mbs4-qd0-pbsauto-i1", "mbs16-qd0-pbsauto-i1"}
    assert json.loads((run / "summary.json").read_text())["recommended"] is not None


@pytest.mark.triton
def test_sigint_restores_original_config_on_remote_server(remote_server, remote_control, tmp_path):
    remote_control.load("synthetic")
    original = format_config(remote_control.model_config("synthetic"))
    profile = write_profile(tmp_path / "p.toml", url=remote_server.url, max_batch_size=(4, 16),
                            concurrency=(1, 4, 8))
    run = tmp_path / "run"
    code, err = interrupt_sweep(profile, run, signal.SIGINT,
                                lambda: format_config(remote_control.model_config("synthetic")) != original)
    assert code == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert format_config(remote_control.model_config("synthetic")) == original
    # what was measured is on disk
    assert any(r["type"] == "point" for r in read_records(run / "results.jsonl"))


@pytest.mark.triton
def test_sigterm_exit_code_and_restore(remote_server, remote_control, tmp_path):
    remote_control.load("synthetic")
    original = format_config(remote_control.model_config("synthetic"))
    profile = write_profile(tmp_path / "p.toml", url=remote_server.url, max_batch_size=(4,),
                            concurrency=(1, 4, 8, 16), strategy="grid")
    run = tmp_path / "run"
    proc = subprocess.Popen(TUNER + ["sweep", str(profile), "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        _wait_for_points(run / "results.jsonl", 4, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert format_config(remote_control.model_config("synthetic")) == original


@pytest.mark.triton
def test_every_candidate_failing_exits_nonzero_and_restores(remote_server, remote_control, tmp_path):
    remote_control.load("synthetic")
    original = format_config(remote_control.model_config("synthetic"))
    cfg = limited_config(tmp_path, 2)
    profile = write_profile(tmp_path / "p.toml", url=remote_server.url, config=str(cfg),
                            max_batch_size=(4, 8), concurrency=(1,))
    proc = subprocess.run(TUNER + ["sweep", str(profile), "--out", str(tmp_path / "run")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert proc.returncode == 1, proc.stderr
    assert "every candidate failed" in proc.stderr and "Traceback" not in proc.stderr
    assert format_config(remote_control.model_config("synthetic")) == original


@pytest.mark.triton
def test_report_rebuilds_from_stored_results(tmp_path):
    prof = load_profile(str(write_profile(tmp_path / "p.toml", max_batch_size=(8,), concurrency=(1, 8))))
    run = tmp_path / "run"
    run_sweep(prof, run)
    summary = (run / "summary.json").read_text()
    config = (run / "recommended" / "config.pbtxt").read_text()
    html_size = (run / "report.html").stat().st_size
    for f in ("summary.json", "report.html", "recommended/config.pbtxt", "recommended/config.diff"):
        (run / f).unlink()
    proc = subprocess.run(TUNER + ["report", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert (run / "summary.json").read_text() == summary
    assert (run / "recommended" / "config.pbtxt").read_text() == config
    assert abs((run / "report.html").stat().st_size - html_size) < 2000


def test_second_sweep_on_same_run_folder_is_refused(tmp_path):
    from tuner.errors import StoreError
    from tuner.results.rundir import RunLock as run_lock

    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(StoreError, match="in use"):
            with run_lock(run):
                pass


@pytest.mark.triton
def test_original_config_back_after_a_completed_remote_sweep(remote_server, remote_control, tmp_path):
    remote_control.load("synthetic")
    original = format_config(remote_control.model_config("synthetic"))
    prof = load_profile(str(write_profile(tmp_path / "p.toml", url=remote_server.url, max_batch_size=(4,),
                                          queue_delay_us=(500,), instances=(2,), concurrency=(2,),
                                          strategy="grid")))
    outcome = run_sweep(prof, tmp_path / "run")
    assert outcome.candidates_measured == 1
    assert format_config(remote_control.model_config("synthetic")) == original
    # the candidate record keeps the config the server read back (defaults filled in)
    res = load_results(tmp_path / "run")
    cand = res.candidates["mbs4-qd500-pbsauto-i2"]
    assert '"max_queue_delay_microseconds":"500"' in cand.config_json.replace(" ", "")
    assert '"preferred_batch_size":[4]' in cand.config_json.replace(" ", "")


@pytest.mark.triton
def test_load_processes_start_once_per_sweep(remote_server, remote_control, tmp_path, monkeypatch):
    from tuner.load import pool as workers

    starts = []
    real_start = workers.WorkerPool.start

    async def counting_start(self):
        starts.append(self.n)
        await real_start(self)

    monkeypatch.setattr(workers.WorkerPool, "start", counting_start)
    path = write_profile(tmp_path / "p.toml", url=remote_server.url, max_batch_size=(4,), concurrency=(2,),
                         window_s=0.3, strategy="grid")
    path.write_text(path.read_text() + "workers = 2\n")
    outcome = run_sweep(load_profile(str(path)), tmp_path / "run")
    assert outcome.candidates_measured == 1  # and the baseline
    points = load_results(tmp_path / "run").points
    assert len(points) == 2 and all(w.client["workers"] == 2 for p in points for w in p.windows)
    assert starts == [2]  # one pool of 2 processes for both candidates
