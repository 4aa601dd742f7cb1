"""tuner.report: the self-contained HTML report, from made-up results (no server).

The results imitate a sweep: a baseline plus a grid of candidates whose
latency grows with load until the server saturates; latencies are drawn with
numpy so every statistic goes through the real summary code. A headless
Chromium renders the page (when installed) to prove the figures draw offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tuner import config as cfgmod
from tuner.config import CandidateSpec
from tuner.profile import parse_profile
from tuner.search.recommend import recommend
from tuner.report.html import build_report
from tuner.report.points import Pt, pareto_frontier
from tuner.results.records import CandidateRecord, Measurement
from tuner.results.store import RunResults
from tuner.results.stats import ServerDelta, WindowSample

FIG_IDS = ("fig-curves", "fig-pareto", "fig-heatmap", "fig-breakdown", "fig-capacity", "fig-batches")
XSS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
CONFIGS = Path(__file__).parent / "configs"
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)

PROFILE_TOML = """\
# {comment}
[model]
name = "{model}"

[search]
max_batch_size = [1, 4, 8, 16]
max_queue_delay_us = [0, 1000]
instance_count = [1, 2]
concurrency = [1, 2, 4, 8, 16, 32]

[constraints]
latency_percentile = "p99"
latency_budget_ms = 20
"""


def make_profile(model: str = "resnet50_onnx", comment: str = "test profile"):
    text = PROFILE_TOML.format(model=model.replace('"', '\\"'), comment=comment)
    return parse_profile(text, "profiles/resnet.toml")


def measure(cid: str, concurrency: int, capacity: float, base_ms: float, rng: np.random.Generator,
            *, server: bool = True, windows: int = 3, nan: bool = False) -> Measurement:
    """A closed-loop load point: throughput saturates at `capacity`, latency queues up behind it."""
    mean_ms = max(base_ms, concurrency / capacity * 1000.0)
    thr = concurrency / mean_ms * 1000.0
    samples = []
    for w in range(windows):
        n = 0 if nan else max(1, int(thr * rng.uniform(0.98, 1.02)))
        lat_us = (rng.lognormal(np.log(mean_ms * 1000.0), 0.25, n)).astype(int).tolist()
        delta = None
        if server and n:
            queue = max(0.0, mean_ms - base_ms)
            delta = ServerDelta(success_count=n, queue_ns=int(queue * 1e6 * n), compute_input_ns=int(0.1e6 * n),
                                compute_infer_ns=int(base_ms * 0.8e6 * n), compute_output_ns=int(0.05e6 * n),
                                inference_count=n, execution_count=max(1, n // 4))
        samples.append(WindowSample(start_s=100.0 + 10 * concurrency + w, duration_s=1.0,
                                    latencies_us=lat_us, server=delta))
    return Measurement(cid, concurrency, samples, stable=not nan)


def make_results(model: str = "resnet50_onnx", fail_reason: str = "model failed to load: out of memory",
                 seed: int = 0) -> RunResults:
    rng = np.random.default_rng(seed)
    cands: dict[str, CandidateRecord] = {}
    points: list[Measurement] = []
    base_spec = CandidateSpec(32, 100, (8, 16), 1)
    cands["baseline"] = CandidateRecord(base_spec, "loaded", is_baseline=True)
    for c in (1, 2, 4, 8, 16, 32):
        points.append(measure("baseline", c, capacity=400, base_ms=4.0, rng=rng))
    for spec in cfgmod.expand_specs([1, 4, 8, 16], [0, 1000], [1, 2]):
        cid = spec.candidate_id
        if spec.max_batch_size == 16 and spec.instance_count == 2 and spec.max_queue_delay_us == 1000:
            cands[cid] = CandidateRecord(spec, "failed", reason=fail_reason)
            continue
        cands[cid] = CandidateRecord(spec, "loaded")
        capacity = 250 * spec.max_batch_size ** 0.6 * spec.instance_count ** 0.7
        base_ms = 3.0 + spec.max_queue_delay_us / 1000.0
        for c in (1, 2, 4, 8, 16, 32):
            points.append(measure(cid, c, capacity, base_ms, rng))
    meta = {"schema": 1, "type": "run", "command": "sweep", "profile": "resnet", "model": model,
            "server": {"url": "localhost:8001", "version": "2.51.0", "embedded": True},
            "tuner_version": "0.1.0", "started_at": "2025-01-01T00:00:00Z", "profile_sha256": "abc"}
    return RunResults(meta=meta, candidates=cands, points=points)


def render(results: RunResults, profile=None, summary: dict | None = None, *, extra: str = "") -> str:
    profile = profile or make_profile(results.meta.get("model") or "m")
    rec = recommend(results, profile.constraints)
    original = cfgmod.read_config(CONFIGS / "image_classifier_onnx.pbtxt")
    if rec.best is None or rec.best.candidate_id == "baseline":
        chosen = original
    else:
        chosen = cfgmod.make_candidate(original, results.candidates[rec.best.candidate_id].spec)
    diff = cfgmod.diff_configs(original, chosen) + extra
    summary = summary if summary is not None else {"profile": "resnet", "duration_s": 754.2,
                                                   "candidates_measured": 15, "candidates_failed": 1}
    return build_report(results, rec, profile, cfgmod.format_config(original) + extra,
                        cfgmod.format_config(chosen) + extra, diff, summary)


@pytest.fixture(scope="module")
def report_html() -> str:
    return render(make_results())


# ------------------------------------------------------------------ structure

def test_report_is_self_contained(report_html):
    h = report_html
    assert h.startswith("<!DOCTYPE html>") and h.rstrip().endswith("</html>")
    for fid in FIG_IDS:
        assert len(re.findall(rf'<div id="{fid}"', h)) == 1, fid
    assert h.count("plotly.js v") == 1  # the bundle's header comment: embedded exactly once
    assert "newPlot" in h
    assert not re.search(r"<script[^>]*\ssrc\s*=", h, re.I)
    assert not re.search(r"""src\s*=\s*["']?\s*(https?:)?//""", h, re.I)
    # outside scripts (the bundle's source mentions attribution links), no link to load anything
    markup = re.sub(r"<script\b.*?</script>", "", h, flags=re.S | re.I)
    assert not re.search(r"(https?:)?//", markup.replace("<!DOCTYPE html>", ""), re.I)
    assert not re.search(r"<link\b|@import|url\(", markup, re.I)
    assert h.count("<script") == h.count("</script>")


