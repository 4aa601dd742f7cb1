"""Results as data: a run folder as a pandas DataFrame, and perf_analyzer's CSV.

    from tuner.results.frame import load_frame
    points = load_frame("reports/synthetic-20250101T000000Z")                 # one row per load point
    windows = load_frame("reports/synthetic-20250101T000000Z", windows=True)  # one row per window

Point rows (`POINT_COLUMNS`): the candidate and its tuned fields, the load
(concurrency, or request_rate and arrivals), throughput in inferences (items)
and in requests per second, latency percentiles (ms, over the windows the
point's summary uses), the server's per-request breakdown (ms), average
batch size, errors and the client's verdict; `phase` is "search" or
"confirm" (a visit of the sweep's confirmation phase, with its `round`).
Window rows (`WINDOW_COLUMNS`) repeat the point's keys and give each window's
own figures. Everything is computed from the stored raw samples.

`export_csv` writes perf_analyzer's CSV columns (`CSV_COLUMNS`: latencies and
server times in microseconds), so spreadsheets and scripts made for
perf_analyzer's `-f` output read it; tuner's own columns follow them.

`shape_latencies` is a point's latency per request shape (shape mixes and
input data of several shapes), from the windows' `shape_index`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tuner.config import CandidateSpec
from tuner.results.records import CandidateRecord, Measurement
from tuner.results.samples import WindowSample
from tuner.results.stats import percentiles_ms, summarize
from tuner.results.store import load_results

KEY_COLUMNS = ["candidate_id", "is_baseline", "max_batch_size", "max_queue_delay_us", "preferred_batch_size",
               "instance_count", "dynamic_batching", "phase", "round", "concurrency", "request_rate", "arrivals"]
FIGURE_COLUMNS = ["throughput_infer_per_s", "throughput_requests_per_s", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                  "mean_ms", "queue_ms", "compute_input_ms", "compute_infer_ms", "compute_output_ms",
                  "avg_batch_size", "completed", "errors", "duration_s"]
POINT_COLUMNS = KEY_COLUMNS + ["status", "stable", "windows"] + FIGURE_COLUMNS + ["client_bound"]
WINDOW_COLUMNS = KEY_COLUMNS + ["window", "start_s"] + FIGURE_COLUMNS

# perf_analyzer's `-f` CSV, in its order (the first is "Request Rate" when every row is open loop)
CSV_COLUMNS = ["Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue",
               "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv",
               "p50 latency", "p90 latency", "p95 latency", "p99 latency"]
TUNER_CSV_COLUMNS = ["Candidate", "Requests/Second", "Batch Size", "Request Rate"]


def _keys(m: Measurement, cand: CandidateRecord | None, phase: str, rnd: int | None) -> dict:
    spec = cand.spec if cand is not None else None
    if spec is not None and not isinstance(spec, CandidateSpec):
        spec = None  # a joint candidate (several models): its id names each model's settings
    return {
        "candidate_id": m.candidate_id,
        "is_baseline": bool(cand.is_baseline) if cand is not None else m.candidate_id == "baseline",
        "max_batch_size": spec.max_batch_size if spec else None,
        "max_queue_delay_us": spec.max_queue_delay_us if spec else None,
        "preferred_batch_size": ",".join(map(str, spec.preferred_batch_size)) if spec else None,
        "instance_count": spec.instance_count if spec else None,
        "dynamic_batching": spec.dynamic_batching if spec else None,
        "phase": phase, "round": rnd,
        "concurrency": m.concurrency if m.request_rate is None else None,
        "request_rate": m.request_rate,
        "arrivals": "closed" if m.request_rate is None else (_client(m.windows).get("arrivals") or "constant"),
    }


def _client(windows: list[WindowSample]) -> dict:
    return next((w.client for w in windows if w.client), None) or {}


def _figures(windows: list[WindowSample], last: int) -> dict:
    s = summarize(windows, last)
    srv = s.server_ms or {}
    return {
        "throughput_infer_per_s": s.throughput_infer_per_s,
        "throughput_requests_per_s": s.throughput_requests_per_s,
        **{f"{k}_ms": s.latency_ms[k] for k in ("p50", "p90", "p95", "p99", "mean")},
        **{f"{k}_ms": srv.get(k) for k in ("queue", "compute_input", "compute_infer", "compute_output")},
        "avg_batch_size": s.avg_batch_size, "completed": s.completed, "errors": s.errors,
        "duration_s": s.duration_s,
    }


def _measurements(run: Path) -> list[tuple[Measurement, CandidateRecord | None, str, int | None]]:
    res = load_results(run)
    out = [(m, res.candidates.get(m.candidate_id), "search", None) for m in res.points]
    out += [(v.point, res.candidates.get(v.candidate_id), "confirm", v.round) for v in res.confirmation]
    return out


def point_rows(run: Path | str) -> list[dict]:
    rows = []
    for m, cand, phase, rnd in _measurements(Path(run)):
        s = m.summary()
        rows.append({**_keys(m, cand, phase, rnd), "status": m.status, "stable": m.stable,
                     "windows": len(m.windows), **_figures(m.windows, m.summary_windows),
                     "client_bound": bool((s.client or {}).get("client_bound"))})
    return rows


def window_rows(run: Path | str) -> list[dict]:
    rows = []
    for m, cand, phase, rnd in _measurements(Path(run)):
        keys = _keys(m, cand, phase, rnd)
        for i, w in enumerate(m.windows):
            rows.append({**keys, "window": i + 1, "start_s": w.start_s, **_figures([w], 1)})
    return rows


def load_frame(run: Path | str, *, windows: bool = False):
    """A run folder (or results file) as a pandas DataFrame: one row per load point, or per window."""
    import pandas as pd

    if windows:
        return pd.DataFrame(window_rows(run), columns=WINDOW_COLUMNS)
    return pd.DataFrame(point_rows(run), columns=POINT_COLUMNS)


def _us(value_ms) -> int:
    return 0 if value_ms is None or value_ms != value_ms else int(round(value_ms * 1000))


def export_csv(run: Path | str, out: Path | str, candidate: str | None = None) -> int:
    """perf_analyzer's CSV of a run's points (search phase; `candidate`: only its points); the rows written."""
    points = [(m, s) for m, s in ((m, m.summary()) for m, _, phase, _ in _measurements(Path(run))
                                  if phase == "search" and (candidate is None or m.candidate_id == candidate))]
    if candidate is not None and not points:
        have = sorted({m.candidate_id for m, _, _, _ in _measurements(Path(run))})
        raise ValueError(f"no points of candidate '{candidate}' in {run} (it has: {', '.join(have) or 'none'})")
    all_open = bool(points) and all(m.request_rate is not None for m, _ in points)
    # perf_analyzer names its first column after the load it varied; tuner's columns come after its own
    head = ([("Request Rate" if all_open else "Concurrency")] + CSV_COLUMNS[1:] + TUNER_CSV_COLUMNS[:3]
            + ([] if all_open else ["Request Rate"]))
    rows = []
    for m, s in points:
        srv = s.server_ms or {}
        server_us = sum(_us(srv.get(k)) for k in ("queue", "compute_input", "compute_infer", "compute_output"))
        batch = next((w.batch_size for w in m.windows if w.batch_size), 1)
        rows.append([f"{m.request_rate:g}" if all_open else (m.concurrency if m.request_rate is None else 0),
                     f"{s.throughput_infer_per_s:.2f}", 0, max(0, _us(s.latency_ms["mean"]) - server_us),
                     _us(srv.get("queue")), _us(srv.get("compute_input")), _us(srv.get("compute_infer")),
                     _us(srv.get("compute_output")), 0,
                     *(_us(s.latency_ms[k]) for k in ("p50", "p90", "p95", "p99")),
                     m.candidate_id, f"{(s.throughput_requests_per_s or 0):.2f}", batch]
                    + ([] if all_open else [f"{m.request_rate:g}" if m.request_rate is not None else ""]))
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(head)
        writer.writerows(rows)
    return len(rows)


def shape_latencies(windows: list[WindowSample], mix: dict | None, last: int = 0) -> list[dict] | None:
    """Per request shape over the point's summary windows (the last `last`; 0: all): its share of the
    requests and latency percentiles (ms); None when every request had one shape."""
    shapes = (mix or {}).get("shapes") or []
    ok = [w for w in windows if not w.failed] or windows
    used = ok[-last:] if last > 0 else ok
    if len(shapes) < 2 or not used or any(w.shape_index is None for w in used):
        return None
    lats = np.fromiter((x for w in used for x in w.latencies_us), dtype=np.float64)
    idx = np.fromiter((x for w in used for x in w.shape_index), dtype=np.int64)
    if lats.size != idx.size:
        return None
    out = []
    for i, shape in enumerate(shapes):
        mine = lats[idx == i]
        pct = percentiles_ms(mine)
        out.append({"shape": shape.get("shape"), "weight": shape.get("weight"), "requests": int(mine.size),
                    "share": float(mine.size / lats.size) if lats.size else 0.0,
                    **{f"{k}_ms": pct[k] for k in ("p50", "p90", "p95", "p99")}})
    return out


__all__ = ["CSV_COLUMNS", "POINT_COLUMNS", "WINDOW_COLUMNS", "export_csv", "load_frame", "point_rows",
           "shape_latencies", "window_rows"]
