"""The project's benchmark (run by ./bench.sh; not a test).

Sections, each a function of a `BenchContext` returning a JSON-able dict of
named results; `SECTIONS` lists them in run order, so a new one is a
function and a line there:

- loadgen: tuner's load generator vs perf_analyzer, side by side on the same
  embedded Triton (`identity`: near-zero cost; `synthetic`: 2 ms + 0.5 ms
  per item), at the same concurrency levels and one request rate per model:
  throughput, p50/p99 and client CPU per request, and their ratios
  (tuner / perf_analyzer). The `identity_mix` points send the same 3-shape
  input-data file (perf_analyzer's JSON format) from both tools to a copy of
  identity with variable dims ([-1]): requests of three lengths, served from
  tuner's pool of serialized payloads.

Each point runs each tool `--repeat` times (default 3), interleaved and
alternating which goes first; the table shows each tool's medians and the
median of the ratios of runs made back to back (a 2-core host shared with
other work drifts by 10-20% between runs).

Client CPU per request is measured the same way for both: the load
generator's process CPU time over its whole run (warm-up included; for
perf_analyzer its rusage as a child process, for tuner the process_time of
this process around the run) divided by the requests the server completed
over that run (statistics API). Throughput and percentiles are each tool's
own figures over its measurement windows.

The server's view of each run, the same for both tools (statistics API deltas
over the run): mean time per request in the server, in its queue and in
compute, and the mean batch it executed. A latency gap between the tools then
splits into what the server did differently (queueing behind bursty sends, other
batches) and what lies outside it (the client's receive path, its lateness).

tuner reaches the server as a user's run does (both endpoints known, so its
default wire is HTTP: load/http.py); `--transport stream|unary` measures a
gRPC wire instead. perf_analyzer runs over gRPC, its default; `--pa-protocol http`
puts it on HTTP, so both tools can be compared on one wire.

    python bench/bench.py [--sections loadgen] [--json FILE] [--quick] [--repeat N] [--transport T]
        [--pa-protocol grpc|http]
    PERF_ANALYZER="cmd prefix" (how to run perf_analyzer; bench.sh sets it)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuner.load.client import LoadClient
from tuner.load.eventloop import loop_kind, new_event_loop
from tuner.load.inputs import InputSpec
from tuner.load.request import build_request
from tuner.load.spec import LoadSettings
from tuner.results.stats import summarize
from tuner.server.connection import Connection
from tuner.server.control import ServerControl
from tuner.server.embedded import EmbeddedServer
from tuner.server.install import prepare_repository


@dataclass
class BenchContext:
    server: EmbeddedServer
    control: ServerControl
    work: Path
    perf_analyzer: list[str] | None
    quick: bool = False
    repeat: int = 3  # runs of each tool per point (interleaved); the table shows medians
    only: tuple[str, ...] = ()  # loadgen: the points whose key contains one of these (empty: all)
    echo: Callable[[str], None] = print
    transport: str = "auto"  # tuner's wire: "auto" is HTTP against this embedded server (load/spec.py)
    pa_protocol: str = "grpc"  # perf_analyzer's wire (-i); "http" compares the two tools on one wire
    notes: list[str] = field(default_factory=list)
    # one event loop for every in-process measurement (grpc.aio wants one loop per process)
    loop: asyncio.AbstractEventLoop = field(default_factory=new_event_loop)


# ---------------------------------------------------------------- loadgen ---

@dataclass(frozen=True)
class Point:
    model: str
    concurrency: int = 0
    rate: float = 0.0
    mix: bool = False  # send MIX_FILE (input data of several shapes) from both tools

    @property
    def key(self) -> str:
        return f"{self.model}_c{self.concurrency}" if not self.rate else f"{self.model}_r{self.rate:g}"


LOADGEN_POINTS = [
    Point("identity", concurrency=1), Point("identity", concurrency=16), Point("identity", concurrency=64),
    Point("identity", rate=2000),
    Point("synthetic", concurrency=1), Point("synthetic", concurrency=8), Point("synthetic", concurrency=32),
    Point("synthetic", rate=300),
    Point("identity_mix", concurrency=16, mix=True), Point("identity_mix", concurrency=64, mix=True),
]
WINDOW_S = 2.0
MIX_FILE = "mix3.json"
MIX_LENGTHS = (8, 16, 32)  # the input-data file's request shapes, one entry each


def prepare_mix(repo: Path, work: Path) -> Path:
    """identity_mix (identity with dims [-1]) in the bench's repository, and a 3-shape input-data file."""
    src = repo / "identity"
    dst = repo / "identity_mix"
    if not dst.exists():
        import shutil

        shutil.copytree(src, dst)
        text = (src / "config.pbtxt").read_text()
        text = text.replace('name: "identity"', 'name: "identity_mix"').replace("dims: [ 16 ]", "dims: [ -1 ]")
        (dst / "config.pbtxt").write_text(text)
    data = {"data": [{"INPUT0": {"content": [float(i % 7) for i in range(n)], "shape": [n]}} for n in MIX_LENGTHS]}
    path = work / MIX_FILE
    path.write_text(json.dumps(data))
    return path