def test_headline_table_config_and_metadata(report_html):
    h = report_html
    assert "Recommended config gives" in h and "vs baseline" in h and "Binding constraint" in h
    assert 'id="candidates"' in h and "click to sort" in h
    assert 'class="failed"' in h and "model failed to load: out of memory" in h
    assert "mbs16-qd1000-pbsauto-i2" in h  # the failed candidate is listed
    assert '<span class="add">' in h and '<span class="del">' in h  # colored diff lines
    assert 'id="recommended-pbtxt"' in h and "max_batch_size: 16" in h
    assert "localhost:8001" in h and "2.51.0" in h and "12m 34s" in h
    assert "p99 ≤ 20 ms" in h


def test_recommended_candidate_is_starred_in_table_and_plot(report_html):
    rec = recommend(make_results(), make_profile().constraints)
    assert rec.best is not None and rec.best.candidate_id != "baseline"
    row = re.search(r'<tr class="rec">(.*?)</tr>', report_html).group(1)
    assert rec.best.candidate_id in row and "★" in row
    assert '"symbol":"star"' in report_html
    assert '"dash":"dash"' in report_html  # the baseline line


def test_pareto_frontier_keeps_only_undominated_points():
    def mk(tp, lat):
        return Pt(Measurement("x", 1, [], True), _summary(tp, lat), True)

    pts = [mk(100, 5), mk(200, 8), mk(150, 9), mk(300, 20), mk(250, 25), mk(50, 4)]
    front = pareto_frontier(pts, "p99")
    assert [(p.s.throughput_infer_per_s, p.lat("p99")) for p in front] == [(50, 4), (100, 5), (200, 8), (300, 20)]


def _summary(tp: float, lat: float):
    from tuner.results.stats import PointSummary

    return PointSummary(tp, {"p50": lat / 2, "p90": lat, "p95": lat, "p99": lat, "mean": lat / 2}, 0, 1, 1.0,
                        None, None)


