"""The report's confirmation section and the batches Triton ran, from stored results alone.

`batch_histograms` (also in summary.json as `batch_sizes`): per candidate, the batch sizes
the server executed at its at-budget load, from the statistics API's per-batch-size
execution counts (`ServerDelta.batch_compute_infer`, kept per window): over its
confirmation visits when it was confirmed, else at its best point of the search (its
highest-throughput point when none met the constraints). A max_batch_size of 32 that ran
mostly batches of 3 shows here.

`confirmation_section`: each config's throughput in every confirmation round, and its mean
with the confidence interval the recommendation was decided on (`tuner/search/confirm.py`).
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tuner.report.text import esc, fmt_num
from tuner.results.records import Measurement
from tuner.results.store import RunResults
from tuner.search.recommend import OperatingPoint, Recommendation

FIG_HEIGHT_PX = 460
MAX_HISTOGRAMS = 16  # rows of the batch figure: the recommended, the confirmed, the baseline, then the best


def _executions(points: list[Measurement]) -> dict[int, int]:
    out: dict[int, int] = {}
    for m in points:
        used = m.windows[-m.summary_windows:] if m.summary_windows > 0 else m.windows
        for w in used:
            if w.server is None:
                continue
            for b, (n, _ns) in w.server.batch_compute_infer.items():
                out[int(b)] = out.get(int(b), 0) + int(n)
    return out


def _search_point(results: RunResults, rec: Recommendation, cid: str) -> Measurement | None:
    ok = [m for m in results.points if m.candidate_id == cid and m.status == "ok" and m.windows]
    feasible = {(p.candidate_id, p.concurrency) for p in rec.feasible}
    pool = [m for m in ok if (cid, m.concurrency) in feasible] or ok
    return max(pool, key=lambda m: (m.summary().throughput_infer_per_s, -m.concurrency), default=None)


def batch_histograms(results: RunResults, rec: Recommendation, conf=None) -> dict[str, dict]:
    """Candidate -> {concurrency, source, executions {batch size: count}, mean_batch}."""
    out: dict[str, dict] = {}
    visits: dict[str, list[Measurement]] = {}
    for v in results.confirmation:
        if v.point.status == "ok":
            visits.setdefault(v.candidate_id, []).append(v.point)
    ids = list(dict.fromkeys([m.candidate_id for m in results.points] + list(visits)))
    for cid in ids:
        if cid in visits:
            pts, source = visits[cid], "confirmation"
        else:
            m = _search_point(results, rec, cid)
            pts, source = ([m] if m is not None else []), "search"
        ex = _executions(pts)
        if not ex:
            continue
        total = sum(ex.values())
        out[cid] = {"concurrency": pts[0].concurrency, "source": source,
                    "executions": {str(b): ex[b] for b in sorted(ex)},
                    "mean_batch": sum(b * n for b, n in ex.items()) / total}
    return out


def _shown(hist: dict[str, dict], rec: Recommendation, conf) -> list[str]:
    first = ([rec.best.candidate_id] if rec.best is not None else []) + (
        [c.candidate_id for c in conf.configs] if conf is not None else []) + ["baseline"]
    by_value = sorted((p for p in rec.feasible), key=lambda p: -p.throughput_infer_per_s)
    ids = [c for c in dict.fromkeys(first + [p.candidate_id for p in by_value] + list(hist)) if c in hist]
    return ids[:MAX_HISTOGRAMS]


def fig_batches(hist: dict[str, dict], rec: Recommendation, conf=None) -> go.Figure:
    """One row per candidate, one column per batch size: the share of its executions at that size."""
    fig = go.Figure()
    ids = _shown(hist, rec, conf)
    fig.update_layout(title="Batch sizes Triton executed, at each candidate's at-budget load (share of executions)",
                      template="plotly_white", height=max(FIG_HEIGHT_PX // 2, 120 + 34 * len(ids)),
                      xaxis_title="batch size executed", margin=dict(l=70, r=30, t=60, b=60))
    if not ids:
        fig.add_annotation(text="the server reported no batch statistics", showarrow=False, xref="paper",
                           yref="paper", x=0.5, y=0.5, font=dict(size=16, color="#777"))
        return fig
    top = max(int(b) for cid in ids for b in hist[cid]["executions"])
    sizes = list(range(1, top + 1))
    z, text, labels = [], [], []
    for cid in ids:
        h = hist[cid]
        total = sum(h["executions"].values())
        counts = [h["executions"].get(str(b), 0) for b in sizes]
        z.append([100.0 * n / total if n else None for n in counts])
        text.append([f"{n} of {total} executions" for n in counts])
        star = " ★" if rec.best is not None and rec.best.candidate_id == cid else ""
        labels.append(f"{esc(cid)}{star} (mean {h['mean_batch']:.1f}, c={h['concurrency']})")
    fig.add_trace(go.Heatmap(
        x=sizes, y=labels, z=z, text=text, colorscale="Blues", zmin=0, zmax=100, xgap=1, ygap=2,
        colorbar=dict(title="% of executions"),
        hovertemplate="%{y}<br>batch %{x}: %{z:.1f}% (%{text})<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return fig


def fig_confirmation(conf) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], subplot_titles=(
        "throughput in each round", f"mean and {conf.confidence:.0%} interval"))
    fig.update_layout(title=f"Confirmation: {conf.rounds} interleaved round(s), each config at its at-budget load",
                      template="plotly_white", height=FIG_HEIGHT_PX, margin=dict(l=70, r=30, t=80, b=60),
                      showlegend=True)
    colors = qualitative.Plotly
    for i, c in enumerate(conf.configs):
        color = "#444" if c.candidate_id == "baseline" else colors[i % len(colors)]
        fig.add_trace(go.Scatter(
            x=list(range(1, len(c.throughput_per_visit) + 1)), y=list(c.throughput_per_visit),
            mode="lines+markers", name=esc(c.candidate_id), line=dict(color=color),
            hovertemplate=f"<b>{esc(c.candidate_id)}</b><br>round %{{x}}: %{{y:,.1f}} infer/s<extra></extra>"),
            row=1, col=1)
        star = " ★" if c.candidate_id == conf.recommended else ""
        fig.add_trace(go.Scatter(
            x=[esc(c.candidate_id) + star], y=[c.throughput.mean], mode="markers", showlegend=False,
            marker=dict(size=12, color=color, symbol="star" if star else "circle"),
            error_y=dict(type="data", symmetric=False, array=[c.throughput.hi - c.throughput.mean],
                         arrayminus=[c.throughput.mean - c.throughput.lo]),
            hovertemplate=(f"<b>{esc(c.candidate_id)}</b><br>{c.throughput.mean:,.1f} infer/s "
                           f"[{c.throughput.lo:,.1f}, {c.throughput.hi:,.1f}]<extra></extra>")),
            row=1, col=2)
    fig.update_xaxes(title_text="round", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="throughput (infer/s)", row=1, col=1)
    return fig


def _table(conf, pct: str, budget_ms: float) -> str:
    rows = []
    for c in conf.configs:
        mark = " ★" if c.candidate_id == conf.recommended else ""
        tie = " (tied)" if c.candidate_id in conf.tied_with else ""
        rows.append(f"<tr><td>{esc(c.candidate_id)}{mark}{tie}</td><td>{c.concurrency}</td><td>{c.visits}</td>"
                    f"<td>{fmt_num(c.throughput.mean)} [{fmt_num(c.throughput.lo)}, {fmt_num(c.throughput.hi)}]</td>"
                    f"<td>{fmt_num(c.latency.mean, 2)} [{fmt_num(c.latency.lo, 2)}, {fmt_num(c.latency.hi, 2)}]</td>"
                    f"<td>{esc(c.budget)}</td></tr>")
    head = ("<tr><th>config</th><th>concurrency</th><th>visits</th><th>infer/s (95% interval)</th>"
            f"<th>{esc(pct)} ms (95% interval)</th><th>budget {budget_ms:g} ms</th></tr>")
    return f'<table id="confirmation">{head}{"".join(rows)}</table>'


def _html(fig: go.Figure, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def confirmation_section(conf, rec: Recommendation) -> str:
    """The report's confirmation section (empty when the run had none)."""
    if conf is None:
        return ""
    c = rec.constraints
    how = ("The winner, the candidates within noise of it and the baseline were measured again in turn, "
           "round after round, each at its at-budget load. Intervals pool the spread of every config's "
           "visits; configs whose intervals overlap the best's are tied, and the simplest of them is "
           f"recommended. Pooled spread of one visit: {conf.sigma_rel:.1%} ({conf.df} degrees of freedom).")
    return (f'<section><h2>Confirmation</h2><p class="sub">{esc(how)}</p>'
            f'<p class="reason">{esc(conf.reason)}</p>{_html(fig_confirmation(conf), "fig-confirmation")}'
            f"{_table(conf, c.latency_percentile, c.latency_budget_ms)}</section>")


def batches_section(results: RunResults, rec: Recommendation, conf=None) -> str:
    hist = batch_histograms(results, rec, conf)
    why = ("The batch sizes the server actually formed (its statistics API), at each candidate's at-budget load: "
           "a large max_batch_size only pays when the load and queue delay let full batches form.")
    return (f'<section><h2>Batches Triton ran</h2><p class="sub">{esc(why)}</p>'
            f'{_html(fig_batches(hist, rec, conf), "fig-batches")}</section>')


def gain_text(conf, best: OperatingPoint | None) -> str:
    """The headline's gain: the ratio with its interval, or why the current config stays."""
    g = conf.gain if conf is not None else None
    if g is None:
        return ""
    return f"{g.ratio:.2f}× [{g.ci[0]:.2f}, {g.ci[1]:.2f}]"
