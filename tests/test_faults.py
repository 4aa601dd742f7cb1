"""Faults and hostile input against the real embedded Triton: nothing lost,
one-line errors, the original config restored."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tuner.profile import load_profile
from tuner.results.store import load_results, read_records
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer, free_port
from tuner.server.install import BUNDLED_MODELS_DIR, prepare_repository
from tuner.sweep import run_sweep

from .conftest import ROOT, TUNER, subprocess_env, write_profile

pytestmark = pytest.mark.timeout(240)


def _points(results: Path) -> list[dict]:
    if not results.exists():
        return []
    return [r for r in read_records(results) if r["type"] == "point"]


def _tritonserver_pids(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"tritonserver") and any(marker.encode() in c for c in cmd):
            pids.append(int(d.name))
    return pids


@pytest.mark.triton
def test_embedded_server_killed_mid_sweep_restarts_and_continues(tmp_path):
    prof = load_profile(str(write_profile(tmp_path / "p.toml", max_batch_size=(4, 16), concurrency=(1, 4),
                                          strategy="grid")))
    run = tmp_path / "run"
    killed = []

    def kill_soon():
        time.sleep(0.6)  # inside the point's warm-up or windows
        for pid in _tritonserver_pids(str(run)):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    def on_event(kind, **info):
        # the first time a tuned candidate starts its second load level
        if kind == "level" and info["candidate_id"] != "baseline" and info["concurrency"] > 1 and not killed:
            threading.Thread(target=kill_soon, daemon=True).start()
            killed.append(0)

    outcome = run_sweep(prof, run, on_event=on_event)
    assert len(killed) >= 2, "the test did not find the server to kill"
    recs = list(read_records(run / "results.jsonl"))
    restarts = [r for r in recs if r["type"] == "server_restart"]
    assert len(restarts) == 1 and restarts[0]["restart_s"] < 30
    failed_points = [r for r in recs if r["type"] == "point" and r["status"] == "failed"]
    assert failed_points and "tritonserver exited" in failed_points[0]["first_error"]
    res = load_results(run)
    # every candidate completed, and the failed point was measured again
    assert outcome.candidates_measured == 2 and outcome.candidates_failed == 0
    key = (failed_points[0]["candidate_id"], failed_points[0]["concurrency"])
    assert [p.status for p in res.points if (p.candidate_id, p.concurrency) == key] == ["ok"]
    assert json.loads((run / "summary.json").read_text())["recommended"] is not None


@pytest.mark.triton
def test_remote_server_gone_mid_sweep_then_resume(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["synthetic"])
    port = free_port()
    srv = EmbeddedServer(repo, tmp_path / "ts.log", grpc_port=port).start()
    run = tmp_path / "run"
    try:
        ServerControl(srv.url).load("synthetic")
        profile = write_profile(tmp_path / "p.toml", url=srv.url, max_batch_size=(4, 16), concurrency=(1, 4),
                                strategy="grid")  # no refined candidates: the set after resume is known
        proc = subprocess.Popen(TUNER + ["sweep", str(profile), "--out", str(run)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
        deadline = time.monotonic() + 120
        while len(_points(run / "results.jsonl")) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.3)
        os.killpg(srv.proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 3, err
        assert "went away" in err or "unreachable" in err
        assert srv.url in err and "--resume" in err and "Traceback" not in err
        # the original config could not be put back on a server that is gone: said, and recorded
        assert "could NOT be put back" in err
        assert any(r["type"] == "restore_failed" for r in read_records(run / "results.jsonl"))
        kept = [p for p in _points(run / "results.jsonl") if p["status"] == "ok"]
        assert len(kept) >= 2
        srv.stop()
        # the server comes back on the same port; --resume finishes the sweep
        srv = EmbeddedServer(repo, tmp_path / "ts2.log", grpc_port=port).start()
        ServerControl(srv.url).load("synthetic")
        done = subprocess.run(TUNER + ["sweep", "--resume", str(run)], cwd=ROOT, capture_output=True, text=True,
                              timeout=150, env=subprocess_env())
        assert done.returncode == 0, done.stderr
        res = load_results(run)
        assert {c for c in res.candidates} == {"baseline", "mbs4-qd0-pbsauto-i1", "mbs16-qd0-pbsauto-i1"}
        ok = {(p["candidate_id"], p["concurrency"]) for p in kept}
        counts = {}
        for p in _points(run / "results.jsonl"):
            counts[(p["candidate_id"], p["concurrency"])] = counts.get((p["candidate_id"], p["concurrency"]), 0) + 1
        assert all(counts[k] == 1 for k in ok)  # not measured again
    finally:
        srv.stop()


def _one_line_error(args, timeout=60, cwd=ROOT):
    t0 = time.monotonic()
    proc = subprocess.run(TUNER + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env())
    took = time.monotonic() - t0
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    # the progress display may have printed above; the error is one line, and last
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and proc.stderr.strip().endswith(lines[0]), proc.stderr
    return proc, lines[0], took


@pytest.mark.triton
def test_unreachable_server_and_wrong_port(remote_server, tmp_path):
    port = free_port()
    profile = write_profile(tmp_path / "p.toml", url=f"127.0.0.1:{port}")
    proc, line, took = _one_line_error(["sweep", str(profile), "--out", str(tmp_path / "r1")])
    assert proc.returncode == 3 and f"127.0.0.1:{port}" in line and "--url" in line
    assert took < 20
    # the HTTP port is not the gRPC port
    http = remote_server.http_url
    proc, line, took = _one_line_error(["sweep", str(profile), "--url", http, "--out", str(tmp_path / "r2")])
    assert http in line and "gRPC" in line and took < 20


@pytest.mark.triton
def test_server_not_in_explicit_mode(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["synthetic"])
    srv = EmbeddedServer(repo, tmp_path / "ts.log", extra_args=("--model-control-mode=none",)).start()
    try:
        profile = write_profile(tmp_path / "p.toml", url=srv.url)
        proc, line, _ = _one_line_error(["sweep", str(profile), "--out", str(tmp_path / "r")])
        assert "--model-control-mode=explicit" in line
        assert not _points(tmp_path / "r" / "results.jsonl")
    finally:
        srv.stop()


@pytest.mark.triton
def test_hostile_names_write_nothing_outside_the_run_folder(remote_server, tmp_path):
    work = tmp_path / "work"
    (work / "profiles").mkdir(parents=True)
    evil = '../../<script>alert(1)</script>'
    profile = work / "profiles" / "x.toml"
    write_profile(profile, model=evil, url=remote_server.url)
    before = set(tmp_path.rglob("*"))
    proc, line, _ = _one_line_error(["sweep", str(profile)], cwd=work)
    assert "synthetic" in line  # lists the models the server has
    created = set(tmp_path.rglob("*")) - before
    assert all(str(p).startswith(str(work / "reports")) for p in created), created
    # a profile whose file name is hostile still gets a safe run folder name
    from tuner.paths import safe_name
    assert "/" not in safe_name(evil) and ".." not in safe_name(evil) and "<" not in safe_name(evil)


@pytest.mark.triton
def test_torn_results_line_is_readable_by_report_and_resume(tmp_path):
    prof = load_profile(str(write_profile(tmp_path / "p.toml", max_batch_size=(8,), concurrency=(1, 4))))
    run = tmp_path / "run"
    run_sweep(prof, run)
    with open(run / "results.jsonl", "a") as f:
        f.write('{"schema":1,"type":"point","candidate_id":"mbs8')  # a crash mid-write
    n = len(_points(run / "results.jsonl"))
    proc = subprocess.run(TUNER + ["report", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert len(load_results(run).points) == n
    # whole-file outputs are replaced atomically: no temp files left behind
    assert not list(run.rglob("*.tmp"))


@pytest.mark.triton
def test_many_requests_in_flight_bounded_memory(remote_server, tmp_path):
    out = tmp_path / "m.json"
    code = (
        "import json, resource, sys\n"
        "from tuner.load.spec import LoadSettings\n"
        "from tuner.measure import measure_model, summary_json\n"
        f"r = measure_model('synthetic', {str(tmp_path / 'run')!r}, url={remote_server.url!r},"
        " concurrencies=[1024], settings=LoadSettings(warmup_s=2, window_s=7, min_windows=4, max_windows=4))\n"
        "doc = summary_json(r)\n"
        "doc['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        f"open({str(out)!r}, 'w').write(json.dumps(doc))\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=150,
                          env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    p = doc["points"][0]
    assert p["errors"] == 0 and p["throughput_infer_per_s"] > 50
    assert p["latency_ms"]["p50"] > 0 and p["latency_ms"]["p99"] >= p["latency_ms"]["p50"]
    assert doc["peak_rss_mb"] < 1024, doc["peak_rss_mb"]
    print(f"1024 in flight: {p['throughput_infer_per_s']:.0f} infer/s, p99 {p['latency_ms']['p99']:.0f} ms, "
          f"peak RSS {doc['peak_rss_mb']:.0f} MB, {time.monotonic() - t0:.0f} s")


@pytest.mark.triton
def test_large_inputs(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["identity"])
    big = repo / "identity_4mb"
    shutil.copytree(BUNDLED_MODELS_DIR / "identity", big, ignore=shutil.ignore_patterns("__pycache__"))
    text = (big / "config.pbtxt").read_text().replace('name: "identity"', 'name: "identity_4mb"')
    (big / "config.pbtxt").write_text(text.replace("dims: [ 16 ]", "dims: [ 1048576 ]"))
    with EmbeddedServer(repo, tmp_path / "ts.log") as srv:
        from tuner.load.spec import LoadSettings
        from tuner.measure import measure_model

        r = measure_model("identity_4mb", tmp_path / "run", url=srv.url, concurrencies=[2],
                          settings=LoadSettings(warmup_s=0.3, window_s=0.5, min_windows=3, max_windows=3))
        s = r.points[0].summary()
        assert s.errors == 0 and s.completed > 0, r.points[0].first_error


@pytest.mark.triton
def test_wrong_model_version_lists_served_versions(remote_server, tmp_path):
    profile = write_profile(tmp_path / "p.toml", url=remote_server.url, extra_model='version = "7"')
    proc, line, _ = _one_line_error(["sweep", str(profile), "--out", str(tmp_path / "r")])
    assert "version 7" in line and "ready versions: 1" in line