def _server_counters(ctl: ServerControl, model: str) -> dict[str, int]:
    """The statistics API's cumulative counters for the model (Triton omits zero fields)."""
    out = {"success": 0, "success_ns": 0, "queue_ns": 0, "compute_ns": 0, "executions": 0, "inferences": 0}
    for m in ctl.statistics(model).get("model_stats", []):
        st = m.get("inference_stats", {})
        out["success"] += int(st.get("success", {}).get("count", 0))
        out["success_ns"] += int(st.get("success", {}).get("ns", 0))
        out["queue_ns"] += int(st.get("queue", {}).get("ns", 0))
        for k in ("compute_input", "compute_infer", "compute_output"):
            out["compute_ns"] += int(st.get(k, {}).get("ns", 0))
        out["executions"] += int(m.get("execution_count", 0))
        out["inferences"] += int(m.get("inference_count", 0))
    return out


def _server_view(before: dict[str, int], after: dict[str, int]) -> dict:
    """What the server saw of one tool's run: requests, and per request its mean time in the
    server, in the queue and in compute (ms), and the mean batch it executed. The same for both
    tools, so a latency difference can be split into the server's part and the client's."""
    d = {k: after[k] - before[k] for k in before}
    n = d["success"]
    return {
        "srv_requests": n,
        "srv_mean_ms": d["success_ns"] / n / 1e6 if n else None,
        "srv_queue_mean_ms": d["queue_ns"] / n / 1e6 if n else None,
        "srv_compute_mean_ms": d["compute_ns"] / n / 1e6 if n else None,
        "srv_mean_batch": d["inferences"] / d["executions"] if d["executions"] else None,
    }


def run_tuner(ctx: BenchContext, point: Point, window_s: float) -> dict:
    ctl = ctx.control
    inputs = InputSpec(data_path=ctx.work / MIX_FILE) if point.mix else None
    plan = build_request(ctl.model_config(point.model), point.model, inputs=inputs)
    settings = LoadSettings(warmup_s=1.0, window_s=window_s, min_windows=3, max_windows=3, transport=ctx.transport)
    # as a user's run reaches the embedded server: both its endpoints known
    conn = Connection(ctx.server.url, http_url=ctx.server.http_url)

    async def go():
        async with LoadClient(conn, point.model, metrics_url=ctx.server.metrics_url) as client:
            if point.rate:
                return await client.open_loop(plan, point.rate, settings, "constant")
            return await client.closed_loop(plan, point.concurrency, settings)

    c0, cpu0 = _server_counters(ctl, point.model), time.process_time()
    samples = ctx.loop.run_until_complete(go())
    cpu = time.process_time() - cpu0
    srv = _server_view(c0, _server_counters(ctl, point.model))
    n = srv["srv_requests"]
    s = summarize(samples.windows)
    c = s.client or {}
    send, late = s.latency_send_ms or {}, s.lateness_ms or {}
    return {
        "infer_per_s": s.throughput_infer_per_s,
        "p50_ms": s.latency_ms["p50"],
        "p99_ms": s.latency_ms["p99"],
        # open loop: from the actual send (perf_analyzer times from its send), and the client's lateness
        "p50_send_ms": send.get("p50"),
        "p99_send_ms": send.get("p99"),
        "late_p50_ms": late.get("p50"),
        "late_p99_ms": late.get("p99"),
        "cpu_us_per_req": cpu / n * 1e6 if n else None,
        "errors": s.errors,
        "client_bound": bool(c.get("client_bound")),
        "bound": c.get("bound"),
        "reason": c.get("reason", ""),
        "achieved": c.get("achieved"),
        "loop_lag_p99_ms": c.get("loop_lag_p99_ms"),
        "self_cpu_us_per_req": c.get("cpu_us_per_req"),  # over the measured windows only
        **srv,
    }


