"""Smart search on the family of simulated response surfaces (`tuner/search/surfaces.py`):
it reaches grid's answer on each, refines max_batch_size between and beyond the listed
values, follows the load beyond the listed levels, and replays on resume."""

from __future__ import annotations

import pytest

from tuner.config import CandidateSpec
from tuner.search.surfaces import SURFACES

from .simserver import SimRun, space, surface_run, remeasured


@pytest.mark.parametrize("name", list(SURFACES))
def test_smart_holds_on_every_surface(name):
    """>= 0.97 of grid's pick, both re-measured, in <= 25% of grid's measuring time, on each surface
    of the family; every skip names the candidate's own prediction or ceiling, never a group's."""
    grid, smart = surface_run(name, "grid"), surface_run(name, "smart")
    assert remeasured(smart) >= 0.97 * remeasured(grid), (smart.rec.reason, grid.rec.reason)
    assert smart.sim.measured_s <= 0.25 * grid.sim.measured_s, (len(smart.points), len(grid.points))
    skips = [s.reason for s in smart.steps if s.kind == "skip"]
    assert all(r.startswith(("model:", "compute ceiling", "max_batch_size")) for r in skips), skips
    assert not any("variant of" in r for r in skips)


def test_knee_between_listed_sizes_is_found_by_refining_max_batch_size():
    smart = surface_run("knee", "smart")
    listed = set(SURFACES["knee"].max_batch_size)
    refined = [s for s in smart.steps if s.kind == "measure" and s.spec.max_batch_size not in listed]
    assert refined, "no max_batch_size between the listed values was tried"
    best = smart.specs[smart.rec.best.candidate_id]
    assert 8 < best.max_batch_size < 16 and best.max_batch_size not in listed  # the knee is at 12
    # a refined candidate is an ordinary, recordable one: its id is its spec's, and it round-trips
    spec = smart.specs[smart.rec.best.candidate_id]
    assert CandidateSpec.from_dict(spec.to_dict()) == spec and spec.candidate_id == smart.rec.best.candidate_id
    assert smart.results.candidates[spec.candidate_id].status == "loaded"


def test_overhead_goes_beyond_the_listed_sizes_and_load_levels():
    smart = surface_run("overhead", "smart")
    best = smart.specs[smart.rec.best.candidate_id]
    assert best.max_batch_size > max(SURFACES["overhead"].max_batch_size)
    assert smart.rec.best.concurrency > max(SURFACES["overhead"].concurrency)  # the budget had not bound at 64
    assert max(m.concurrency for m in smart.points) <= 4 * max(SURFACES["overhead"].concurrency)  # the load cap
    assert "highest load level measured" not in smart.rec.binding, smart.rec.binding


def test_smart_with_refined_candidates_replays_on_resume():
    first = surface_run("knee", "smart")
    refined_at = next(i for i, s in enumerate(first.steps) if s.kind == "measure"
                      and s.spec.max_batch_size not in SURFACES["knee"].max_batch_size)
    n_before = sum(1 for s in first.steps[:refined_at] if s.kind == "measure")
    killed = surface_run("knee", "smart", stop_after=n_before + 1)  # killed just after the first refined point
    stored = {(m.candidate_id, m.concurrency): m for m in killed.points}
    resumed = surface_run("knee", "smart", stored=stored)
    assert resumed.trace() == first.trace()
    assert resumed.measured == len(first.points) - len(stored)


def test_load_cap_binding_is_named():
    """A budget that never binds: the search climbs to the cap and says so; unless every batch is
    full first (one instance: max_batch_size 64 at 128), where no more load can serve more."""
    smart = SimRun(space("smart", budget=1000.0, instances=(2,)))
    assert max(m.concurrency for m in smart.points) == 4 * 64
    assert smart.rec.binding.startswith(("load cap", "throughput plateau", "server saturated"))
    one = SimRun(space("smart", budget=1000.0))
    assert 64 < max(m.concurrency for m in one.points) < 4 * 64
    assert any(s.reason.startswith("saturated: every batch") for s in one.steps)
    assert one.rec.binding.startswith("server saturated")
