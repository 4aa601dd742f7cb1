"""report.html: one self-contained page (plotly.js embedded once, no network)
built from a run's stored results alone.

Sections: headline (the recommendation against the baseline, with the
confirmed gain and its interval, or "keep the current config"), the
confirmation rounds and the batch sizes the server ran
(`tuner.report.confirmation`), five figures (`tuner.report.figures`), a
sortable table of every candidate (skipped ones with the reason), the
recommended config.pbtxt with its diff, and the run's metadata.

Every string that comes from data (model, ids, reasons, configs, profile) is
HTML-escaped, both in the page and in figure text: Plotly JSON-encodes figure
data with `<` written as `\\u003c`, and renders the escaped entities as text.
"""

from __future__ import annotations

import plotly.graph_objects as go

from tuner.profile import Profile
from tuner.report.figures import (CAPACITY_HEADROOM, fig_breakdown, fig_capacity, fig_curves, fig_heatmap,
                                  fig_pareto)
from tuner.report.gpu import gpu_section
from tuner.report.confirmation import batches_section, confirmation_section, gain_text
from tuner.report.points import Pt, best_feasible, candidate_ids, measured_points
from tuner.report.steps import spec_text, steps_section
from tuner.report.text import clip, esc, fmt_num
from tuner.config import JointSpec
from tuner.search.recommend import OperatingPoint, Recommendation
from tuner.results.records import RunRecord
from tuner.results.store import RunResults

GOAL_TEXT = {"max_throughput": "max throughput",
             "min_latency": "min latency at the required throughput",
             "max_throughput_per_instance": "max throughput per instance",
             "min_energy": "min GPU energy per inference"}


def capacity_text(results: RunResults, rec: Recommendation, headroom: float = CAPACITY_HEADROOM) -> str:
    if rec.best is None:
        return "Nothing meets the constraints, so there is no capacity to plan with."
    from tuner.search.plan import capacity_of

    cap = capacity_of(results, rec, rec.best.candidate_id) or rec.best.throughput_infer_per_s
    return (f"One replica = one server (GPU) running the recommended config: {fmt_num(cap)} infer/s within the budget, "
            f"{fmt_num(cap * (1 - headroom))} infer/s with {headroom:.0%} kept free. "
            "<code>tuner plan RUN_DIR --target-rps N</code> sizes a fleet (replicas, expected p99, cost).")


def _op_line(op: OperatingPoint, pct: str) -> str:
    return (f"{fmt_num(op.throughput_infer_per_s)} infer/s at {esc(pct)} {fmt_num(op.latency_ms.get(pct), 2)} ms "
            f"(concurrency {op.concurrency})")


