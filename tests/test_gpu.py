"""GPU telemetry, energy per inference and the min_energy goal.

Parsing is tested on real `/metrics` pages (tests/data/triton_metrics/, sources
in its README) through the code path a live scrape takes; the rest is pure.
The last test runs the GPU check kit's CPU flow against a real embedded Triton.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.config import CandidateSpec
from tuner.load.telemetry import parse_metrics, window_telemetry
from tuner.profile import load_profile
from tuner.report.gpu import gpu_section
from tuner.report.points import measured_points
from tuner.results.records import CandidateRecord, Measurement
from tuner.results.stats import (WindowSample, energy_unavailable, gpu_point_metrics, summarize,
                                 telemetry_summary)
from tuner.results.store import RunResults
from tuner.search.recommend import Constraints, recommend

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "triton_metrics"
P100 = "GPU-a07dfe08-b87f-1f96-7083-07a26d0fa83e"
V100 = "GPU-0e9fdafb-5adb-91cd-26a8-308d34357efc"
MIB = 1024 * 1024


def page(name: str) -> str:
    return (DATA / f"{name}.prom").read_text()


# ------------------------------------------------------- recorded pages

def test_recorded_gpu_pages_parse():
    snap = parse_metrics(page("p100_after"), "particlenet_PT")
    g = snap.gpus[P100]
    assert g["memory_used_bytes"] == 699400192 and g["memory_total_bytes"] == 12884901888
    assert g["power_w"] == pytest.approx(32.768) and g["power_limit_w"] == 250 and g["utilization"] == 0
    assert snap.gpu_counters[P100]["energy_j"] == 0
    assert snap.counters == {"request_success": 10, "request_failure": 0, "inference_count": 10}

    # written "#HELP"/"#TYPE", model counters labelled by gpu_uuid too
    snap = parse_metrics(page("v100_resnet50_trt"), "resnet50_trt")
    assert snap.gpu_counters[V100]["energy_j"] == pytest.approx(9380.053)
    assert snap.gpus[V100]["memory_used_bytes"] / MIB == pytest.approx(929.75)
    assert snap.counters["inference_count"] == 4


def test_energy_counter_that_does_not_advance_is_not_available():
    """The P100 host's counter stays at 0 J while 10 inferences run at 33 W: no energy, not 0 J."""
    tele = window_telemetry(parse_metrics(page("p100_before"), "particlenet_PT"),
                            parse_metrics(page("p100_after"), "particlenet_PT"))
    assert tele["inference_count"] == 10 and tele["energy_j"] == 0
    assert "energy_j_per_infer" not in tele
    point = telemetry_summary([WindowSample(0.0, 1.0, [1000] * 10, telemetry=tele)])
    g = gpu_point_metrics(point)
    assert g["energy_j_per_infer"] is None and "did not advance" in g["energy_unavailable"]
    assert g["memory_used_mib"] == pytest.approx(699400192 / MIB)
    assert g["power_w"] == pytest.approx(32.768) and g["gpu_utilization"] == 0


def test_cpu_host_page_has_no_gpu_figures():
    snap = parse_metrics(page("cpu_host_identity"), "identity")
    assert not snap.gpus and not snap.gpu_counters
    tele = window_telemetry(snap, snap)
    assert "gpus" not in tele and "energy_j" not in tele and tele["inference_count"] == 0
    g = gpu_point_metrics(telemetry_summary([WindowSample(0.0, 1.0, [1000], telemetry=tele)]))
    assert g["gpu_count"] == 0 and g["memory_used_mib"] is None and g["power_w"] is None
    assert "no GPU" in g["energy_unavailable"]
    assert "could not be read" in energy_unavailable(None)


# ------------------------------------------------- energy per inference

def advanced(text: str, energy_j: float, inferences: int) -> str:
    """The V100 page a while later (made up from the recorded one): counters moved on."""
    return (text.replace("9380.053000", f"{9380.053 + energy_j:.6f}")
            .replace('version="1"} 4.000000', f'version="1"}} {4 + inferences}.000000'))


def test_energy_per_inference_from_two_scrapes():
    before = parse_metrics(page("v100_resnet50_trt"), "resnet50_trt")
    after = parse_metrics(advanced(page("v100_resnet50_trt"), 120.0, 400), "resnet50_trt")
    tele = window_telemetry(before, after)
    assert tele["energy_j"] == pytest.approx(120.0) and tele["inference_count"] == 400
    assert tele["energy_j_per_infer"] == pytest.approx(0.3)
    assert tele["gpus"][V100]["energy_j"] == pytest.approx(120.0)


TWO_GPUS = """# TYPE nv_energy_consumption counter
nv_energy_consumption{{gpu_uuid="GPU-a"}} {a}
nv_energy_consumption{{gpu_uuid="GPU-b"}} {b}
# TYPE nv_inference_count counter
nv_inference_count{{model="m",version="1"}} {n}
"""


def test_energy_sums_gpus_and_refuses_a_partial_or_reset_counter():
    s = lambda a, b, n: parse_metrics(TWO_GPUS.format(a=a, b=b, n=n), "m")  # noqa: E731
    tele = window_telemetry(s(100, 200, 10), s(130, 250, 110))
    assert tele["energy_j"] == 80 and tele["energy_j_per_infer"] == pytest.approx(0.8)
    # a restarted server's counters start again: no energy for that window
    assert "energy_j" not in window_telemetry(s(100, 200, 10), s(5, 250, 110))
    # one GPU unreadable at the start: a sum over the other alone would pass for the total
    only_a = parse_metrics('# TYPE nv_energy_consumption counter\nnv_energy_consumption{gpu_uuid="GPU-a"} 100\n')
    assert "energy_j" not in window_telemetry(only_a, s(130, 250, 110))