def test_heatmap_cells_show_best_slo_bound_throughput():
    results = make_results()
    profile = make_profile()
    from tuner.report.figures import fig_heatmap
    from tuner.report.points import measured_points as _points

    c = profile.constraints
    pts = _points(results, recommend(results, c))
    fig = fig_heatmap(results, pts, c)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 2  # one per instance count
    one = heat[0]
    assert list(one.x) == ["1", "4", "8", "16"] and list(one.y) == ["0 µs", "1000 µs"]
    cid = "mbs8-qd0-pbsauto-i1"
    want = max(p.s.throughput_infer_per_s for p in pts[cid] if p.feasible)
    assert one.z[0][2] == pytest.approx(want)
    # the failed candidate: an empty cell with a note saying why
    two = heat[1]
    assert two.z[1][3] is None and "failed" in two.customdata[1][3]


def test_finalize_run_writes_the_report_from_stored_files(tmp_path):
    from tuner.report.outputs import finalize_run
    from tuner.results.store import append_record

    run = tmp_path / "resnet-20250101T000000Z"
    (run / "original").mkdir(parents=True)
    shutil.copy(CONFIGS / "image_classifier_onnx.pbtxt", run / "original" / "config.pbtxt")
    (run / "profile.toml").write_text(make_profile().text, encoding="utf-8")
    results = make_results()
    append_record(run / "results.jsonl", results.meta)
    for r in results.candidates.values():
        append_record(run / "results.jsonl", r.to_record())
    for m in results.points:
        append_record(run / "results.jsonl", m.to_record())
    summary = finalize_run(run)
    h = (run / "report.html").read_text(encoding="utf-8")
    assert all(f'<div id="{fid}"' in h for fid in FIG_IDS)
    assert summary["recommended"]["candidate_id"] in h and "Recommended config gives" in h


# ------------------------------------------------------------------ injection

def test_data_strings_are_escaped_everywhere():
    payload = " ".join(XSS)
    results = make_results(model=f"m{XSS[0]}", fail_reason=f"load error {payload}")
    rng = np.random.default_rng(2)
    results.points.append(measure(XSS[0], 1, 100, 3.0, rng))  # a tampered file: an id nobody planned
    results.points.append(measure(XSS[1], 1, 100, 3.0, rng))
    profile = make_profile(model=f"m{XSS[0]}", comment=payload)
    h = render(results, profile, {"profile": XSS[1], "duration_s": 1.0}, extra=f"\n# {payload}\n")
    for bad in XSS + ("<img", "alert(1)</script>", "onerror=alert(1)>"):
        assert bad not in h, bad
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in h and "&lt;img src=x onerror=alert(1)&gt;" in h
    # our own script tags only: plotly config, the bundle, one per figure, the sort script
    assert h.count("<script") == h.count("</script>") == 2 + len(FIG_IDS) + 1


# ------------------------------------------------------------------ edge cases

def _edge_cases() -> dict[str, RunResults]:
    full = make_results()
    meta = full.meta
    rng = np.random.default_rng(3)
    failed = {cid: replace(r, status="failed", reason="failed to load: bad config")
              for cid, r in full.candidates.items()}
    failed_pts = [replace(m, status="failed", windows=[replace(w, latencies_us=[], errors=5) for w in m.windows])
                  for m in full.points[:4]]
    base = {"baseline": full.candidates["baseline"]}
    one_spec = CandidateSpec(8, 0, (), 1)
    return {
        "empty": RunResults(meta={}, candidates={}, points=[]),
        "no_points": RunResults(meta=meta, candidates=dict(full.candidates), points=[]),
        "all_failed": RunResults(meta=meta, candidates=failed, points=failed_pts),
        "nan_latencies": RunResults(meta=meta, candidates=base, points=[
            measure("baseline", c, 300, 3.0, rng, nan=True) for c in (1, 2, 4)]),
        "some_nan": RunResults(meta=meta, candidates=base, points=[
            measure("baseline", 1, 300, 3.0, rng), measure("baseline", 2, 300, 3.0, rng, nan=True),
            measure("baseline", 4, 300, 3.0, rng)]),
        "baseline_only": RunResults(meta=meta, candidates=base, points=[
            measure("baseline", c, 300, 3.0, rng) for c in (1, 2, 4, 8)]),
        "single_candidate_no_server_stats": RunResults(
            meta=meta, candidates={one_spec.candidate_id: CandidateRecord(one_spec, "loaded")},
            points=[measure(one_spec.candidate_id, c, 300, 3.0, rng, server=False) for c in (1, 2)]),
        "nothing_feasible": RunResults(meta=meta, candidates=dict(full.candidates), points=[
            measure(m.candidate_id, m.concurrency, 10, 50.0, rng) for m in full.points[::5]]),
    }