def headline(rec: Recommendation, conf=None) -> str:
    """The recommendation against the baseline; after a confirmation phase, the gain with its
    interval, the ties, or that the current config stays (no gain survived the noise)."""
    c, pct = rec.constraints, rec.constraints.latency_percentile
    base = rec.baseline
    if rec.best is None:
        closest = (f"<p>Closest point: <b>{esc(rec.closest.candidate_id)}</b> at {_op_line(rec.closest, pct)}.</p>"
                   if rec.closest else "<p>No load point completed a request.</p>")
        return (f'<div class="box fail"><h2>No candidate meets the constraints</h2>'
                f"<p>Budget: {esc(pct)} ≤ {c.latency_budget_ms:g} ms"
                + (f", ≥ {c.min_throughput_infer_per_s:g} infer/s" if c.min_throughput_infer_per_s else "")
                + f", errors ≤ {c.max_error_rate * 100:g}% of requests.</p>{closest}{_unchecked_html(rec)}"
                f'<p class="reason">{esc(rec.reason)}</p></div>')
    b = rec.best
    keep = conf is not None and conf.keep_current
    thr, lat, line = _measured(b, conf, pct)
    vs = (conf.config("baseline") if conf is not None else None)
    gain = ""
    if base is not None and not keep:
        if vs is not None:
            line += f" vs baseline {fmt_num(vs.throughput.mean)} at {fmt_num(vs.latency.mean, 2)} ms"
        else:
            line += f" vs baseline {fmt_num(base.throughput_infer_per_s)} at {fmt_num(base.latency_ms.get(pct), 2)} ms"
        if conf is not None and conf.gain is not None:
            gain = f'<div class="stat"><span>{gain_text(conf, b)}</span>throughput vs baseline (confirmed)</div>'
        elif base.throughput_infer_per_s > 0:
            gain = f'<div class="stat"><span>{b.throughput_infer_per_s / base.throughput_infer_per_s:.2f}×</span>' \
                   "throughput vs baseline (not confirmed)</div>"
    stats = (f'<div class="stats"><div class="stat"><span>{thr}</span>infer/s</div>'
             f'<div class="stat"><span>{lat}</span>{esc(pct)} latency (budget {c.latency_budget_ms:g} ms)</div>'
             f'<div class="stat"><span>{b.concurrency}</span>concurrency</div>{gain}</div>')
    title = f"Recommended: {esc(b.candidate_id)}"
    if keep:
        g = conf.gain
        title = "Keep the current config"
        line = ("No candidate beats it by more than the noise" + (
            f": the best, {esc(g.candidate_id)}, gives {gain_text(conf, b)} its throughput" if g else ""))
    ties = (f"<p><b>Tied (within noise, or a second run could recommend it):</b> "
            f"{esc(', '.join(conf.tied_with))}</p>" if conf is not None and conf.tied_with else "")
    if conf is not None and conf.marginal:
        other = (f"recommend {', '.join(conf.marginal_with)}" if keep else "keep the current config")
        ties += (f'<p class="warn"><b>Marginal:</b> a second run may {esc(other)}: the gain lies within what '
                 "two runs differ by. Either answer is defensible; a longer confirmation "
                 "(<code>[search] confirm_visits</code>) narrows it.</p>")
    return (f'<div class="box ok"><h2>{title}</h2>{stats}<p>{line}.</p>{ties}'
            f"<p><b>Binding constraint:</b> {esc(rec.binding)}</p>{_unchecked_html(rec)}"
            f'<p class="reason">{esc(rec.reason)}</p></div>')


def _measured(b: OperatingPoint, conf, pct: str) -> tuple[str, str, str]:
    """(throughput, latency, sentence) of the recommendation: the confirmation's means of interleaved
    visits, with their interval, where it was confirmed; else its point in the search."""
    confirmed = conf.config(b.candidate_id) if conf is not None else None
    if confirmed is None:
        return (fmt_num(b.throughput_infer_per_s), f"{fmt_num(b.latency_ms.get(pct), 2)} ms",
                f"Recommended config gives <b>{fmt_num(b.throughput_infer_per_s)} infer/s</b> at {esc(pct)} "
                f"<b>{fmt_num(b.latency_ms.get(pct), 2)} ms</b>")
    t, lat = confirmed.throughput, confirmed.latency
    return (fmt_num(t.mean), f"{fmt_num(lat.mean, 2)} ms",
            f"Recommended config gives <b>{fmt_num(t.mean)} infer/s</b> [{fmt_num(t.lo)}, {fmt_num(t.hi)}] at "
            f"{esc(pct)} <b>{fmt_num(lat.mean, 2)} ms</b> (confirmed over {conf.rounds} interleaved rounds)")