def run_perf_analyzer(ctx: BenchContext, point: Point, window_s: float) -> dict | None:
    if not ctx.perf_analyzer:
        return None
    out_csv = ctx.work / f"pa_{point.key}.csv"
    cmd = ctx.perf_analyzer + [
        "-m", point.model, "-i", ctx.pa_protocol,
        "-u", ctx.server.url if ctx.pa_protocol == "grpc" else ctx.server.http_url,
        "--measurement-interval", str(int(window_s * 1000)), "-f", str(out_csv),
    ]
    if point.rate:
        cmd += ["--request-rate-range", f"{point.rate:g}", "--request-distribution", "constant"]
    else:
        cmd += ["--concurrency-range", str(point.concurrency)]
    if point.mix:
        cmd += ["--input-data", str(ctx.work / MIX_FILE)]
    # Like tuner's points: the figures of its last 3 windows. perf_analyzer
    # only stops when they agree within -s percent, which a busy 2-core host
    # often misses at 10%; 100% still rejects a window twice as fast as another.
    cmd += ["--stability-percentage", "100", "--max-trials", "10"]
    c0 = _server_counters(ctx.control, point.model)
    log = ctx.work / f"pa_{point.key}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    srv = _server_view(c0, _server_counters(ctx.control, point.model))
    n = srv["srv_requests"]
    if proc.returncode != 0 or not out_csv.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        ctx.notes.append(f"perf_analyzer failed at {point.key} (exit {proc.returncode}): {' | '.join(tail)}")
        return None
    with open(out_csv, newline="") as f:
        row = next(csv.DictReader(f))
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "infer_per_s": float(row["Inferences/Second"]),
        "p50_ms": float(row["p50 latency"]) / 1000.0,
        "p99_ms": float(row["p99 latency"]) / 1000.0,
        "cpu_us_per_req": cpu / n * 1e6 if n else None,
        **srv,
    }


def _ratio(a, b):
    return a / b if a is not None and b else None


def _median_run(runs: list[dict]) -> dict:
    """Each figure's median over repeated runs (None when no run has it)."""
    if not runs:
        return {}
    out = dict(runs[-1])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in runs if r.get(key) is not None]
            out[key] = float(statistics.median(vals)) if vals else None
    out["client_bound"] = sum(bool(r.get("client_bound")) for r in runs) * 2 > len(runs)
    return out


def _paired_ratio(t_runs: list[dict], pa_runs: list[dict | None], key: str) -> float | None:
    """Median over the repeats of tuner / perf_analyzer, each pair run back to back (host drift cancels)."""
    ratios = [_ratio(t.get(key), (pa or {}).get(key)) for t, pa in zip(t_runs, pa_runs)]
    ratios = [r for r in ratios if r is not None]
    return float(statistics.median(ratios)) if ratios else None


