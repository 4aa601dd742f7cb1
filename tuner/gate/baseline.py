"""Saved baselines: `tuner baseline save RUN_DIR --profile NAME` and `tuner baseline show FILE`.

A baseline is one JSON file, by default next to its profile
(`profiles/<name>.baseline.json`), small enough to commit (tens of KB for a
sweep's original and recommended configs), and enough to re-run every
statistic `tuner compare` needs. It is read back into a `Dataset` by
`tuner.gate.dataset.read_baseline`, beside results files, so that comparing
never depends on this module.

Format "tuner-baseline", schema 1:

    {
      "format": "tuner-baseline",
      "schema": 1,                          # readers refuse newer schemas
      "created_at": "2025-01-01T00:00:00Z", # UTC
      "tuner_version": "0.1.0",
      "profile": "synthetic",               # the profile this baseline belongs to
      "model": "synthetic",
      "source": {"path": "reports/synthetic-...", "command": "sweep", "profile_sha256": "...",
                 "started_at": "..."},
      "environment": {...},                 # the source run's environment (tuner.results.environment), or null
      "settings": {"warmup_s": 0.5, "window_s": 0.5, "min_windows": 3, "max_windows": 4,
                   "stability_pct": 10.0, "request_timeout_s": 30.0} | null,
      "max_samples_per_point": 1000,
      "recommended": "mbs16-qd0-pbsauto-i2" | null,   # key of the recommended config
      "configs": [
        {
          "key": "mbs32-nodb-i1",           # CandidateSpec.candidate_id of the tuned fields
          "roles": ["original"],            # "original" (the model as loaded), "recommended", "candidate"
          "spec": {"max_batch_size": 32, "max_queue_delay_us": 0, "preferred_batch_size": [],
                   "instance_count": 1, "dynamic_batching": false, "candidate_id": "..."},
          "points": [
            {
              "concurrency": 8, "status": "ok", "stable": true, "errors": 0, "first_error": "",
              "summary": {"throughput_infer_per_s": 301.2,     # informational, from all samples
                          "latency_ms": {"p50": ..., "p90": ..., "p95": ..., "p99": ...}},
              "windows": [                   # the point's summary windows (the last min_windows)
                {"duration_s": 0.5, "completed": 151,          # exact: throughput is exact
                 "latencies_us": [2510, 2533, ...]}            # sorted; see below
              ]
            }
          ]
        }
      ]
    }

Latencies are reduced per point to at most `max_samples_per_point` values,
shared between windows in proportion to their request counts; each window
keeps evenly spaced order statistics of its latencies (its minimum and maximum
included), so percentiles are preserved to within one stored sample, and
`completed` keeps the exact count each stored sample stands for. `tuner
compare` reduces a results file's windows the same way, so a run and its own
saved baseline compare as identical.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tuner import __version__
from tuner.errors import StoreError
from tuner.gate.dataset import (BASELINE_FORMAT, BASELINE_SCHEMA, MAX_SAMPLES_PER_POINT, PointData,
                                dataset_from_results, read_baseline, read_baseline_doc)
from tuner.gate.errors import CompareError
from tuner.results.records import RunRecord
from tuner.results.store import RESULTS_FILE, load_results, write_atomic

SUFFIX = ".baseline.json"


def default_path(profile: str, profiles_dir: Path | None = None) -> Path:
    """profiles/<name>.baseline.json, or beside a profile given as a path."""
    from tuner.profile import PROFILES_DIR

    p = Path(profile)
    if p.suffix == ".toml":
        return p.with_name(p.stem + SUFFIX)
    return Path(profiles_dir or PROFILES_DIR) / f"{profile}{SUFFIX}"


def _settings_of(run_dir: Path, run: RunRecord | None) -> dict | None:
    try:
        from tuner.profile import load_run_profile

        return dict(load_run_profile(run_dir).measurement.__dict__)
    except Exception:  # noqa: BLE001 - not a sweep folder: the run record may say
        return run.settings if run else None


def _point_doc(p: PointData) -> dict:
    d = p.to_dict()
    lat = p.percentiles_ms() if p.ok else {}
    d["summary"] = {"throughput_infer_per_s": round(p.throughput(), 3) if p.ok else None,
                    "latency_ms": {k: round(v, 4) for k, v in lat.items()}}
    order = ["concurrency", "status", "stable", "errors", "first_error", "summary", "windows"]
    return {k: d[k] for k in order}


def build_baseline(run_dir: Path, profile: str, *, all_candidates: bool = False,
                   max_samples: int = MAX_SAMPLES_PER_POINT) -> dict:
    run_dir = Path(run_dir)
    results_path = run_dir / RESULTS_FILE if run_dir.is_dir() else run_dir
    if not results_path.exists():
        raise StoreError(f"{run_dir}: has no {RESULTS_FILE}; pass a run folder written by `tuner sweep`, "
                         "`tuner measure` or `tuner check`")
    if max_samples < 10:
        raise CompareError(f"--max-samples must be >= 10, got {max_samples}")
    ds = dataset_from_results(results_path, all_candidates=all_candidates, max_samples=max_samples)
    run = load_results(results_path).run
    configs = []
    for c in ds.configs.values():
        pts = [p for _, p in sorted(c.points.items()) if p.ok]
        if not pts:
            continue
        configs.append({"key": c.key, "roles": c.roles, "spec": c.spec, "points": [_point_doc(p) for p in pts]})
    if not configs:
        raise StoreError(f"{run_dir}: no successful load point to keep as a baseline")
    recommended = ds.recommended if any(c["key"] == ds.recommended for c in configs) else None
    return {
        "format": BASELINE_FORMAT,
        "schema": BASELINE_SCHEMA,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tuner_version": __version__,
        "profile": Path(profile).stem if Path(profile).suffix == ".toml" else profile,
        "model": ds.model,
        "source": {"path": str(run_dir), "command": run.command if run else None,
                   "profile_sha256": run.profile_sha256 if run else None,
                   "started_at": run.started_at if run else None},
        "environment": ds.environment,
        "settings": _settings_of(run_dir if run_dir.is_dir() else run_dir.parent, run),
        "max_samples_per_point": max_samples,
        "recommended": recommended,
        "configs": configs,
    }


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:\s*,\s*-?[\d.eE+-]+)*)\s*\]")


def dumps(doc: dict) -> str:
    """Indented JSON with number lists kept on one line (one line per window's samples)."""
    text = json.dumps(doc, indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ",".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def save_baseline(run_dir: Path, profile: str, out: Path | None = None, *, all_candidates: bool = False,
                  max_samples: int = MAX_SAMPLES_PER_POINT) -> Path:
    doc = build_baseline(run_dir, profile, all_candidates=all_candidates, max_samples=max_samples)
    path = Path(out) if out is not None else default_path(profile)
    try:
        write_atomic(path, dumps(doc))
    except OSError as err:
        raise StoreError(f"cannot write the baseline {path}: {err}") from None
    return path


def show_baseline(path: Path, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    doc = read_baseline_doc(path)
    ds = read_baseline(path)
    if console is None:
        console = Console()
        if not console.is_terminal:  # CI logs: rich's 80 columns would truncate numbers
            console = Console(width=160)
    env = doc.get("environment") or {}
    server = env.get("server") or {}
    client = env.get("client") or {}
    gpus = env.get("gpus") or []
    console.print(f"[bold]{path}[/bold]: baseline schema {doc['schema']} for profile '{doc.get('profile')}', "
                  f"model '{doc.get('model')}', saved {doc.get('created_at')} by tuner {doc.get('tuner_version')}",
                  highlight=False)
    src = doc.get("source") or {}
    console.print(f"from {src.get('path')} ({src.get('command')}, started {src.get('started_at')})", markup=False)
    gpu_names = ", ".join(g.get("name") or g.get("uuid", "?") for g in gpus)
    console.print(f"environment: Triton {server.get('version') or '?'}, "
                  f"{len(gpus)} GPU(s){' ' + gpu_names if gpus else ''}"
                  f"{'' if env.get('gpus_known') else ' (GPUs unknown: no metrics)'}, "
                  f"client {client.get('host', '?')} with {client.get('cpu_count', '?')} CPUs", markup=False)
    if doc.get("settings"):
        s = doc["settings"]
        console.print(f"measurement: warm-up {s.get('warmup_s')} s, windows {s.get('min_windows')}-"
                      f"{s.get('max_windows')} x {s.get('window_s')} s", markup=False)
    t = Table(title=f"recommended: {ds.recommended or '-'}")
    for col in ("config", "roles", "concurrency", "infer/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "windows",
                "samples", "stable"):
        t.add_column(col, justify="left" if col in ("config", "roles") else "right")
    for c in ds.configs.values():
        for conc, p in sorted(c.points.items()):
            lat = p.percentiles_ms()
            t.add_row(c.key, ",".join(c.roles), str(conc), f"{p.throughput():.1f}",
                      *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p95", "p99")),
                      str(len(p.completed)), f"{sum(len(x) for x in p.latencies_us)}/{int(p.completed.sum())}",
                      "yes" if p.stable else "NO")
    console.print(t)