def shapes_section(results: RunResults, rec: Recommendation) -> str:
    """Latency per request shape at the recommended and the baseline operating points (several shapes only)."""
    from tuner.results.frame import shape_latencies

    mix = ((results.run.environment if results.run else None) or {}).get("input_mix")
    rows = []
    for label, op in (("recommended", rec.best), ("baseline", rec.baseline)):
        pts = [p for p in results.points_of(op.candidate_id) if p.request_rate is None] if op else []
        if not pts:
            continue
        p = min(pts, key=lambda m: abs(m.concurrency - op.concurrency))
        for r in shape_latencies(p.windows, mix, p.summary_windows) or ():
            rows.append(f"<tr><td>{esc(label)} {esc(op.candidate_id)}</td><td>{p.concurrency}</td>"
                        f"<td>{esc(r['shape'])}</td><td>{r['share']:.0%}</td>"
                        + "".join(f"<td>{fmt_num(r[k], 2)}</td>" for k in ("p50_ms", "p90_ms", "p99_ms")) + "</tr>")
    if not rows:
        return ""
    return ('<section><h2>Latency per request shape</h2><p class="sub">The requests carried several shapes '
            "(a shape mix or input data); Triton batches only requests of one shape.</p><table><tr><th>config</th>"
            "<th>concurrency</th><th>shape</th><th>share</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th></tr>"
            + "".join(rows) + "</table></section>")


def _unchecked_html(rec: Recommendation) -> str:
    items = getattr(rec, "unchecked", None) or []
    return "".join(f"<p><b>Not checked:</b> {esc(u)}</p>" for u in items)


