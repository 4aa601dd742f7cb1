"""The report's Plotly figures, from the measured points alone: latency vs
throughput curves, the Pareto frontier, the SLO-bound throughput heatmap, the
server-side time breakdown and the replicas needed vs target load.

Figure text that comes from data is escaped (`esc`) like the page's: Plotly
renders the escaped entities as text.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tuner.config import JointSpec
from tuner.report.points import BASELINE, Pt, best_feasible, pareto_frontier
from tuner.report.text import clip, esc, finite_or_none, fmt_num
from tuner.search.recommend import Constraints, OperatingPoint, Recommendation
from tuner.results.store import RunResults

BREAKDOWN = (("queue", "queue"), ("compute_input", "compute input"),
             ("compute_infer", "compute infer"), ("compute_output", "compute output"))
FIG_HEIGHT_PX = 480
# Share of a replica's SLO-bound throughput kept free for bursts when sizing a fleet.
CAPACITY_HEADROOM = 0.3


def _colors(n: int) -> list[str]:
    return qualitative.Plotly if n <= len(qualitative.Plotly) else qualitative.Dark24


def _layout(fig: go.Figure, title: str, x: str, y: str, **kw) -> go.Figure:
    layout = dict(title=title, template="plotly_white", height=FIG_HEIGHT_PX, hovermode="closest",
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
    if op is None or finite_or_none(op.latency_ms.get(pct)) is None:
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
    fig.update_layout(height=max(FIG_HEIGHT_PX, 140 + 19 * len(fig.data)))  # room for the legend
    return fig


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
    # a joint candidate (several models) has no one max_batch_size: the per-step table shows those
    cands = [r for cid, r in results.candidates.items() if not r.is_baseline and not isinstance(r.spec, JointSpec)]
    if not cands:
        return _empty(_layout(go.Figure(), "Best SLO-bound throughput", "", ""),
                      "no single-model candidate in this run (several models: see the per-step table)")
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
            best = best_feasible(points.get(r.candidate_id, []), pct)
            tp = best.s.throughput_infer_per_s if best else None
            if z[i][j] is not None and (tp is None or tp <= z[i][j]):
                continue  # several preferred-size variants share a cell: keep the best
            head = f"<b>{esc(r.candidate_id)}</b><br>"
            if best is not None:
                z[i][j], label[i][j] = tp, f"{tp:,.0f}"
                note[i][j] = head + (f"{tp:,.1f} infer/s at {pct} {fmt_num(best.lat(pct), 2)} ms "
                                     f"(concurrency {best.m.concurrency})")
            elif r.status == "failed":
                label[i][j] = "failed"
                note[i][j] = head + "failed: " + esc(clip(r.reason, 120))
            elif r.status == "skipped":
                label[i][j] = "skipped"
                note[i][j] = head + "skipped by the search: " + esc(clip(r.reason, 160))
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
        p = best_feasible(pts, pct) or pts[0]
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
        fig.add_trace(go.Bar(x=ids, y=[finite_or_none(p.s.server_ms.get(key)) for _, p in rows], name=name,
                             customdata=info,
                             hovertemplate=f"%{{x}}<br>{name}: %{{y:.3f}} ms<br>%{{customdata}}<extra></extra>"))
    fig.update_xaxes(tickangle=-30, automargin=True)
    return fig


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