def test_point_energy_sums_windows_over_the_metrics_refresh():
    """Triton refreshes the counter every 2 s: a 1 s window can see 0 J, the next twice as much."""
    wins = [WindowSample(float(i), 1.0, [1000] * 100, telemetry={"energy_j": e, "inference_count": 100,
                                                                  "gpus": {"G": {"power_w": 300.0}}})
            for i, e in enumerate((0.0, 60.0, 30.0))]
    tele = summarize(wins).telemetry
    assert tele["energy_j"] == 90 and tele["inference_count"] == 300
    assert tele["energy_j_per_infer"] == pytest.approx(0.3)
    assert gpu_point_metrics(tele)["energy_unavailable"] == ""


# ---------------------------------------------------------- min_energy

def point(cid: str, c: int, n: int, lat_ms: float, energy_j: float | None) -> Measurement:
    """Three 1 s windows of n requests at lat_ms, the GPU using energy_j per window (None: no GPU)."""
    tele = None
    if energy_j is not None:
        tele = {"energy_j": energy_j, "inference_count": n,
                "gpus": {"GPU-0": {"power_w": energy_j, "utilization": 0.5, "memory_used_bytes": 2000 * MIB}}}
    wins = [WindowSample(float(i), 1.0, [int(lat_ms * 1000)] * n, telemetry=tele) for i in range(3)]
    return Measurement(cid, c, wins, True)


def results(points: list[Measurement]) -> RunResults:
    cands = {m.candidate_id: CandidateRecord(CandidateSpec(8, 0, (), 1), "loaded") for m in points}
    return RunResults({}, cands, points)


def test_min_energy_picks_the_lowest_energy_within_the_budget():
    pts = [point("fast", 8, 900, 20.0, 450.0),    # 0.50 J/infer, most throughput
           point("frugal", 8, 600, 20.0, 240.0),  # 0.40 J/infer
           point("frugal", 16, 700, 80.0, 210.0),  # 0.30 J/infer but over the budget
           point("idle", 1, 50, 5.0, 60.0)]       # 1.20 J/infer
    c = Constraints(latency_budget_ms=50.0)
    rec = recommend(results(pts), c, "min_energy")
    assert (rec.best.candidate_id, rec.best.concurrency) == ("frugal", 8)
    assert rec.best.energy_j_per_infer == pytest.approx(0.4)
    assert rec.runner_up.candidate_id == "fast" and "0.4 J per inference" in rec.reason
    assert rec.binding.startswith("latency budget") and rec.unchecked == []
    assert recommend(results(pts), c).best.candidate_id == "fast"  # max_throughput disagrees


def test_min_energy_without_energy_says_not_available():
    pts = [point("a", 8, 900, 20.0, None), point("b", 8, 600, 20.0, None)]
    rec = recommend(results(pts), Constraints(latency_budget_ms=50.0), "min_energy")
    assert rec.best.candidate_id == "a"  # by throughput, and said so
    assert any("min_energy: not available" in u and "max throughput instead" in u for u in rec.unchecked)
    # some points with a figure: those rank first, the rest are counted
    pts.append(point("c", 8, 300, 20.0, 30.0))
    rec = recommend(results(pts), Constraints(latency_budget_ms=50.0), "min_energy")
    assert rec.best.candidate_id == "c" and "2 of 3 load points" in rec.unchecked[0]


def test_gpu_memory_limit_reads_the_window_telemetry():
    pts = [point("a", 8, 900, 20.0, 450.0)]
    rec = recommend(results(pts), Constraints(latency_budget_ms=50.0, max_gpu_memory_mb=1000.0))
    assert rec.best is None and rec.closest.gpu_memory_mb == pytest.approx(2000.0)


def test_profile_accepts_min_energy(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[model]\nname = "m"\n[objective]\ngoal = "min_energy"\n')
    assert load_profile(str(f)).goal == "min_energy"
    assert load_profile(str(ROOT / "profiles" / "resnet50_torch.toml")).model == "resnet50_torch"


# -------------------------------------------------------------- report

def test_report_gpu_section_figures_and_not_available():
    c = Constraints(latency_budget_ms=50.0)
    res = results([point("a", 4, 500, 20.0, 250.0), point("a", 8, 900, 30.0, 360.0)])
    rec = recommend(res, c, "min_energy")
    html = gpu_section(measured_points(res, rec), rec)
    assert 'id="fig-gpu-0"' in html and "Not available" not in html and "0.4 J per inference" in html
    res = results([point("a", 8, 900, 20.0, None)])
    rec = recommend(res, c)
    html = gpu_section(measured_points(res, rec), rec)
    assert "<b>Not available:</b>" in html and "fig-gpu" not in html


# ------------------------------------------------------------ the kit

@pytest.mark.triton
@pytest.mark.timeout(600)
def test_gpu_check_kit_cpu_flow(tmp_path):
    """scripts/gpu-check.sh --cpu: the GPU check's flow end to end on the CPU (embedded Triton)."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed: the kit's model needs it (`pip install torch==2.13.0+cpu`, "
                    "or `bash scripts/gpu-check.sh --cpu --install-torch`)")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    out = tmp_path / "out"
    env = dict(os.environ, GPUKIT_WORK=str(tmp_path / "work"), PYTHON=sys.executable)  # the Python with torch
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--cpu", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=570)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "resnet50_torch" and summary["candidates_measured"] >= 1
    assert (out / "results.jsonl").stat().st_size > 0 and (out / "tritonserver.log").exists()
    assert "GPU telemetry: not available" in proc.stdout and "CHECK PASSED" in proc.stdout