def candidates_table(results: RunResults, points: dict[str, list[Pt]], rec: Recommendation) -> str:
    pct = rec.constraints.latency_percentile
    heads = ["candidate", "max_batch_size", "queue delay (µs)", "preferred sizes", "instances", "status",
             "best feasible infer/s", f"{pct} (ms)", "concurrency", "stable", "error rate", "failure / skip reason"]
    rows = []
    for cid in candidate_ids(results):
        r = results.candidates.get(cid)
        spec = r.spec if r else None
        best = best_feasible(points.get(cid, []), pct)
        status = r.status if r else "unknown"
        reason = r.reason if r and r.status in ("failed", "skipped") else ""
        if r and status != "failed" and points.get(cid) and best is None:
            status = "no feasible point"
        none = ("—", "")  # (cell html, sort value)
        joint = isinstance(spec, JointSpec)  # several models: their settings in the first cell
        spec_cells = [(esc(spec_text(spec)), ""), none, none, none] if joint else [
            (str(spec.max_batch_size), spec.max_batch_size),
            ((str(spec.max_queue_delay_us), spec.max_queue_delay_us) if spec.dynamic_batching or spec.sequence
             else ("off", -1)),
            (esc(", ".join(map(str, spec.preferred_batch_size)) or "default"), ""),
            (str(spec.instance_count), spec.instance_count),
        ] if spec else [none] * 4
        best_cells = [
            (fmt_num(best.s.throughput_infer_per_s), best.s.throughput_infer_per_s),
            (fmt_num(best.lat(pct), 2), best.lat(pct)),
            (str(best.m.concurrency), best.m.concurrency),
            ("yes" if best.m.stable else "NO", ""),
        ] if best else [("—", -1)] + [none] * 3
        cells = [
            (esc(cid) + (" ★" if rec.best and rec.best.candidate_id == cid else ""), esc(cid)),
            *spec_cells,
            (esc(status), esc(status)),
            *best_cells,
            _error_rate_cell(points.get(cid, [])),
            (f'<span title="{esc(reason)}">{esc(clip(reason, 160))}</span>' if reason else "", ""),
        ]
        cls = ' class="rec"' if rec.best and rec.best.candidate_id == cid else (
            ' class="failed"' if status == "failed" else ' class="skipped"' if status == "skipped" else "")
        tds = "".join(f'<td data-v="{esc(v)}">{text}</td>' for text, v in cells)
        rows.append(f"<tr{cls}>{tds}</tr>")
    ths = "".join(f'<th data-col="{i}" title="click to sort">{esc(h)}</th>' for i, h in enumerate(heads))
    return (f'<div class="scroll"><table id="candidates" class="sortable"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _error_rate_cell(pts: list[Pt]) -> tuple[str, float]:
    """Failed requests over all of a candidate's measured windows (gRPC errors, bad outputs)."""
    errors = sum(w.errors for p in pts for w in p.m.windows)
    total = errors + sum(w.completed for p in pts for w in p.m.windows)
    if total == 0:
        return "—", -1
    rate = errors / total
    return (f"{rate * 100:.2f}%" if errors else "0"), rate


def diff_html(diff: str) -> str:
    out = []
    for line in diff.splitlines():
        cls = ("hunk" if line.startswith("@@") else "meta" if line.startswith(("+++", "---"))
               else "add" if line.startswith("+") else "del" if line.startswith("-") else "")
        out.append(f'<span class="{cls}">{esc(line)}</span>' if cls else esc(line))
    return "\n".join(out) if out else "(no changes: the recommended config is the original)"


def _duration(seconds) -> str:
    try:
        seconds = int(round(float(seconds)))
    except (TypeError, ValueError):
        return "—"
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def metadata(results: RunResults, rec: Recommendation, profile: Profile, summary: dict) -> str:
    run, c = results.run or RunRecord(command="", model=""), rec.constraints
    server = run.server
    failed = sum(1 for r in results.candidates.values() if r.status == "failed")
    skipped = sum(1 for r in results.candidates.values() if r.status == "skipped")
    search = summary.get("search") or {}
    measured = summary.get("candidates_measured",
                           sum(1 for r in results.candidates.values() if r.status == "loaded" and not r.is_baseline))
    rows = [
        ("model", f"{run.model or profile.model}" + (f" (version {run.version})" if run.version else "")),
        ("server", f"{server.url or profile.url or 'embedded'} — Triton {server.version or '?'}"
                   + (" (embedded)" if server.embedded else "")),
        ("profile", f"{summary.get('profile') or profile.name} "
                    f"(sha256 {run.profile_sha256 or profile.sha256})"),
        ("constraints", f"{c.latency_percentile} ≤ {c.latency_budget_ms:g} ms, ≥ {c.min_throughput_infer_per_s:g} "
                        f"infer/s, errors ≤ {c.max_error_rate * 100:g}% of requests"
                        + (f", GPU memory ≤ {c.max_gpu_memory_mb:g} MB" if c.max_gpu_memory_mb else "")),
        ("candidates", f"{measured} measured, {summary.get('candidates_skipped', skipped)} skipped, "
                       f"{summary.get('candidates_failed', failed)} failed, {len(results.points)} load points"),
        ("search", f"{search.get('strategy') or profile.search.strategy}"
                   + (f", {search['measure_s']:.0f} s measuring" if search.get("measure_s") is not None else "")),
        ("objective", GOAL_TEXT.get(rec.goal, rec.goal)),
        ("started", run.started_at or "—"),
        ("duration", _duration(summary.get("duration_s", results.duration_s))),
        ("tuner", run.tuner_version or "—"),
    ]
    trs = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{trs}</table>'


def _fig_html(fig: go.Figure, div_id: str, first: bool) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=first, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;margin:0;background:#f4f5f7;color:#222}
main{max-width:1300px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:26px;margin:10px 0 4px}h2{font-size:20px;margin:0 0 10px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:18px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.sub{color:#666;margin:0 0 12px}
.box{border-radius:8px;padding:16px 20px;margin:18px 0}.box.ok{background:#eef8ee;border:1px solid #9cd09c}
.box.fail{background:#fdecec;border:1px solid #e39a9a}.box.fail h2{color:#a11}
.reason{color:#555;font-size:13px}
.stats{display:flex;gap:14px;flex-wrap:wrap;margin:6px 0 10px}
.stat{background:#fff;border-radius:6px;padding:8px 14px;min-width:130px;color:#555;font-size:13px}
.stat span{display:block;font-size:24px;font-weight:600;color:#111}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:5px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
table.sortable th{cursor:pointer;background:#f0f2f5;position:sticky;top:0;user-select:none}
table.sortable th.asc::after{content:" ▲"}table.sortable th.desc::after{content:" ▼"}
td:first-child{white-space:nowrap}td:last-child{min-width:200px}.scroll{overflow-x:auto}
tr.rec td{background:#fff7d6;font-weight:600}tr.failed td{color:#a11}tr.skipped td{color:#888}
table.meta th{width:140px;color:#555}
pre{background:#1e1e1e;color:#ddd;padding:12px;border-radius:6px;overflow:auto;font-size:12.5px;max-height:520px}
pre .add{color:#8fe28f}pre .del{color:#ff8a8a}pre .hunk{color:#79b8ff}pre .meta{color:#aaa;font-weight:600}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:16px}@media(max-width:1000px){.cols{grid-template-columns:1fr}}
details summary{cursor:pointer;color:#333;margin:8px 0}
"""

SORT_JS = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = +th.dataset.col;
    var asc = !th.classList.contains("asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(asc ? "asc" : "desc");
    var key = function (tr) {
      var td = tr.cells[col], v = (td.dataset.v !== "" ? td.dataset.v : td.textContent).trim();
      return v !== "" && !isNaN(Number(v)) ? Number(v) : v.toLowerCase();
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), r = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0)
        : (typeof x === "number" ? -1 : 1);
      return asc ? r : -r;
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def build_report(results: RunResults, rec: Recommendation, profile: Profile, original_pbtxt: str,
                 recommended_pbtxt: str, diff: str, summary: dict, conf=None) -> str:
    c = rec.constraints
    points = measured_points(results, rec)
    model = (results.run.model if results.run else "") or profile.model
    figs = [
        ("fig-curves", fig_curves(points, rec)),
        ("fig-pareto", fig_pareto(points, rec)),
        ("fig-heatmap", fig_heatmap(results, points, c)),
        ("fig-breakdown", fig_breakdown(points, c)),
        ("fig-capacity", fig_capacity(results, rec)),
    ]
    fig_html = [_fig_html(fig, fid, i == 0) for i, (fid, fig) in enumerate(figs)]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>tuner report: {esc(model)}</title>
<style>{CSS}</style></head>
<body><main>
<h1>Batching tuning report: {esc(model)}</h1>
<p class="sub">profile {esc(summary.get("profile") or profile.name)} ·
target {esc(c.latency_percentile)} ≤ {c.latency_budget_ms:g} ms · objective: {esc(GOAL_TEXT.get(rec.goal, rec.goal))}</p>
{headline(rec, conf)}
<section><h2>Latency vs throughput</h2>
<p class="sub">One line per candidate; the baseline is the dashed grey line, the recommended point the gold star.
Hover a point for its concurrency, p50/p99 and errors.</p>{fig_html[0]}</section>
{confirmation_section(conf, rec)}
<section><h2>Pareto frontier</h2>{fig_html[1]}</section>
<section><h2>Search space</h2>{fig_html[2]}</section>
<section><h2>Where the time goes (server side)</h2>{fig_html[3]}</section>
{batches_section(results, rec, conf)}
{steps_section(results, rec, summary.get("steps") or [])}
<section><h2>Capacity</h2><p class="sub">{capacity_text(results, rec)}</p>{fig_html[4]}</section>
{gpu_section(points, rec)}
{shapes_section(results, rec)}
<section><h2>All candidates</h2><p class="sub">Click a column header to sort. ★ marks the recommendation.</p>
{candidates_table(results, points, rec)}</section>
<section><h2>Recommended config</h2><div class="cols">
<div><h3>{"recommended/&lt;model&gt;/config.pbtxt" if summary.get("steps") else "recommended/config.pbtxt"}</h3><pre id="recommended-pbtxt">{esc(recommended_pbtxt)}</pre></div>
<div><h3>diff against the original</h3><pre id="config-diff">{diff_html(diff)}</pre></div></div>
<details><summary>original config.pbtxt</summary><pre>{esc(original_pbtxt)}</pre></details></section>
<section><h2>Run</h2>{metadata(results, rec, profile, summary)}
<details><summary>profile ({esc(profile.name)})</summary><pre>{esc(profile.text)}</pre></details></section>
</main>
<script>{SORT_JS}</script>
</body></html>
"""
