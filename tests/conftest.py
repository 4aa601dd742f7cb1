"""Shared fixtures: a real embedded Triton standing in for a user's remote server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tuner.load.request import build_request
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer
from tuner.server.install import prepare_repository

ROOT = Path(__file__).resolve().parent.parent
TUNER = [sys.executable, "-m", "tuner.cli"]


@pytest.fixture(scope="session")
def remote_server(tmp_path_factory):
    """A Triton tuner did not start (as far as the sweep knows): reached by --url."""
    repo = prepare_repository(tmp_path_factory.mktemp("remote_repo"), ["synthetic", "identity"])
    with EmbeddedServer(repo, tmp_path_factory.mktemp("remote_logs") / "tritonserver.log") as srv:
        yield srv


@pytest.fixture()
def remote_control(remote_server):
    ctl = ServerControl(remote_server.url, remote_server.log_path)
    try:
        yield ctl
    finally:
        ctl.close()


def write_profile(path: Path, *, model: str = "synthetic", url: str | None = None, config: str | None = None,
                  max_batch_size=(4, 16), queue_delay_us=(0,), instances=(1,), concurrency=(1, 8),
                  budget_ms: float = 50.0, window_s: float = 0.4, extra_model: str = "",
                  preferred: str = "none", strategy: str | None = None, confirm: bool = False) -> Path:
    """A small, fast profile for tests. No confirmation phase unless asked: the tests that
    are about it ask, and it would only lengthen the others."""
    lines = ["[model]", f'name = "{model}"']
    if url:
        lines.append(f'url = "{url}"')
    if config:
        lines.append(f'config = "{config}"')
    if extra_model:
        lines.append(extra_model)
    lines += [
        "[search]",
        f"max_batch_size = {list(max_batch_size)}",
        f"max_queue_delay_us = {list(queue_delay_us)}",
        f'preferred_batch_size = "{preferred}"',
        f"instance_count = {list(instances)}",
        f"concurrency = {list(concurrency)}",
        *([f'strategy = "{strategy}"'] if strategy else []),
        f"confirm = {'true' if confirm else 'false'}",
        "[constraints]",
        'latency_percentile = "p99"',
        f"latency_budget_ms = {budget_ms}",
        "[measurement]",
        "warmup_s = 0.3",
        f"window_s = {window_s}",
        "min_windows = 3",
        "max_windows = 4",
        "stability_pct = 15.0",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def request_plan(url: str, model: str):
    """Load `model` on the server at `url` and build its request from the config it serves."""
    ctl = ServerControl(url)
    try:
        ctl.load(model)
        return build_request(ctl.model_config(model), model)
    finally:
        ctl.close()


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def interrupt_sweep(profile: Path, run: Path, sig: int, candidate_loaded, wait_s: float = 120.0) -> tuple[int, str]:
    """`tuner sweep PROFILE --out RUN`, sent `sig` once a candidate (not the baseline) has a point
    and `candidate_loaded()` agrees that the server holds it: (exit code, stderr)."""
    from tuner.results.store import read_records

    proc = subprocess.Popen(TUNER + ["sweep", str(profile), "--out", str(run)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            recs = list(read_records(run / "results.jsonl")) if (run / "results.jsonl").exists() else []
            if any(r["type"] == "point" and r["candidate_id"] != "baseline" for r in recs):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        assert candidate_loaded()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def stub_pids(under: Path) -> list[int]:
    """Live Python-backend stub processes serving a model from a folder under `under`."""
    out = []
    needle = str(under).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"triton_python_backend_stub" in cmd and needle in cmd:
            out.append(int(proc.name))
    return out


def wait_no_stubs(under: Path, timeout_s: float = 10.0) -> list[int]:
    """Wait for every stub under `under` to end; the ones left (none is the answer wanted)."""
    deadline = time.monotonic() + timeout_s
    while (left := stub_pids(under)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture(autouse=True)
def _no_stub_left_behind(request):
    """A test that starts a Triton leaves none of its backend stubs running."""
    watch = (request.node.get_closest_marker("triton") is not None and "tmp_path" in request.fixturenames)
    folder = request.getfixturevalue("tmp_path") if watch else None
    yield
    if folder is None:
        return
    left = wait_no_stubs(folder)
    for pid in left:  # don't let one leak slow every later test down
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    assert not left, f"triton_python_backend_stub processes left running: {left}"


@pytest.fixture(scope="session")
def remote_accumulator(remote_server):
    """The remote server with the bundled stateful `accumulator` model in its repository (tests load it)."""
    prepare_repository(remote_server.model_repository, ["accumulator"])
    return remote_server


@pytest.fixture(scope="session")
def remote_joint(remote_server):
    """The remote server with the bundled ensemble (`pipeline` and its steps) and the BLS model
    (`bls`, `bls_model`) in its repository (tests load them)."""
    prepare_repository(remote_server.model_repository, ["pipeline", "bls", "bls_model"])
    return remote_server


@pytest.fixture(scope="session")
def remote_multi(remote_server):
    """The remote server with the bundled models that share one simulated device (`multi_a`,
    `multi_b`) in its repository (tests load them)."""
    prepare_repository(remote_server.model_repository, ["multi_a", "multi_b"])
    return remote_server
