"""The report's GPU section: for each candidate, GPU utilisation, memory,
power and energy per inference at each load level it was measured at, from
the windows' telemetry (Triton's metrics endpoint, `tuner.load.telemetry`).

Where the server exposed none of it (a CPU host, metrics off or unreachable)
the section says "Not available" and why, instead of empty figures; a panel
with no value at all says so too. Energy is the whole GPU's over the windows,
per inference the model completed in them.
"""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tuner.report.points import Pt
from tuner.report.text import esc, finite_or_none, fmt_num
from tuner.results.stats import gpu_point_metrics
from tuner.search.recommend import Recommendation

# (gpu_point_metrics key, panel title, scale to the shown unit)
PANELS = (("energy_j_per_infer", "energy per inference (J)", 1.0),
          ("power_w", "GPU power (W)", 1.0),
          ("gpu_utilization", "GPU utilisation (%)", 100.0),
          ("memory_used_mib", "GPU memory used (MiB)", 1.0))
FIG_HEIGHT_PX = 330
COLOR = "#1f77b4"


def _rows(points: dict[str, list[Pt]]) -> dict[str, list[tuple[Pt, dict]]]:
    return {cid: [(p, gpu_point_metrics(p.s.telemetry)) for p in pts] for cid, pts in points.items()}


def _missing(values: list[dict], key: str) -> str:
    """Why a panel has no value at all."""
    if key == "energy_j_per_infer":
        reasons = [g["energy_unavailable"] for g in values if g["energy_unavailable"]]
        return reasons[0] if reasons else "no energy figure"
    return f"the metrics endpoint showed no {key.replace('_', ' ')}"


def _markers(rows: list[tuple[Pt, dict]], best: tuple | None) -> dict:
    """Filled: meets the constraints; open: does not; the gold star: the recommended point."""
    star = [(p.cid, p.m.concurrency) == best for p, _ in rows]
    return dict(symbol=["star" if b else "circle" if p.feasible else "circle-open" for b, (p, _) in zip(star, rows)],
                size=[16 if b else 8 for b in star], color=["#f2b01e" if b else COLOR for b in star])


def fig_gpu(cid: str, rows: list[tuple[Pt, dict]], best: tuple | None = None) -> go.Figure:
    """One candidate: a panel per GPU figure against the load level (concurrency)."""
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[t for _, t, _ in PANELS],
                        horizontal_spacing=0.07)
    x = [p.m.concurrency for p, _ in rows]
    hover = [[p.m.concurrency, p.s.throughput_infer_per_s, finite_or_none(p.s.latency_ms.get("p99"))]
             for p, _ in rows]
    for col, (key, title, scale) in enumerate(PANELS, start=1):
        y = [finite_or_none(g[key] * scale) if g[key] is not None else None for _, g in rows]
        if all(v is None for v in y):
            axis = f"xaxis{col if col > 1 else ''}"
            lo, hi = fig.layout[axis].domain
            lines = textwrap.wrap("not available: " + _missing([g for _, g in rows], key), 36)
            fig.add_annotation(text="<br>".join(esc(line) for line in lines), showarrow=False,
                               xref="paper", yref="paper", x=(lo + hi) / 2, y=0.5, xanchor="center",
                               font=dict(size=11, color="#777"))
            fig.layout[axis].visible = False
            fig.layout["y" + axis[1:]].visible = False
            continue
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", name=title, showlegend=False, line=dict(color=COLOR),
            marker=_markers(rows, best), customdata=hover, connectgaps=False,
            hovertemplate=(f"<b>{esc(cid)}</b><br>{esc(title)} %{{y:.4g}}<br>concurrency %{{customdata[0]}}"
                           "<br>%{customdata[1]:,.1f} infer/s · p99 %{customdata[2]:.2f} ms<extra></extra>")),
            row=1, col=col)
    fig.update_layout(title=esc(cid), template="plotly_white", height=FIG_HEIGHT_PX,
                      margin=dict(l=50, r=20, t=70, b=50))
    fig.update_xaxes(title_text="concurrency", type="log")
    return fig


def _recommended_line(rows: dict[str, list[tuple[Pt, dict]]], rec: Recommendation) -> str:
    best = rec.best
    if best is None:
        return ""
    for p, g in rows.get(best.candidate_id, []):
        if p.m.concurrency == best.concurrency:
            energy = (f"{g['energy_j_per_infer']:.4g} J per inference" if g["energy_j_per_infer"] is not None
                      else f"energy per inference not available ({g['energy_unavailable']})")
            util = g["gpu_utilization"]
            return (f"<p>Recommended point ({esc(best.candidate_id)}, concurrency {best.concurrency}): "
                    f"{esc(energy)}; {fmt_num(g['power_w'])} W; "
                    f"{fmt_num(util * 100 if util is not None else None)}% GPU utilisation; "
                    f"{fmt_num(g['memory_used_mib'], 0)} MiB of GPU memory at most.</p>")
    return ""


def gpu_section(points: dict[str, list[Pt]], rec: Recommendation) -> str:
    """The section's HTML: one figure per candidate, or "Not available" and why."""
    rows = _rows(points)
    every = [g for r in rows.values() for _, g in r]
    head = '<section id="gpu"><h2>GPU telemetry and energy</h2>'
    if not any(g["gpu_count"] for g in every):
        why = every[0]["energy_unavailable"] if every else "no load point was measured"
        return (f'{head}<p class="sub"><b>Not available:</b> {esc(why)}. GPU utilisation, memory, power '
                "and energy per inference come from Triton's metrics endpoint (nv_gpu_*, "
                "nv_energy_consumption); nothing here was checked against them.</p></section>")
    best = (rec.best.candidate_id, rec.best.concurrency) if rec.best else None
    figs = "".join(fig_gpu(cid, r, best).to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-gpu-{i}",
                                           config={"displaylogo": False, "responsive": True})
                   for i, (cid, r) in enumerate(rows.items()))
    note = ("Energy is the whole GPU's (nv_energy_consumption) over a point's windows divided by the "
            "inferences the model completed in them (nv_inference_count); Triton refreshes GPU metrics "
            "every --metrics-interval-ms (2 s by default), so short windows make it coarse. Filled markers meet "
            "the constraints, open ones do not; the gold star is the recommended point.")
    return f'{head}<p class="sub">{esc(note)}</p>{_recommended_line(rows, rec)}{figs}</section>'
