"""Terminal tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _load_label(p, client: dict | None) -> str:
    c = client or {}
    if c.get("mode") == "rate":
        arr = " poisson" if c.get("arrivals") == "poisson" else ""
        return f"{c.get('target', 0):g}/s{arr}"
    return f"c{p.concurrency}"


def _client_label(client: dict | None) -> str:
    if not client:
        return "-"
    if client.get("client_bound"):
        return "CLIENT-BOUND"
    return "server-bound" if client.get("bound") == "server" else "ok"


def measure_table(result, console: Console | None = None) -> None:
    console = console or _console()
    t = Table(title=f"{result.model} on {result.server.get('url')} (Triton {result.server.get('version')})")
    summaries = [p.summary() for p in result.points]
    streamed = any(s.first_response_ms is not None for s in summaries)
    cols = ["load", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "errors",
            "queue ms", "infer ms", "avg batch", "stable", "client", "cpu us/req"]
    if streamed:
        cols[2:2] = ["first p50", "resp"]  # decoupled: time to first response (ms), responses/request
    for col in cols:
        t.add_column(col, justify="right")
    notes = []
    for p, s in zip(result.points, summaries):
        srv = s.server_ms or {}
        c = s.client or {}
        row = [
            _load_label(p, c), _fmt(s.throughput_infer_per_s, 1),
            *(_fmt(s.latency_ms[k]) for k in ("p50", "p90", "p95", "p99")),
            str(s.errors), _fmt(srv.get("queue")), _fmt(srv.get("compute_infer")),
            _fmt(s.avg_batch_size), "yes" if p.stable else "NO",
            _client_label(c), _fmt(c.get("cpu_us_per_req"), 0),
        ]
        if streamed:
            row[2:2] = [_fmt((s.first_response_ms or {}).get("p50")), _fmt(s.responses_per_request, 1)]
        t.add_row(*row)
        if c.get("reason"):
            notes.append(f"{_load_label(p, c)}: {_client_label(c)}: {c['reason']}")
    console.print(t)
    for line in notes:
        console.print(line, markup=False)


def _console() -> Console:
    c = Console()
    # Piped output (CI logs) gets rich's 80 columns, which truncates numbers.
    return c if c.is_terminal else Console(width=140)


def sweep_summary(summary: dict, run_dir, console: Console | None = None) -> None:
    console = console or _console()
    rec, base = summary.get("recommended"), summary.get("baseline")
    pct = summary["constraints"]["latency_percentile"]
    if rec:
        console.print(f"[bold]recommended[/bold] {rec['candidate_id']}: max_batch_size {rec['max_batch_size']}, "
                      f"queue delay {rec['max_queue_delay_us']} us, preferred {rec['preferred_batch_size'] or 'default'}, "
                      f"{rec['instance_count']} instance(s), at concurrency {rec['concurrency']}")
        line = (f"recommended config gives {rec['throughput_infer_per_s']:.1f} infer/s at {pct} "
                f"{rec['latency_ms'][pct]:.2f} ms")
        if base:
            line += f" vs baseline {base['throughput_infer_per_s']:.1f} at {base['latency_ms'][pct]:.2f} ms"
        console.print(line)
    else:
        console.print("[bold red]no candidate meets the constraints[/bold red]")
    console.print(summary.get("reason", ""), markup=False)
    console.print(f"candidates measured {summary['candidates_measured']}, failed {summary['candidates_failed']}, "
                  f"{summary['duration_s']:.0f} s")
    console.print(f"report: {run_dir}/report.html   config: {run_dir}/recommended/config.pbtxt")