@pytest.mark.parametrize("case", sorted(_edge_cases()))
def test_edge_cases_render(case):
    results = _edge_cases()[case]
    h = render(results, make_profile(), {})
    for fid in FIG_IDS:
        assert f'<div id="{fid}"' in h
    assert h.count("plotly.js v") == 1
    rec = recommend(results, make_profile().constraints)
    if rec.best is None:
        assert "No candidate meets the constraints" in h
    else:
        assert "Recommended config gives" in h


# ------------------------------------------------------------------ headless browser

class _FigureScan(HTMLParser):
    """For each figure div: does a rendered plot (class main-svg) sit inside it?"""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack: list[str | None] = []
        self.rendered: dict[str, int] = {}
        self.containers = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if "plot-container" in classes:
            self.containers += 1
        if "main-svg" in classes:
            for fid in {f for f in self.stack if f}:
                self.rendered[fid] = self.rendered.get(fid, 0) + 1
        if tag in self.VOID:
            return
        fid = a.get("id")
        self.stack.append(fid if fid in FIG_IDS else None)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag not in self.VOID and self.stack:
            self.stack.pop()


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium); CI must render the report")
        pytest.skip("chromium not installed")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["full", "all_failed"])
def test_report_renders_in_headless_chromium(tmp_path, case, report_html):
    h = report_html if case == "full" else render(_edge_cases()[case], make_profile(), {})
    page = tmp_path / "report.html"
    page.write_text(h, encoding="utf-8")
    out = _chromium(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    scan = _FigureScan()
    scan.feed(out.stdout)
    assert sorted(scan.rendered) == sorted(FIG_IDS), (scan.rendered, out.stderr[-2000:])
    assert scan.containers == len(FIG_IDS)

    shot = tmp_path / "report.png"
    out = _chromium([f"--screenshot={shot}", "--window-size=1400,3000", "--virtual-time-budget=5000",
                     page.as_uri()], tmp_path)
    assert out.returncode == 0 and shot.exists() and shot.stat().st_size > 20_000, out.stderr[-2000:]
    keep = os.environ.get("TUNER_REPORT_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / f"report-{case}.png")
        shutil.copy(page, Path(keep) / f"report-{case}.html")


def test_table_sorts_on_header_click(tmp_path, report_html):
    click = ('<script>var th = document.querySelector(\'#candidates th[data-col="6"]\');'
             "th.click(); th.click();</script></body>")
    page = tmp_path / "sorted.html"
    page.write_text(report_html.replace("</body>", click), encoding="utf-8")
    out = _chromium(["--virtual-time-budget=5000", "--dump-dom", page.as_uri()], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    body = re.search(r'<table id="candidates".*?<tbody>(.*?)</tbody>', out.stdout, re.S).group(1)
    first_cells = re.findall(r"<tr[^>]*>\s*<td[^>]*>(.*?)</td>", body)
    values = [float(v) for v in re.findall(r'<tr[^>]*>(?:\s*<td[^>]*>.*?</td>){6}\s*<td data-v="([^"]*)"', body)]
    assert values == sorted(values, reverse=True) and len(values) == len(first_cells) == 17
    rec = recommend(make_results(), make_profile().constraints)
    assert first_cells[0].startswith(rec.best.candidate_id)  # the fastest first after two clicks


def test_error_rate_is_shown_per_candidate():
    results = make_results()
    cid = "mbs4-qd0-pbsauto-i1"
    pts = [p for p in results.points if p.candidate_id == cid]
    for p in pts:
        for w in p.windows:
            w.errors = len(w.latencies_us) // 9  # ~10% of requests failed
    errors = sum(w.errors for p in pts for w in p.windows)
    done = sum(w.completed for p in pts for w in p.windows)
    html = render(results)
    row = html[html.index(f">{cid}<"):]
    row = row[:row.index("</tr>")]
    assert f"{errors / (errors + done) * 100:.2f}%" in row
    assert "error rate" in html