def loadgen(ctx: BenchContext) -> dict:
    window_s = 1.0 if ctx.quick else WINDOW_S
    points = [p for p in LOADGEN_POINTS if not ctx.only or any(x in p.key for x in ctx.only)]
    for model in sorted({p.model for p in points}):
        ctx.control.load(model)
    out: dict[str, dict] = {}
    for i, point in enumerate(points):
        ctx.echo(f"  {point.key} ...")
        t_runs, pa_runs = [], []
        for r in range(ctx.repeat):
            # alternate which tool goes first, so a drift of the host favours neither
            if (i + r) % 2 == 0:
                t_runs.append(run_tuner(ctx, point, window_s))
                pa_runs.append(run_perf_analyzer(ctx, point, window_s))
            else:
                pa_runs.append(run_perf_analyzer(ctx, point, window_s))
                t_runs.append(run_tuner(ctx, point, window_s))
        # medians over the repeats: one run on a shared host can be off by 10-20%
        t = _median_run(t_runs)
        pa = _median_run([x for x in pa_runs if x])
        row = {
            "tuner_infer_per_s": t["infer_per_s"], "pa_infer_per_s": pa.get("infer_per_s"),
            "throughput_ratio": _paired_ratio(t_runs, pa_runs, "infer_per_s"),
            "tuner_p50_ms": t["p50_ms"], "pa_p50_ms": pa.get("p50_ms"),
            "p50_ratio": _paired_ratio(t_runs, pa_runs, "p50_ms"),
            "tuner_p99_ms": t["p99_ms"], "pa_p99_ms": pa.get("p99_ms"),
            "p99_ratio": _paired_ratio(t_runs, pa_runs, "p99_ms"),
            "tuner_cpu_us_per_req": t["cpu_us_per_req"], "pa_cpu_us_per_req": pa.get("cpu_us_per_req"),
            "cpu_ratio": _paired_ratio(t_runs, pa_runs, "cpu_us_per_req"),
            "tuner_errors": sum(r["errors"] or 0 for r in t_runs), "tuner_client_bound": t["client_bound"], "tuner_bound": t["bound"],
            "tuner_bound_reason": t["reason"], "tuner_loop_lag_p99_ms": t["loop_lag_p99_ms"],
            # the server's view of each tool's runs (statistics API): where a latency gap comes from
            "tuner_srv_mean_ms": t.get("srv_mean_ms"), "pa_srv_mean_ms": pa.get("srv_mean_ms"),
            "tuner_srv_queue_mean_ms": t.get("srv_queue_mean_ms"), "pa_srv_queue_mean_ms": pa.get("srv_queue_mean_ms"),
            "tuner_srv_mean_batch": t.get("srv_mean_batch"), "pa_srv_mean_batch": pa.get("srv_mean_batch"),
        }
        if point.rate:
            row["target_rate"] = point.rate
            row["tuner_achieved_rate"] = t["achieved"]
            row.update({
                "tuner_p50_send_ms": t["p50_send_ms"], "tuner_p99_send_ms": t["p99_send_ms"],
                "tuner_late_p50_ms": t["late_p50_ms"], "tuner_late_p99_ms": t["late_p99_ms"],
                "p50_send_ratio": _paired_ratio([{"p50_ms": r["p50_send_ms"]} for r in t_runs], pa_runs, "p50_ms"),
                "p99_send_ratio": _paired_ratio([{"p99_ms": r["p99_send_ms"]} for r in t_runs], pa_runs, "p99_ms"),
            })
        row["runs"] = {"tuner": t_runs, "pa": pa_runs}
        out[point.key] = row
    return out


def loadgen_table(results: dict, echo: Callable[[str], None] = print) -> None:
    def f(x, d=1):
        return "-" if x is None else f"{x:.{d}f}"

    head = (f"{'point':16s} {'infer/s tuner':>13s} {'pa':>8s} {'ratio':>6s} | {'p50 ms tuner':>12s} {'pa':>6s} "
            f"{'ratio':>6s} | {'p99 ms tuner':>12s} {'pa':>6s} {'ratio':>6s} | {'cpu us/req tuner':>16s} "
            f"{'pa':>6s} {'ratio':>6s} | flag")
    echo(head)
    echo("-" * len(head))
    for key, r in results.items():
        flag = "CLIENT-BOUND" if r["tuner_client_bound"] else (r["tuner_bound"] or "ok")
        if "target_rate" in r and r.get("tuner_achieved_rate") is not None:
            flag += f" (sent {r['tuner_achieved_rate']:.0f}/s of {r['target_rate']:g}/s)"
        echo(f"{key:16s} {f(r['tuner_infer_per_s']):>13s} {f(r['pa_infer_per_s']):>8s} "
             f"{f(r['throughput_ratio'], 2):>6s} | {f(r['tuner_p50_ms'], 3):>12s} {f(r['pa_p50_ms'], 3):>6s} "
             f"{f(r['p50_ratio'], 2):>6s} | {f(r['tuner_p99_ms'], 2):>12s} {f(r['pa_p99_ms'], 2):>6s} "
             f"{f(r['p99_ratio'], 2):>6s} | {f(r['tuner_cpu_us_per_req'], 0):>16s} "
             f"{f(r['pa_cpu_us_per_req'], 0):>6s} {f(r['cpu_ratio'], 2):>6s} | {flag}")
        echo(f"{'  server view':16s} mean {f(r.get('tuner_srv_mean_ms'), 3)} vs {f(r.get('pa_srv_mean_ms'), 3)} ms, "
             f"queue {f(r.get('tuner_srv_queue_mean_ms'), 3)} vs {f(r.get('pa_srv_queue_mean_ms'), 3)} ms, "
             f"batch {f(r.get('tuner_srv_mean_batch'), 2)} vs {f(r.get('pa_srv_mean_batch'), 2)} (tuner vs pa)")
        if "p99_send_ratio" in r:
            echo(f"{'  from the send':16s} {'':>13s} {'':>8s} {'':>6s} | {f(r['tuner_p50_send_ms'], 3):>12s} "
                 f"{f(r['pa_p50_ms'], 3):>6s} {f(r['p50_send_ratio'], 2):>6s} | {f(r['tuner_p99_send_ms'], 2):>12s} "
                 f"{f(r['pa_p99_ms'], 2):>6s} {f(r['p99_send_ratio'], 2):>6s} | late p50 "
                 f"{f(r['tuner_late_p50_ms'], 3)} p99 {f(r['tuner_late_p99_ms'], 3)} ms")


