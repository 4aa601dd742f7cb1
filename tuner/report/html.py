"""report.html: one self-contained page (plotly.js embedded once, no network)
built from a run's stored results alone.

Sections: headline (the recommendation against the baseline), five figures
(latency/throughput curves, Pareto frontier, SLO-bound throughput heatmap,
server-side breakdown, replicas needed vs target load), a sortable table of every
candidate (skipped ones with the reason), the recommended
config.pbtxt with its diff, and the run's metadata.

Every string that comes from data (model, ids, reasons, configs, profile) is
HTML-escaped, both in the page and in figure text: Plotly JSON-encodes figure
data with `<` written as `\\u003c`, and renders the escaped entities as text.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tuner.profile import Profile
from tuner.search.recommend import Constraints, OperatingPoint, Recommendation
from tuner.results.store import Measurement, RunResults
from tuner.results.stats import PointSummary

BASELINE = "baseline"
BREAKDOWN = (("queue", "queue"), ("compute_input", "compute input"),
             ("compute_infer", "compute infer"), ("compute_output", "compute output"))
FIG_HEIGHT = 480


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | None) -> float | None:
    """A finite float, or None (a gap in a figure)."""
    return float(x) if x is not None and math.isfinite(x) else None


def _f(x: float | None, digits: int = 1) -> str:
    return "—" if _num(x) is None else f"{x:,.{digits}f}"


@dataclass(frozen=True)
class Pt:
    """One measured load point with its summary and whether it meets the constraints."""

    m: Measurement
    s: PointSummary
    feasible: bool

    @property
    def cid(self) -> str:
        return self.m.candidate_id

    def lat(self, pct: str) -> float | None:
        return _num(self.s.latency_ms.get(pct))


def _points(results: RunResults, rec: Recommendation) -> dict[str, list[Pt]]:
    """ok points with samples, per candidate, ordered by concurrency; baseline first.

    Feasibility is the recommender's (`rec.feasible`), so the page and the
    recommendation can never disagree.
    """
    feasible = {(p.candidate_id, p.concurrency) for p in rec.feasible}
    out: dict[str, list[Pt]] = {}
    for cid in _candidate_ids(results):
        pts = [Pt(m, m.summary(), (cid, m.concurrency) in feasible)
               for m in results.points_of(cid) if m.status == "ok" and m.windows]
        if pts:
            out[cid] = pts
    return out


def _candidate_ids(results: RunResults) -> list[str]:
    ids = list(results.candidates) + [p.candidate_id for p in results.points]
    ids = list(dict.fromkeys(ids))
    return sorted(ids, key=lambda i: i != BASELINE)  # stable: baseline first, then run order


def _best_feasible(pts: list[Pt], pct: str) -> Pt | None:
    ok = [p for p in pts if p.feasible]
    return max(ok, key=lambda p: (p.s.throughput_infer_per_s, -(p.lat(pct) or 0.0)), default=None)


def _colors(n: int) -> list[str]:
    return qualitative.Plotly if n <= len(qualitative.Plotly) else qualitative.Dark24


def _layout(fig: go.Figure, title: str, x: str, y: str, **kw) -> go.Figure:
    layout = dict(title=title, template="plotly_white", height=FIG_HEIGHT, hovermode="closest",
                  margin=dict(l=70, r=30, t=60, b=60), yaxis_title=y)  # the first (left) y axis only
    fig.update_layout(**(layout | kw))
    fig.update_xaxes(title_text=x)  # every subplot's
    return fig


def _empty(fig: go.Figure, message: str) -> go.Figure:
    fig.add_annotation(text=esc(message), showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=16, color="#777"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _budget_line(fig: go.Figure, c: Constraints, x_max: float) -> None:
    # A trace, not add_hline: a shape's annotation lands off-scale on a log axis.
    name = f"budget {c.latency_percentile} ≤ {c.latency_budget_ms:g} ms"
    fig.add_trace(go.Scatter(x=[0, max(x_max, 1.0) * 1.04], y=[c.latency_budget_ms] * 2, mode="lines", name=name,
                             line=dict(color="#d62728", dash="dot", width=2), hovertemplate=name + "<extra></extra>"))


def _latency_axis(fig: go.Figure, values: list[float | None]) -> None:
    """A log axis with 1-2-5 ticks when latencies span more than a decade and a half."""
    v = [x for x in values if x is not None and x > 0]
    if not v or max(v) / min(v) <= 30:
        return
    lo, hi = math.floor(math.log10(min(v))), math.ceil(math.log10(max(v)))
    ticks = [m * 10.0 ** e for e in range(lo, hi + 1) for m in (1, 2, 5)]
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _point_hover(pct: str) -> str:
    return ("<b>%{customdata[0]}</b><br>concurrency %{customdata[1]}<br>%{x:,.1f} infer/s<br>"
            f"{pct} %{{y:.2f}} ms<br>"
            "p50 %{customdata[2]:.2f} ms · p99 %{customdata[3]:.2f} ms<br>"
            "errors %{customdata[4]} · stable %{customdata[5]}<extra></extra>")


def _customdata(pts: list[Pt]) -> list[list]:
    return [[esc(p.cid), p.m.concurrency, p.lat("p50"), p.lat("p99"), p.s.errors,
             "yes" if p.m.stable else "no"] for p in pts]


def _marker(fig: go.Figure, op: OperatingPoint | None, pct: str, name: str, symbol: str, color: str) -> None:
    if op is None or _num(op.latency_ms.get(pct)) is None:
        return
    fig.add_trace(go.Scatter(
        x=[op.throughput_infer_per_s], y=[op.latency_ms[pct]], mode="markers", name=esc(name),
        marker=dict(symbol=symbol, size=20, color=color, line=dict(color="black", width=1.5)),
        hovertemplate=f"<b>{esc(name)}: {esc(op.candidate_id)}</b><br>concurrency {op.concurrency}"
                      f"<br>%{{x:,.1f}} infer/s<br>{pct} %{{y:.2f}} ms<extra></extra>"))


def fig_curves(points: dict[str, list[Pt]], rec: Recommendation) -> go.Figure:
    c = rec.constraints
    pct = c.latency_percentile
    fig = go.Figure()
    _layout(fig, f"Throughput vs {pct} latency per candidate (points ordered by concurrency)",
            "throughput (infer/s)", f"{pct} latency (ms)", legend=dict(font=dict(size=11)))
    if not points:
        return _empty(fig, "no load point was measured")
    colors = _colors(len(points))
    for i, (cid, pts) in enumerate(points.items()):
        base = cid == BASELINE
        fig.add_trace(go.Scatter(
            x=[p.s.throughput_infer_per_s for p in pts], y=[p.lat(pct) for p in pts],
            mode="lines+markers", name=esc(cid),
            line=dict(dash="dash", width=3, color="#444") if base else dict(width=1.5, color=colors[i % len(colors)]),
            marker=dict(size=9 if base else 7, symbol="square" if base else "circle"),
            customdata=_customdata(pts), hovertemplate=_point_hover(pct)))
    _budget_line(fig, c, max(p.s.throughput_infer_per_s for pts in points.values() for p in pts))
    if rec.baseline is not None and (rec.best is None or rec.baseline != rec.best):
        _marker(fig, rec.baseline, pct, "baseline point", "diamond", "#bbbbbb")
    _marker(fig, rec.best, pct, "recommended", "star", "gold")
    _marker(fig, rec.closest, pct, "closest to the budget", "x", "#d62728")
    _latency_axis(fig, [p.lat(pct) for pts in points.values() for p in pts] + [c.latency_budget_ms])
    fig.update_layout(height=max(FIG_HEIGHT, 140 + 19 * len(fig.data)))  # room for the legend
    return fig


def pareto_frontier(pts: list[Pt], pct: str) -> list[Pt]:
    """Points no other point beats on both throughput (higher) and latency (lower)."""
    ordered = sorted((p for p in pts if p.lat(pct) is not None),
                     key=lambda p: (p.lat(pct), -p.s.throughput_infer_per_s))
    front: list[Pt] = []
    for p in ordered:
        if not front or p.s.throughput_infer_per_s > front[-1].s.throughput_infer_per_s:
            front.append(p)
    return front


def fig_pareto(points: dict[str, list[Pt]], rec: Recommendation) -> go.Figure:
    c = rec.constraints
    pct = c.latency_percentile
    fig = go.Figure()
    _layout(fig, f"Pareto frontier: max throughput, min {pct} latency (all measured points)",
            "throughput (infer/s)", f"{pct} latency (ms)")
    every = [p for pts in points.values() for p in pts if p.lat(pct) is not None]
    if not every:
        return _empty(fig, "no load point with a latency was measured")
    for feasible, name, color in ((True, "meets constraints", "#2ca02c"), (False, "misses constraints", "#aaaaaa")):
        sel = [p for p in every if p.feasible == feasible]
        if sel:
            fig.add_trace(go.Scatter(
                x=[p.s.throughput_infer_per_s for p in sel], y=[p.lat(pct) for p in sel], mode="markers",
                name=name, marker=dict(size=8, color=color, opacity=0.8),
                customdata=_customdata(sel), hovertemplate=_point_hover(pct)))
    front = pareto_frontier(every, pct)
    fig.add_trace(go.Scatter(
        x=[p.s.throughput_infer_per_s for p in front], y=[p.lat(pct) for p in front], mode="lines+markers",
        name="Pareto frontier", line=dict(color="#1f77b4", width=2.5, shape="hv"),
        marker=dict(size=10, color="#1f77b4", symbol="circle-open", line=dict(width=2)),
        customdata=_customdata(front), hovertemplate=_point_hover(pct)))
    _budget_line(fig, c, max(p.s.throughput_infer_per_s for p in every))
    _marker(fig, rec.best, pct, "recommended", "star", "gold")
    _latency_axis(fig, [p.lat(pct) for p in every] + [c.latency_budget_ms])
    return fig


def _qd_label(dynamic_batching: bool, queue_delay_us: int) -> str:
    return f"{queue_delay_us} µs" if dynamic_batching else "no dyn. batching"


def fig_heatmap(results: RunResults, points: dict[str, list[Pt]], c: Constraints) -> go.Figure:
    pct = c.latency_percentile
    cands = [r for cid, r in results.candidates.items() if not r.is_baseline]
    if not cands:
        return _empty(_layout(go.Figure(), "Best SLO-bound throughput", "", ""), "no tuned candidate in this run")
    counts = sorted({r.spec.instance_count for r in cands})
    mbs = [str(x) for x in sorted({r.spec.max_batch_size for r in cands})]
    qd_specs = sorted({(r.spec.dynamic_batching, r.spec.max_queue_delay_us) for r in cands})
    qds = [_qd_label(db, q) for db, q in qd_specs]
    fig = make_subplots(rows=1, cols=len(counts), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{n} instance{'s' if n > 1 else ''}" for n in counts])
    for col, n in enumerate(counts, 1):
        z = [[None] * len(mbs) for _ in qds]
        label = [[""] * len(mbs) for _ in qds]
        note = [["not in the search"] * len(mbs) for _ in qds]
        for r in (r for r in cands if r.spec.instance_count == n):
            i = qds.index(_qd_label(r.spec.dynamic_batching, r.spec.max_queue_delay_us))
            j = mbs.index(str(r.spec.max_batch_size))
            best = _best_feasible(points.get(r.candidate_id, []), pct)
            tp = best.s.throughput_infer_per_s if best else None
            if z[i][j] is not None and (tp is None or tp <= z[i][j]):
                continue  # several preferred-size variants share a cell: keep the best
            head = f"<b>{esc(r.candidate_id)}</b><br>"
            if best is not None:
                z[i][j], label[i][j] = tp, f"{tp:,.0f}"
                note[i][j] = head + (f"{tp:,.1f} infer/s at {pct} {_f(best.lat(pct), 2)} ms "
                                     f"(concurrency {best.m.concurrency})")
            elif r.status == "failed":
                label[i][j] = "failed"
                note[i][j] = head + "failed: " + esc(_clip(r.reason, 120))
            elif r.status == "skipped":
                label[i][j] = "skipped"
                note[i][j] = head + "skipped by the search: " + esc(_clip(r.reason, 160))
            else:
                label[i][j] = "—"
                note[i][j] = head + (f"no point meets {pct} ≤ {c.latency_budget_ms:g} ms" if
                                     points.get(r.candidate_id) else "not measured")
        hover = "max_batch_size %{x}, queue delay %{y}<br>%{customdata}<extra></extra>"
        fig.add_trace(go.Heatmap(x=mbs, y=qds, z=z, text=label, texttemplate="%{text}", customdata=note,
                                 coloraxis="coloraxis", hoverongaps=False, hovertemplate=hover, xgap=3, ygap=3),
                      row=1, col=col)
        gaps = [(i, j) for i in range(len(qds)) for j in range(len(mbs)) if z[i][j] is None]
        if gaps:  # a heatmap draws nothing in an empty cell: label it and keep its hover note
            fig.add_trace(go.Scatter(
                x=[mbs[j] for _, j in gaps], y=[qds[i] for i, _ in gaps], mode="markers+text",
                text=[label[i][j] for i, j in gaps], customdata=[note[i][j] for i, j in gaps],
                marker=dict(symbol="square", size=40, color="rgba(0,0,0,0)"), textfont=dict(color="#666"),
                hovertemplate=hover, showlegend=False), row=1, col=col)
    # explicit ranges: with every cell empty, a category axis would otherwise hug the labels
    fig.update_xaxes(type="category", range=[-0.5, len(mbs) - 0.5])
    fig.update_yaxes(type="category", range=[-0.5, len(qds) - 0.5])
    return _layout(fig, f"Best throughput meeting {pct} ≤ {c.latency_budget_ms:g} ms (infer/s); "
                        "grey cell: no feasible point", "max_batch_size", "max_queue_delay",
                   plot_bgcolor="#ececec",
                   coloraxis=dict(colorscale="Viridis", cmin=0), height=max(360, 140 + 80 * len(qds)))


def fig_breakdown(points: dict[str, list[Pt]], c: Constraints) -> go.Figure:
    pct = c.latency_percentile
    rows: list[tuple[str, Pt]] = []
    for cid, pts in points.items():
        p = _best_feasible(pts, pct) or pts[0]
        if p.s.server_ms:
            rows.append((cid, p))
    fig = go.Figure()
    _layout(fig, "Server-side time per request (ms) at each candidate's best feasible load "
                 "(lowest load if none)", "", "ms per request", barmode="stack")
    if not rows:
        return _empty(fig, "no server statistics were recorded")
    ids = [esc(cid) for cid, _ in rows]
    info = [f"concurrency {p.m.concurrency}" + ("" if p.feasible else " (none feasible: lowest load)")
            for _, p in rows]
    for key, name in BREAKDOWN:
        fig.add_trace(go.Bar(x=ids, y=[_num(p.s.server_ms.get(key)) for _, p in rows], name=name,
                             customdata=info,
                             hovertemplate=f"%{{x}}<br>{name}: %{{y:.3f}} ms<br>%{{customdata}}<extra></extra>"))
    fig.update_xaxes(tickangle=-30, automargin=True)
    return fig


def _clip(s: str, n: int) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 1] + "…"


GOAL_TEXT = {"max_throughput": "max throughput",
             "min_latency": "min latency at the required throughput",
             "max_throughput_per_instance": "max throughput per instance"}
CAPACITY_HEADROOM = 0.3


def fig_capacity(results: RunResults, rec: Recommendation, headroom: float = CAPACITY_HEADROOM) -> go.Figure:
    """Replicas (servers/GPUs) needed vs target load, for the recommended config and the baseline."""
    from tuner.search.plan import capacity_of, capacity_steps

    fig = go.Figure()
    _layout(fig, f"Replicas needed vs target load ({headroom:.0%} headroom per replica)",
            "target load (infer/s)", "replicas (servers / GPUs)")
    lines = []
    if rec.best is not None:
        cap = capacity_of(results, rec, rec.best.candidate_id) or rec.best.throughput_infer_per_s
        lines.append((f"recommended: {rec.best.candidate_id}", cap, "#1f77b4", "solid"))
    if rec.baseline is not None and (rec.best is None or rec.best.candidate_id != BASELINE):
        base_cap = capacity_of(results, rec, BASELINE)
        if base_cap:
            lines.append(("baseline (original config)", base_cap, "#444", "dash"))
    lines = [ln for ln in lines if ln[1] and ln[1] > 0]
    if not lines:
        return _empty(fig, "no config meets the constraints: no capacity to plan with")
    top = lines[0][1] * (1 - headroom) * 10
    for name, cap, color, dash in lines:
        n = max(1, min(200, math.ceil(top / (cap * (1 - headroom)))))
        xs, ys = capacity_steps(cap, headroom, n)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", name=esc(name), line=dict(color=color, dash=dash, width=2.5),
            hovertemplate=(f"<b>{esc(name)}</b><br>up to %{{x:,.0f}} infer/s: %{{y}} replica(s)<br>"
                           f"{cap:,.1f} infer/s per replica within the budget<extra></extra>")))
    fig.update_xaxes(range=[0, top])
    return fig


def capacity_text(results: RunResults, rec: Recommendation, headroom: float = CAPACITY_HEADROOM) -> str:
    if rec.best is None:
        return "Nothing meets the constraints, so there is no capacity to plan with."
    from tuner.search.plan import capacity_of

    cap = capacity_of(results, rec, rec.best.candidate_id) or rec.best.throughput_infer_per_s
    return (f"One replica = one server (GPU) running the recommended config: {_f(cap)} infer/s within the budget, "
            f"{_f(cap * (1 - headroom))} infer/s with {headroom:.0%} kept free. "
            "<code>tuner plan RUN_DIR --target-rps N</code> sizes a fleet (replicas, expected p99, cost).")


# ---------------------------------------------------------------- page parts

def _op_line(op: OperatingPoint, pct: str) -> str:
    return (f"{_f(op.throughput_infer_per_s)} infer/s at {esc(pct)} {_f(op.latency_ms.get(pct), 2)} ms "
            f"(concurrency {op.concurrency})")


def headline(rec: Recommendation) -> str:
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
    line = f"Recommended config gives <b>{_f(b.throughput_infer_per_s)} infer/s</b> at {esc(pct)} " \
           f"<b>{_f(b.latency_ms.get(pct), 2)} ms</b>"
    gain = ""
    if base is not None:
        line += f" vs baseline {_f(base.throughput_infer_per_s)} at {_f(base.latency_ms.get(pct), 2)} ms"
        if base.throughput_infer_per_s > 0:
            gain = f'<div class="stat"><span>{b.throughput_infer_per_s / base.throughput_infer_per_s:.2f}×</span>' \
                   "throughput vs baseline</div>"
    stats = (f'<div class="stats"><div class="stat"><span>{_f(b.throughput_infer_per_s)}</span>infer/s</div>'
             f'<div class="stat"><span>{_f(b.latency_ms.get(pct), 2)} ms</span>{esc(pct)} latency '
             f"(budget {c.latency_budget_ms:g} ms)</div>"
             f'<div class="stat"><span>{b.concurrency}</span>concurrency</div>{gain}</div>')
    return (f'<div class="box ok"><h2>Recommended: {esc(b.candidate_id)}</h2>{stats}<p>{line}.</p>'
            f"<p><b>Binding constraint:</b> {esc(rec.binding)}</p>{_unchecked_html(rec)}"
            f'<p class="reason">{esc(rec.reason)}</p></div>')


def _unchecked_html(rec: Recommendation) -> str:
    items = getattr(rec, "unchecked", None) or []
    return "".join(f"<p><b>Not checked:</b> {esc(u)}</p>" for u in items)


def candidates_table(results: RunResults, points: dict[str, list[Pt]], rec: Recommendation) -> str:
    pct = rec.constraints.latency_percentile
    heads = ["candidate", "max_batch_size", "queue delay (µs)", "preferred sizes", "instances", "status",
             "best feasible infer/s", f"{pct} (ms)", "concurrency", "stable", "error rate", "failure / skip reason"]
    rows = []
    for cid in _candidate_ids(results):
        r = results.candidates.get(cid)
        spec = r.spec if r else None
        best = _best_feasible(points.get(cid, []), pct)
        status = r.status if r else "unknown"
        reason = r.reason if r and r.status in ("failed", "skipped") else ""
        if r and status != "failed" and points.get(cid) and best is None:
            status = "no feasible point"
        none = ("—", "")  # (cell html, sort value)
        spec_cells = [
            (str(spec.max_batch_size), spec.max_batch_size),
            (str(spec.max_queue_delay_us), spec.max_queue_delay_us) if spec.dynamic_batching else ("off", -1),
            (esc(", ".join(map(str, spec.preferred_batch_size)) or "default"), ""),
            (str(spec.instance_count), spec.instance_count),
        ] if spec else [none] * 4
        best_cells = [
            (_f(best.s.throughput_infer_per_s), best.s.throughput_infer_per_s),
            (_f(best.lat(pct), 2), best.lat(pct)),
            (str(best.m.concurrency), best.m.concurrency),
            ("yes" if best.m.stable else "NO", ""),
        ] if best else [("—", -1)] + [none] * 3
        cells = [
            (esc(cid) + (" ★" if rec.best and rec.best.candidate_id == cid else ""), esc(cid)),
            *spec_cells,
            (esc(status), esc(status)),
            *best_cells,
            _error_rate_cell(points.get(cid, [])),
            (f'<span title="{esc(reason)}">{esc(_clip(reason, 160))}</span>' if reason else "", ""),
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


def _duration(s) -> str:
    try:
        s = int(round(float(s)))
    except (TypeError, ValueError):
        return "—"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def metadata(results: RunResults, rec: Recommendation, profile: Profile, summary: dict) -> str:
    meta, c = results.meta, rec.constraints
    server = meta.get("server") or {}
    failed = sum(1 for r in results.candidates.values() if r.status == "failed")
    skipped = sum(1 for r in results.candidates.values() if r.status == "skipped")
    search = summary.get("search") or {}
    measured = summary.get("candidates_measured",
                           sum(1 for r in results.candidates.values() if r.status == "loaded" and not r.is_baseline))
    rows = [
        ("model", f"{meta.get('model') or profile.model}"
                  + (f" (version {meta['version']})" if meta.get("version") else "")),
        ("server", f"{server.get('url') or profile.url or 'embedded'} — Triton {server.get('version') or '?'}"
                   + (" (embedded)" if server.get("embedded") else "")),
        ("profile", f"{summary.get('profile') or profile.name} "
                    f"(sha256 {meta.get('profile_sha256') or profile.sha256})"),
        ("constraints", f"{c.latency_percentile} ≤ {c.latency_budget_ms:g} ms, ≥ {c.min_throughput_infer_per_s:g} "
                        f"infer/s, errors ≤ {c.max_error_rate * 100:g}% of requests"
                        + (f", GPU memory ≤ {c.max_gpu_memory_mb:g} MB" if c.max_gpu_memory_mb else "")),
        ("candidates", f"{measured} measured, {summary.get('candidates_skipped', skipped)} skipped, "
                       f"{summary.get('candidates_failed', failed)} failed, {len(results.points)} load points"),
        ("search", f"{search.get('strategy') or profile.search.strategy}"
                   + (f", {search['measure_s']:.0f} s measuring" if search.get("measure_s") is not None else "")),
        ("objective", GOAL_TEXT.get(rec.goal, rec.goal)),
        ("started", str(meta.get("started_at") or "—")),
        ("duration", _duration(summary.get("duration_s", meta.get("duration_s")))),
        ("tuner", str(meta.get("tuner_version") or "—")),
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
                 recommended_pbtxt: str, diff: str, summary: dict) -> str:
    c = rec.constraints
    points = _points(results, rec)
    model = results.meta.get("model") or profile.model
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
{headline(rec)}
<section><h2>Latency vs throughput</h2>
<p class="sub">One line per candidate; the baseline is the dashed grey line, the recommended point the gold star.
Hover a point for its concurrency, p50/p99 and errors.</p>{fig_html[0]}</section>
<section><h2>Pareto frontier</h2>{fig_html[1]}</section>
<section><h2>Search space</h2>{fig_html[2]}</section>
<section><h2>Where the time goes (server side)</h2>{fig_html[3]}</section>
<section><h2>Capacity</h2><p class="sub">{capacity_text(results, rec)}</p>{fig_html[4]}</section>
<section><h2>All candidates</h2><p class="sub">Click a column header to sort. ★ marks the recommendation.</p>
{candidates_table(results, points, rec)}</section>
<section><h2>Recommended config</h2><div class="cols">
<div><h3>recommended/config.pbtxt</h3><pre id="recommended-pbtxt">{esc(recommended_pbtxt)}</pre></div>
<div><h3>diff against the original</h3><pre id="config-diff">{diff_html(diff)}</pre></div></div>
<details><summary>original config.pbtxt</summary><pre>{esc(original_pbtxt)}</pre></details></section>
<section><h2>Run</h2>{metadata(results, rec, profile, summary)}
<details><summary>profile ({esc(profile.name)})</summary><pre>{esc(profile.text)}</pre></details></section>
</main>
<script>{SORT_JS}</script>
</body></html>
"""
