"""`tuner serve` and a stuck server, against the real tritonserver binary."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from tuner.errors import ServerError
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer
from tuner.server.install import prepare_repository

from .conftest import ROOT, TUNER, subprocess_env

pytestmark = pytest.mark.timeout(120)


@pytest.mark.triton
def test_serve_prints_url_and_stops_on_sigterm(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["identity"])
    proc = subprocess.Popen(TUNER + ["serve", "--model-repository", str(repo), "--load", "identity",
                                     "--log", str(tmp_path / "ts.log")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    try:
        line = proc.stdout.readline()
        m = re.search(r"grpc (127\.0\.0\.1:\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        ctl = ServerControl(m.group(1))
        try:
            ctl.wait_ready(10)
            assert ctl.is_loaded("identity")
        finally:
            ctl.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    # no orphan server left behind: nothing answers on that port any more
    with pytest.raises(ServerError):
        ServerControl(m.group(1)).wait_ready(1.0)


def test_serve_missing_repository_is_one_line_error(tmp_path):
    proc = subprocess.run(TUNER + ["serve", "--model-repository", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, env=subprocess_env())
    assert proc.returncode != 0
    assert "not a folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.triton
def test_stuck_server_gives_clear_error_quickly(tmp_path):
    repo = prepare_repository(tmp_path / "repo", ["identity"])
    with EmbeddedServer(repo, tmp_path / "ts.log") as srv:
        os.kill(srv.proc.pid, signal.SIGSTOP)
        try:
            ctl = ServerControl(srv.url, timeout_s=2.0)
            t0 = time.monotonic()
            with pytest.raises(ServerError, match=re.escape(srv.url)):
                ctl.model_config("identity")
            assert time.monotonic() - t0 < 10
            ctl.close()
        finally:
            os.kill(srv.proc.pid, signal.SIGCONT)
