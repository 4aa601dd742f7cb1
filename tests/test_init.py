"""`tuner init`: a profile from the live model's config, that validates and sweeps as it is.

The pure tests derive profiles from made-up configs; the `triton` ones write
profiles from a bundled model on the embedded server and from a model served
by `tuner serve`, then sweep them (with a shorter search and windows, to keep
the suite short: the sections tests replace are the ones a user edits).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tuner.errors import ConfigError, ProfileError
from tuner.profile import parse_profile
from tuner.profile_init import profile_text, search_space, write_profile

from .conftest import ROOT, TUNER, subprocess_env

pytestmark = pytest.mark.timeout(240)


def _cfg(max_batch_size=32, dims=(16,), params=None, delay_us=None, count=1) -> mc.ModelConfig:
    cfg = mc.ModelConfig(name="m", backend="python", max_batch_size=max_batch_size)
    cfg.input.add(name="INPUT0", data_type=mc.TYPE_FP32, dims=list(dims))
    cfg.output.add(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[16])
    cfg.instance_group.add(count=count, kind=mc.ModelInstanceGroup.KIND_CPU)
    for k, v in (params or {}).items():
        cfg.parameters[k].string_value = v
    if delay_us is not None:
        cfg.dynamic_batching.max_queue_delay_microseconds = delay_us
    return cfg


def test_search_space_is_derived_from_the_model():
    s = search_space(_cfg(32))
    assert s["max_batch_size"] == [8, 16, 32, 64]
    assert s["max_queue_delay_us"] == [0, 1000, 4000] and s["instance_count"] == [1, 2]
    assert s["concurrency"][0] == 1 and s["concurrency"][-1] == 256
    s = search_space(_cfg(32, params={"max_supported_batch_size": "32"}, delay_us=500, count=2))
    assert s["max_batch_size"] == [8, 16, 32]  # no higher than the model allows
    assert s["max_queue_delay_us"] == [0, 500, 1000, 4000] and s["instance_count"] == [2, 3]
    assert search_space(_cfg(1))["max_batch_size"] == [1, 2]


def test_written_profile_has_placeholders_and_validates():
    text = profile_text(_cfg(8, dims=(-1, 3)), "m", url="127.0.0.1:8001")
    assert "# placeholder: 'INPUT0' has variable dims [-1, 3]" in text
    assert "INPUT0 = [64, 3]" in text and "latency_budget_ms = 100.0  # placeholder" in text
    p = parse_profile(text, "m.toml")
    assert p.url == "127.0.0.1:8001" and p.shapes["INPUT0"][0].dims == (64, 3)
    assert p.search.max_batch_size == (2, 4, 8, 16) and p.constraints.latency_budget_ms == 100.0
    odd = _cfg(8, dims=(-1,))
    odd.input[0].name = "input.ids"
    assert '"input.ids" = [64]' in profile_text(odd, "m")


def test_nothing_to_tune_and_existing_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="max_batch_size 0 .*first_dim_is_batch = true"):
        profile_text(_cfg(0), "m")
    f = tmp_path / "p.toml"
    f.write_text("keep me")
    with pytest.raises(ProfileError, match="already exists; pass --out FILE for another file, or --force"):
        write_profile("synthetic", out=f)
    assert f.read_text() == "keep me"


def _shorten(path):
    """The sections a user edits, made quick: one candidate, two levels, short windows."""
    text = path.read_text()
    text = re.sub(r"max_batch_size = \[(\d+), .*\]", r"max_batch_size = [\1]", text)
    text = re.sub(r"max_queue_delay_us = \[.*\]", "max_queue_delay_us = [0]", text)
    text = re.sub(r"instance_count = \[(\d+), .*\]", r"instance_count = [\1]", text)
    text = re.sub(r"concurrency = \[.*\]", "concurrency = [1, 4]", text)
    text = text.split("[measurement]")[0] + ("[measurement]\nwarmup_s = 0.2\nwindow_s = 0.25\nmin_windows = 2\n"
                                              "max_windows = 2\nstability_pct = 50.0\n")
    path.write_text(text)


def _tuner(*args, timeout=180):
    return subprocess.run(TUNER + [str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=subprocess_env())


def _swept(run) -> dict:
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recommended"] is not None, summary.get("reason")
    assert (run / "profile.toml").exists() and (run / "report.html").exists()
    return summary


@pytest.mark.triton
def test_init_bundled_model_then_sweep(tmp_path):
    prof = tmp_path / "syn.toml"
    proc = _tuner("init", "synthetic", "--out", prof)
    assert proc.returncode == 0, proc.stderr
    assert "profile: " in proc.stdout and "max_batch_size = [8, 16, 32, 64]" in prof.read_text()
    _shorten(prof)
    proc = _tuner("sweep", prof, "--no-confirm", "--search", "grid", "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _swept(tmp_path / "run")


@pytest.fixture()
def served(tmp_path):
    """`tuner serve` with the bundled textlen model, not loaded: init loads it to read it, then unloads it."""
    from tuner.server.install import prepare_repository

    repo = prepare_repository(tmp_path / "repo", ["textlen"])
    proc = subprocess.Popen(TUNER + ["serve", "--model-repository", str(repo), "--log", str(tmp_path / "ts.log")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        m = re.search(r"grpc (127\.0\.0\.1:\d+)", proc.stdout.readline())
        assert m, proc.stderr.read() if proc.poll() is not None else ""
        yield m.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.triton
def test_init_against_tuner_serve_then_sweep(served, tmp_path):
    from tuner.server.control import ServerControl

    prof = tmp_path / "textlen.toml"
    proc = _tuner("init", "textlen", "--url", served, "--out", prof)
    assert proc.returncode == 0, proc.stderr
    text = prof.read_text()
    assert f'url = "{served}"' in text and "INPUT0 = [64]" in text and "variable dims [-1]" in text
    ctl = ServerControl(served)
    try:
        assert not ctl.is_loaded("textlen")  # put back as it was
    finally:
        ctl.close()
    _shorten(prof)
    proc = _tuner("sweep", prof, "--no-confirm", "--search", "grid", "--out", tmp_path / "run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _swept(tmp_path / "run")
    env = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()][0]["environment"]
    assert env["input_mix"]["shapes"] == [{"shape": "INPUT0=[64]", "weight": 1.0}]
    assert summary["recommended"]["candidate_id"]