def search(_ctx: BenchContext) -> dict:
    """Smart vs grid search on the synthetic model (each sweep starts its own server)."""
    from bench_search import search_section

    return search_section()


def search_table(results: dict, echo: Callable) -> None:
    echo(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()))


SECTIONS: dict[str, tuple[Callable[[BenchContext], dict], Callable[[dict, Callable], None] | None]] = {
    "loadgen": (loadgen, loadgen_table),
    "search": (search, search_table),
}
MODELS = ["identity", "synthetic"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/bench.py", description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated sections to run")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="1 s windows and one run per point (a smoke run; noisier)")
    ap.add_argument("--points", default="", help="loadgen: only points whose key contains one of these "
                                                   "comma-separated texts (e.g. identity_mix)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="runs of each tool per point, interleaved; medians are shown (default 3, --quick 1)")
    ap.add_argument("--transport", default="auto", choices=("auto", "http", "stream", "unary"),
                    help="tuner's wire (default auto: HTTP to this embedded server)")
    ap.add_argument("--pa-protocol", default="grpc", choices=("grpc", "http"),
                    help="perf_analyzer's wire (its -i; default grpc, its own default)")
    args = ap.parse_args(argv)
    names = [s for s in args.sections.split(",") if s]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    pa_env = os.environ.get("PERF_ANALYZER", "").strip()
    pa = shlex.split(pa_env) if pa_env else None

    def echo(line: str) -> None:
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
        work = Path(tmp)
        repo = prepare_repository(work / "repo", MODELS)
        prepare_mix(repo, work)
        server = EmbeddedServer(repo.resolve(), work / "tritonserver.log")
        server.start()
        control = ServerControl(server.url, server.log_path)
        repeat = max(1, args.repeat if args.repeat is not None else (1 if args.quick else 3))
        ctx = BenchContext(server, control, work, pa, quick=args.quick, repeat=repeat, echo=echo,
                           only=tuple(x for x in args.points.split(",") if x), transport=args.transport,
                           pa_protocol=args.pa_protocol)
        if pa is None:
            ctx.notes.append("perf_analyzer is not available: tuner's figures only")
        doc: dict = {"meta": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cores": os.cpu_count(), "python": sys.version.split()[0], "event_loop": loop_kind(),
            "perf_analyzer": pa_env or None, "window_s": 1.0 if args.quick else WINDOW_S,
            "repeat": repeat, "tuner_transport": args.transport, "perf_analyzer_protocol": args.pa_protocol,
            "load_avg_before": os.getloadavg()[0],
        }}
        try:
            for name in names:
                run, table = SECTIONS[name]
                echo(f"[{name}]")
                doc[name] = run(ctx)
                if table is not None:
                    echo("")
                    table(doc[name], echo)
                    echo("")
        finally:
            ctx.loop.close()
            control.close()
            server.stop()
        doc["meta"]["load_avg_after"] = os.getloadavg()[0]
        doc["meta"]["notes"] = ctx.notes
        for note in ctx.notes:
            echo(f"note: {note}")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
            echo(f"json: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
