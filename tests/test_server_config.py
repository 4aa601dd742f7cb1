"""Candidate configs against a real embedded Triton (no mocks).

One server for the module serves the bundled `synthetic` model; the
killed-server test starts a second one of its own.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tuner.config import CandidateSpec, copy_config, format_config, make_candidate
from tuner.errors import ModelLoadError, ServerError
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer, free_port
from tuner.server.install import prepare_repository
from tuner.server.model_session import ModelSession

MODEL = "synthetic"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return prepare_repository(tmp_path_factory.mktemp("repo"), [MODEL])


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "tritonserver.log"
    srv = EmbeddedServer(repo, log)
    try:
        with srv:
            yield srv
    finally:
        srv.stop()  # idempotent; covers a failed start too


@pytest.fixture(scope="module")
def control(server):
    ctl = ServerControl(server.url, server.log_path)
    try:
        ctl.wait_ready(timeout_s=30)
        ctl.load(MODEL)
        yield ctl
    finally:
        ctl.close()


def infer_echo(url: str, batch: int = 2) -> None:
    """The synthetic model echoes its input; check it serves a batch."""
    client = grpcclient.InferenceServerClient(url)
    try:
        x = np.arange(batch * 16, dtype=np.float32).reshape(batch, 16)
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = client.infer(MODEL, [inp], client_timeout=20)
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), x)
    finally:
        client.close()


@pytest.mark.triton
def test_apply_candidate_then_restore(control, server):
    session = ModelSession(control, MODEL)
    original = session.open()
    assert session.was_loaded
    assert original.max_batch_size == 32 and not original.HasField("dynamic_batching")

    spec = CandidateSpec(max_batch_size=16, max_queue_delay_us=500, preferred_batch_size=(8, 16),
                         instance_count=2)
    applied = session.apply(make_candidate(original, spec))
    read = control.model_config(MODEL)
    assert read == applied
    assert read.max_batch_size == 16
    assert read.HasField("dynamic_batching")
    assert read.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(read.dynamic_batching.preferred_batch_size) == [8, 16]
    assert [g.count for g in read.instance_group] == [2]
    # untuned fields came through the override
    assert dict(read.parameters) == dict(original.parameters)
    assert read.backend == "python"
    assert control.is_loaded(MODEL)
    infer_echo(server.url, batch=4)

    session.restore()
    back = control.model_config(MODEL)
    assert back == original, format_config(back)
    assert control.is_loaded(MODEL)
    infer_echo(server.url)


@pytest.mark.triton
def test_session_context_manager_restores(control):
    with ModelSession(control, MODEL) as s:
        original = s.original
        s.apply(make_candidate(original, CandidateSpec(8, 100, (4, 8), 1)))
        assert control.model_config(MODEL).max_batch_size == 8
    assert control.model_config(MODEL) == original


@pytest.mark.triton
def test_refused_override_reports_the_server_log_reason(control, server):
    session = ModelSession(control, MODEL)
    before = session.open()
    assert before.max_batch_size == 32
    bad = copy_config(before)  # by hand: validate_spec would refuse it
    bad.dynamic_batching.preferred_batch_size.append(64)

    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as exc:
        session.apply(bad)
    assert time.monotonic() - t0 < 15
    msg = str(exc.value)
    assert f"'{MODEL}'" in msg
    assert "preferred size must be <= max batch size" in msg, msg
    assert "\n" not in msg

    # the previous version keeps serving, unchanged
    assert control.is_loaded(MODEL)
    assert control.model_config(MODEL) == before
    infer_echo(server.url)
    session.restore()
    assert control.model_config(MODEL) == before


@pytest.mark.triton
def test_model_not_in_repository(control):
    with pytest.raises(ServerError, match=r"'no_such_model' is not in the server's repository") as exc:
        control.check_model("no_such_model")
    assert re.search(r"it has: .*\bsynthetic\b", str(exc.value)), str(exc.value)
    control.check_model(MODEL)  # and a present one passes


@pytest.mark.triton
def test_statistics_of_unknown_model_is_a_server_error(control):
    # Library calls raise the TunerError family only; a raw
    # InferenceServerException would reach the CLI user as a traceback.
    assert control.statistics(MODEL)["model_stats"]
    with pytest.raises(ServerError, match=r"no_such_model"):
        control.statistics("no_such_model")


def test_unreachable_server_is_reported_quickly():
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    ctl = ServerControl(url)
    try:
        t0 = time.monotonic()
        with pytest.raises(ServerError) as exc:
            ctl.wait_ready(timeout_s=2)
        assert time.monotonic() - t0 < 5
        assert url in str(exc.value)
    finally:
        ctl.close()


@pytest.mark.triton
def test_killed_server_gives_server_errors(repo, tmp_path):
    srv = EmbeddedServer(repo, tmp_path / "killed.log")
    try:
        srv.start()
        ctl = ServerControl(srv.url, srv.log_path, timeout_s=10)
        try:
            ctl.load(MODEL)
            assert ctl.is_loaded(MODEL)
            srv.proc.kill()
            srv.proc.wait(timeout=10)
            assert not srv.alive()
            calls = {
                "metadata": ctl.metadata,
                "model_config": lambda: ctl.model_config(MODEL),
                "load": lambda: ctl.load(MODEL),
                "check_model": lambda: ctl.check_model(MODEL),
                "statistics": lambda: ctl.statistics(MODEL),
                "unload": lambda: ctl.unload(MODEL),
            }
            for name, call in calls.items():
                t0 = time.monotonic()
                with pytest.raises(ServerError) as exc:
                    call()
                assert time.monotonic() - t0 < 5, name
                assert srv.url in str(exc.value), (name, str(exc.value))
            # a dead server is an error, never "not loaded" (a restore would unload the model)
            with pytest.raises(ServerError) as exc:
                ctl.is_loaded(MODEL)
            assert srv.url in str(exc.value)
        finally:
            ctl.close()
    finally:
        srv.stop()
    srv.stop()  # twice is fine
    assert srv.proc is None and not srv.alive()


@pytest.mark.triton
def test_restore_waits_for_the_unload_and_recovers_a_hung_one(tmp_path):
    # the model's finalize sleeps, so each unload keeps its version UNLOADING (and the server not
    # ready) for that long: a slow unload, then one that outlasts the wait, as a hung one does
    repo = prepare_repository(tmp_path / "repo", [MODEL])
    cfg = repo / MODEL / "config.pbtxt"
    cfg.write_text(cfg.read_text() + 'parameters: { key: "finalize_delay_s" value: { string_value: "3" } }\n')
    with EmbeddedServer(repo, tmp_path / "tritonserver.log") as srv:
        ctl = ServerControl(srv.url)
        try:
            if ctl.is_loaded(MODEL):
                ctl.unload(MODEL)
                assert ctl.wait_unloaded(MODEL, 30)
            session = ModelSession(ctl, MODEL, unload_wait_s=20)
            original = session.open()
            assert not session.was_loaded
            session.apply(make_candidate(original, CandidateSpec(8, 100, (), 1)))
            t0 = time.monotonic()
            session.restore()
            assert time.monotonic() - t0 >= 2.5  # it waited for finalize
            assert ctl.client.is_server_ready() and not ctl.is_loaded(MODEL)

            hung = ModelSession(ctl, MODEL, unload_wait_s=0.5)
            hung.open()
            hung.apply(make_candidate(original, CandidateSpec(8, 100, (), 1)))
            with pytest.raises(ServerError) as exc:
                hung.restore()
            msg = str(exc.value)
            assert "did not finish unloading 'synthetic'" in msg and "left loaded from its files" in msg, msg
            # ready at once, with the hung versions still in finalize: a version loaded from the files
            # stands in front of them
            assert ctl.client.is_server_ready()
            assert ctl.model_config(MODEL) == original
            infer_echo(srv.url)
        finally:
            ctl.close()
