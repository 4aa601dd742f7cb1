"""Terminal tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def measure_table(result, console: Console | None = None) -> None:
    console = console or _console()
    t = Table(title=f"{result.model} on {result.server.get('url')} (Triton {result.server.get('version')})")
    for col in ("concurrency", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "errors",
                "queue ms", "infer ms", "avg batch", "stable"):
        t.add_column(col, justify="right")
    for p in result.points:
        s = p.summary()
        srv = s.server_ms or {}
        t.add_row(
            str(p.concurrency), _fmt(s.throughput_infer_per_s, 1),
            *(_fmt(s.latency_ms[k]) for k in ("p50", "p90", "p95", "p99")),
            str(s.errors), _fmt(srv.get("queue")), _fmt(srv.get("compute_infer")),
            _fmt(s.avg_batch_size), "yes" if p.stable else "NO",
        )
    console.print(t)


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
