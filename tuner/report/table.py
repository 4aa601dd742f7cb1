"""Terminal tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or x != x else f"{x:.{digits}f}"


def _load_label(p, client: dict | None) -> str:
    c = client or {}
    if c.get("mode") == "rate":
        kind = (p.load.arrivals if getattr(p, "load", None) is not None else c.get("arrivals")) or ""
        rate = p.request_rate if p.request_rate is not None else c.get("target", 0)
        return f"{rate:.4g}/s" + {"constant": "", "poisson": " poisson"}.get(kind, f" {kind}")
    return f"c{p.concurrency}"


def _stable_label(p) -> str:
    load = getattr(p, "load", None)
    if load is not None and load.arrivals.split(" ")[0] in ("step", "ramp"):
        return "-"  # one window of a step or ramp: not judged for stability
    return "yes" if p.stable else "NO"


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
    open_loop = any(s.latency_send_ms is not None for s in summaries)
    batched = any(w.batch_size for p in result.points for w in p.windows)  # client batches: infer/s counts items
    cols = ["load", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "errors",
            "queue ms", "infer ms", "avg batch", "stable", "client", "cpu us/req"]
    if open_loop:
        # from the send: what the server and network add; late: the client's own delay (p99)
        cols[6:6] = ["send p50", "send p99", "late p99"]
    if streamed:
        cols[2:2] = ["first p50", "resp"]  # decoupled: time to first response (ms), responses/request
    if batched:
        cols[2:2] = ["req/s"]
    for col in cols:
        # the load label is what a reader looks a row up by: never wrapped
        t.add_column(col, justify="right", no_wrap=col == "load")
    notes = []
    for p, s in zip(result.points, summaries):
        srv = s.server_ms or {}
        c = s.client or {}
        row = [
            _load_label(p, c), _fmt(s.throughput_infer_per_s, 1),
            *(_fmt(s.latency_ms[k]) for k in ("p50", "p90", "p95", "p99")),
            str(s.errors), _fmt(srv.get("queue")), _fmt(srv.get("compute_infer")),
            _fmt(s.avg_batch_size), _stable_label(p),
            _client_label(c), _fmt(c.get("cpu_us_per_req"), 0),
        ]
        if open_loop:
            send, late = s.latency_send_ms or {}, s.lateness_ms or {}
            row[6:6] = [_fmt(send.get("p50")), _fmt(send.get("p99")), _fmt(late.get("p99"), 3)]
        if streamed:
            row[2:2] = [_fmt((s.first_response_ms or {}).get("p50")), _fmt(s.responses_per_request, 1)]
        if batched:  # inserted in the order the columns were
            row[2:2] = [_fmt(s.throughput_requests_per_s, 1)]
        t.add_row(*row)
        if c.get("reason"):
            notes.append(f"{_load_label(p, c)}: {_client_label(c)}: {c['reason']}")
    console.print(t)
    if open_loop:
        console.print("open loop: p50..p99 run from each request's scheduled send time (coordinated-omission "
                      "safe: what a caller sees); 'send' columns from its actual send", markup=False)
    for line in notes:
        console.print(line, markup=False)
    shape_table(result, console)


def shape_table(result, console: Console) -> None:
    """Latency per request shape (shape mixes, input data of several shapes), one row per point and shape."""
    from tuner.results.frame import shape_latencies

    rows = [(p, shape_latencies(p.windows, getattr(result, "input_mix", None), p.summary_windows))
            for p in result.points]
    if not any(r for _, r in rows):
        return
    t = Table(title="latency per request shape")
    for col in ("load", "shape", "share", "p50 ms", "p90 ms", "p99 ms"):
        t.add_column(col, justify="right" if col not in ("shape",) else "left", no_wrap=col == "load")
    for p, per_shape in rows:
        for r in per_shape or ():
            t.add_row(_load_label(p, p.summary().client), r["shape"], f"{r['share']:.0%}",
                      *(_fmt(r[k]) for k in ("p50_ms", "p90_ms", "p99_ms")))
    console.print(t)


def _console() -> Console:
    c = Console()
    # Piped output (CI logs) gets rich's 80 columns, which truncates numbers.
    return c if c.is_terminal else Console(width=200)


def sweep_summary(summary: dict, run_dir, console: Console | None = None) -> None:
    console = console or _console()
    rec, base = summary.get("recommended"), summary.get("baseline")
    pct = summary["constraints"]["latency_percentile"]
    if rec and rec.get("steps") is not None:  # several models tuned together: one line per changed model
        console.print(f"[bold]recommended[/bold] at concurrency {rec['concurrency']}:", markup=True)
        for name, spec in rec["steps"].items():
            console.print(f"  {name}: max_batch_size {spec['max_batch_size']}, queue delay "
                          f"{spec['max_queue_delay_us'] if spec['dynamic_batching'] else 'off'} us, "
                          f"{spec['instance_count']} instance(s)", markup=False)
        if not rec["steps"]:
            console.print("  every model as it is (the original configs)", markup=False)
    if rec:
        seq = rec.get("sequence_batching")  # a stateful model: the sequence batcher's strategy first
        what = "" if not seq else f"sequence batching {seq['strategy']}" + (
            f" ({seq['max_candidate_sequences']} candidate sequences), " if seq["strategy"] == "oldest" else ", ")
        if rec.get("steps") is None:
            console.print(f"[bold]recommended[/bold] {rec['candidate_id']}: {what}max_batch_size {rec['max_batch_size']}, "
                          f"queue delay {rec['max_queue_delay_us']} us, preferred "
                          f"{rec['preferred_batch_size'] or 'default'}, "
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
    configs = (f"{run_dir}/recommended/<model>/config.pbtxt ({', '.join(summary['steps'])})" if summary.get("steps")
               else f"{run_dir}/recommended/config.pbtxt")
    console.print(f"report: {run_dir}/report.html   config: {configs}")
