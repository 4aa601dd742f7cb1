"""Profile validation: every bad input is one line naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuner.errors import ProfileError
from tuner.profile import load_profile, parse_profile

ROOT = Path(__file__).resolve().parent.parent
GOOD = """
[model]
name = "synthetic"
[search]
max_batch_size = [8, 4, 8]
preferred_batch_size = ["none", "halves"]
[constraints]
latency_budget_ms = 25
"""


def test_shipped_profiles_are_valid():
    for name in ("resnet", "synthetic"):
        p = load_profile(str(ROOT / "profiles" / f"{name}.toml"))
        assert p.model == name and p.search.specs()
        assert p.url is None  # the embedded server by default


def test_good_profile_and_expansion():
    p = parse_profile(GOOD, "x/good.toml")
    assert p.name == "good" and p.search.max_batch_size == (4, 8)
    ids = [s.candidate_id for s in p.search.specs()]
    # halves for mbs 4 gives [2, 4], for 8 gives [4, 8]; duplicates are not repeated
    assert "mbs4-qd0-pbs2_4-i1" in ids and "mbs8-qd1000-pbs4_8-i1" in ids
    assert len(ids) == len(set(ids)) == 2 * 2 * 2


@pytest.mark.parametrize("text, key, fix", [
    ("[model]\nname = 'm'\nnmae = 'x'\n", "model.nmae", "unknown key"),
    ("[model]\nname = 'm'\n[serach]\n", "[serach]", "unknown section"),
    ("[search]\nmax_batch_size=[1]\n", "model.name", "is required"),
    ("[model]\nname = 'm'\n[search]\nmax_batch_size = 8\n", "search.max_batch_size", "must be a list"),
    ("[model]\nname = 'm'\n[search]\nmax_batch_size = [0, 8]\n", "search.max_batch_size", ">= 1"),
    ("[model]\nname = 'm'\n[search]\nmax_queue_delay_us = [-5]\n", "search.max_queue_delay_us", ">= 0"),
    ("[model]\nname = 'm'\n[search]\nconcurrency = []\n", "search.concurrency", "at least one"),
    ("[model]\nname = 'm'\n[search]\npreferred_batch_size = 'double'\n", "search.preferred_batch_size", "none, max, halves"),
    ("[model]\nname = 'm'\n[constraints]\nlatency_budget_ms = -1\n", "constraints.latency_budget_ms", "> 0"),
    ("[model]\nname = 'm'\n[constraints]\nlatency_budget_ms = 'fast'\n", "constraints.latency_budget_ms", "a number"),
    ("[model]\nname = 'm'\n[constraints]\nlatency_percentile = 'p42'\n", "constraints.latency_percentile", "p50"),
    ("[model]\nname = 'm'\n[measurement]\nmin_windows = 5\nmax_windows = 3\n", "measurement.max_windows", ">= min_windows"),
    ("[model]\nname = 'm'\n[measurement]\nwindow_s = true\n", "measurement.window_s", "not a boolean"),
    ("[model]\nname = 'm'\n[model.shapes]\nx = [0]\n", "model.shapes.x", "positive integers"),
    ("[model]\nname = 'm'\ndata = 'ones'\n", "model.data", "random"),
    ("[model\nname = 'm'\n", "not valid TOML", "line 1"),
    ("[model]\nname = 'm'\n[measurement]\nworkers = 'rey'\n", "measurement.workers", "ray://HOST:PORT"),
    ("[model]\nname = 'm'\n[measurement]\nworkers = -1\n", "measurement.workers", ">= 0"),
])
def test_bad_profiles_name_file_key_and_fix(text, key, fix):
    with pytest.raises(ProfileError) as err:
        parse_profile(text, "profiles/bad.toml")
    msg = str(err.value)
    assert msg.startswith("profiles/bad.toml: ") and key in msg and fix in msg, msg
    assert "\n" not in msg


def test_load_workers_from_the_profile():
    base = "[model]\nname = 'm'\n[measurement]\n"
    p = parse_profile(base + "workers = 3\n", "x.toml")
    assert p.measurement.workers == 3 and p.measurement.ray_address is None
    p = parse_profile(base + "workers = 'ray'\n", "x.toml")
    assert p.measurement.ray_address == "auto" and p.measurement.workers == 0
    p = parse_profile(base + "workers = 'ray://head:10001'\nray_actors = 4\n", "x.toml")
    assert p.measurement.ray_address == "ray://head:10001" and p.measurement.workers == 4


def test_unknown_profile_lists_the_ones_there(tmp_path):
    (tmp_path / "a.toml").write_text(GOOD)
    with pytest.raises(ProfileError, match=r"no profile 'zzz'.*a"):
        load_profile("zzz", tmp_path)
    assert load_profile("a", tmp_path).model == "synthetic"


def test_cli_overrides_are_kept():
    p = parse_profile(GOOD, "g.toml").with_overrides(url="h:1", latency_budget_ms=9, latency_percentile="p95")
    assert p.url == "h:1" and p.constraints.latency_budget_ms == 9 and p.constraints.latency_percentile == "p95"
    assert p.overrides == {"url": "h:1", "latency_budget_ms": 9, "latency_percentile": "p95"}
    with pytest.raises(ProfileError, match="latency-budget-ms"):
        p.with_overrides(latency_budget_ms=0)
