"""The run session: nothing lost after a crash, nothing left running, the user's model never
changed by a misread server answer, a run folder with one writer (tuner/session.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tuner.errors import ServerError, StoreError
from tuner.measure import measure_model
from tuner.profile import load_profile, load_run_profile, save_run_profile
from tuner.results.records import CandidateEnd, SessionEnd
from tuner.results.rundir import RunLock
from tuner.results.store import ResultsFile, load_results, read_records
from tuner.server.connection import Connection
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer
from tuner.server.install import prepare_repository
from tuner.server.model_session import ModelSession

from .conftest import ROOT, TUNER, stub_pids, subprocess_env, wait_no_stubs, write_profile

TORN = b'{"kind": "point", "candidate_id": "torn'


# ------------------------------------------------------------------ pure ---

def test_torn_tail_is_moved_aside_and_noted(tmp_path):
    f = ResultsFile(tmp_path / "results.jsonl")
    f.append(CandidateEnd("a", "done"))
    f.append(SessionEnd(1.5))
    whole = f.path.read_bytes()
    assert f.repair_tail() is None and f.path.read_bytes() == whole  # nothing to repair
    with open(f.path, "ab") as out:
        out.write(TORN)
    assert load_results(f.path).torn_tail_unrepaired
    note = f.repair_tail()
    assert note is not None and note.size_bytes == len(TORN) and note.offset_bytes == len(whole)
    assert f.torn_path.read_bytes() == TORN + b"\n"  # kept, not dropped
    records = list(read_records(f.path))
    assert [r["type"] for r in records] == ["candidate_end", "session_end", "torn_tail"]
    f.append(SessionEnd(2.0))  # appends after a repair are whole lines
    res = load_results(f.path)
    assert res.torn == [note] and res.duration_s == pytest.approx(3.5) and not res.torn_tail_unrepaired


def test_a_record_that_only_lost_its_newline_is_kept(tmp_path):
    f = ResultsFile(tmp_path / "results.jsonl")
    f.path.write_bytes(b'{"schema":1,"type":"session_end","duration_s":1.0}')
    assert f.repair_tail() is None
    f.append(SessionEnd(2.0))
    assert load_results(f.path).duration_s == pytest.approx(3.0)
    assert not f.torn_path.exists()


def test_measure_refuses_a_folder_with_results_or_in_use(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.jsonl").write_text('{"schema":1,"type":"session_end","duration_s":1.0}\n')
    with pytest.raises(StoreError, match="already holds results"):
        measure_model("synthetic", run, concurrencies=[1])
    assert (run / "results.jsonl").read_text().count("\n") == 1  # nothing appended
    busy = tmp_path / "busy"
    with RunLock(busy):
        with pytest.raises(StoreError, match="in use by another tuner run"):
            measure_model("synthetic", busy, concurrencies=[1])
    assert not (busy / "results.jsonl").exists()


def test_relative_paths_in_a_run_profile_resolve_where_the_profile_was(tmp_path):
    home = tmp_path / "project"
    (home / "certs").mkdir(parents=True)
    (home / "certs" / "ca.crt").write_text("not really a certificate\n")
    (home / "models").mkdir()
    (home / "models" / "config.pbtxt").write_text('name: "m"\n')
    path = write_profile(home / "p.toml", url="127.0.0.1:1", config="models/config.pbtxt")
    path.write_text(path.read_text() + '[server]\nroot_certificates = "certs/ca.crt"\n')
    profile = load_profile(str(path))
    run = tmp_path / "reports" / "run"
    run.mkdir(parents=True)
    save_run_profile(run, profile)
    for again in (load_run_profile(run, check_files=True), load_run_profile(run)):
        assert again.config_path.resolve() == (home / "models" / "config.pbtxt").resolve()
        assert again.tls.root_certificates.resolve() == (home / "certs" / "ca.crt").resolve()
    # saved again from the reloaded profile (a resume): still where the profile was written
    save_run_profile(run, load_run_profile(run))
    assert load_run_profile(run).config_path.resolve() == (home / "models" / "config.pbtxt").resolve()


# ---------------------------------------------------------------- triton ---

@pytest.mark.triton
def test_torn_line_after_an_interrupt_resumes_and_reports(tmp_path):
    profile = write_profile(tmp_path / "p.toml", max_batch_size=(4, 16), concurrency=(1, 4), window_s=0.3)
    run = tmp_path / "run"
    proc = subprocess.Popen(TUNER + ["sweep", str(profile), "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=subprocess_env())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (run / "results.jsonl").exists() and sum(
                    1 for r in read_records(run / "results.jsonl") if r["type"] == "point") >= 2:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    with open(run / "results.jsonl", "ab") as f:
        f.write(TORN)  # as if killed while appending
    done = subprocess.run(TUNER + ["sweep", "--resume", str(run)], cwd=ROOT, capture_output=True, text=True,
                          timeout=200, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    again = subprocess.run(TUNER + ["report", str(run)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env=subprocess_env())
    assert again.returncode == 0, again.stderr
    assert (run / "results.jsonl.torn").read_bytes() == TORN + b"\n"
    summary = json.loads((run / "summary.json").read_text())
    assert [t["size_bytes"] for t in summary["torn_records_set_aside"]] == [len(TORN)]
    assert summary["recommended"] is not None
    for line in (run / "results.jsonl").read_text().splitlines():
        json.loads(line)  # every line whole


@pytest.mark.triton
def test_stubs_end_when_tuner_is_killed(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(TUNER + ["measure", "synthetic", "--concurrency", "1", "--window-s", "5",
                                     "--max-windows", "8", "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=subprocess_env())
    try:
        deadline = time.monotonic() + 60
        while not stub_pids(run) and time.monotonic() < deadline:
            assert proc.poll() is None, "measure ended before its server's stub started"
            time.sleep(0.1)
        assert stub_pids(run), "no backend stub started"
    finally:
        proc.kill()  # SIGKILL: tuner gets no chance to clean up
        proc.wait()
    assert wait_no_stubs(run) == []


@pytest.mark.triton
def test_stubs_end_when_the_server_dies(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["synthetic"])
    with EmbeddedServer(repo, tmp_path / "ts.log") as srv:
        ctl = ServerControl(srv.url)
        ctl.load("synthetic")
        ctl.close()
        assert stub_pids(tmp_path)
        assert shm_regions(srv.shm_prefix)  # the Python backend's, named by this server
        os.kill(srv.proc.pid, signal.SIGKILL)  # a crash, while nobody calls stop()
        assert wait_no_stubs(tmp_path) == []
        # the keeper removes them; nobody else would (seen: dozens left in /dev/shm)
        deadline = time.monotonic() + 5
        while shm_regions(srv.shm_prefix) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert shm_regions(srv.shm_prefix) == []


def shm_regions(prefix: str) -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(prefix)]


@pytest.mark.triton
def test_a_stopped_server_leaves_no_shared_memory(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["synthetic"])
    srv = EmbeddedServer(repo, tmp_path / "ts.log").start()
    prefix = srv.shm_prefix
    ctl = ServerControl(srv.url)
    ctl.load("synthetic")
    ctl.close()
    assert shm_regions(prefix)
    srv.stop()
    assert shm_regions(prefix) == []


SECRET = "session-test-key"
HEADER = "triton-grpc-protocol-x-api-key"


@pytest.mark.triton
def test_a_refused_readiness_check_is_an_error_not_an_unloaded_model(tmp_path):
    """Readiness answered with an error must not read as "not loaded": the restore would unload it."""
    repo = prepare_repository(tmp_path / "repo", ["synthetic"])
    probe = Connection("probe", headers=((HEADER, SECRET),))
    srv = EmbeddedServer(repo, tmp_path / "ts.log", probe=probe,
                         extra_args=(f"--grpc-restricted-protocol=health:x-api-key={SECRET}",))
    with srv:
        allowed = ServerControl(Connection(srv.url, headers=((HEADER, SECRET),)))
        allowed.load("synthetic")
        plain = ServerControl(srv.url)  # no header: health calls are refused, the others are not
        session = ModelSession(plain, "synthetic")
        with pytest.raises(ServerError, match=HEADER):
            session.open()
        session.restore()
        assert allowed.is_loaded("synthetic")
        plain.close()
        allowed.close()
