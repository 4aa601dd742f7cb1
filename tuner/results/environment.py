"""The environment a measurement ran in, and whether two environments compare.

Every results file's "run" record carries an "environment" object (schema 1):

    {"schema": 1,
     "tuner_version": "0.1.0",
     "started_at": "2025-01-01T00:00:00Z",
     "profile_sha256": "..." | null,
     "server": {"name": "triton", "version": "2.51.0", "extensions": [...], "embedded": true},
     "model": {"name": "synthetic", "version": "", "config": {... read back from the server ...}},
     "gpus": [{"uuid": "GPU-...", "name": "..." | null, "memory_total_bytes": 8.1e10 | null}, ...],
     "gpus_known": true,          # false: no metrics URL, or the metrics endpoint failed
     "metrics_url": "http://..." | null, "metrics_error": "" ,
     "client": {"host": "...", "cpu_count": 16, "platform": "Linux-...", "python": "3.11.9"},
     "input_mix": {...}}          # what the requests carried (below); absent before it was recorded

`input_mix` (written by `load/request.py`, added by the command that built
the requests):

    {"source": "random" | "zeros" | "file",
     "data_file": "mix.json" | null, "data_sha256": "..." | null,   # input data: file name and hash
     "entries": 3 | null,                                          # input data: entries in it
     "batch_size": 1,                                              # items per request (client batch)
     "seed": 0 | null,                                             # generated data: the draw's seed
     "shapes": [{"shape": "INPUT0=[128]", "weight": 0.667}, ...]}  # request shapes, share of requests

A window's `shape_index` (results/samples.py) indexes `shapes`.

GPUs come from Triton's Prometheus metrics endpoint (`nv_gpu_*` families,
labelled by `gpu_uuid`; parsed with prometheus_client's parser): the URL
given, the embedded server's, or Triton's default port 8002 on a remote
server's host. Triton labels GPU metrics by UUID only, so the "name" is
filled only where a label carries one; total memory stands in for the model
of GPU. A server without GPUs gives an empty list; an unreachable or unknown
metrics endpoint gives an empty list with "gpus_known": false, never an error.

Which fields must match before two measurements are compared (`differences`):

    server.version      a different Triton is a different system
    model.name
    model.platform      platform and backend: a different runtime is a different model
    model.signature     inputs/outputs (name, data type, dims): a different request
    model.instance_kind KIND_GPU / KIND_CPU / ... of the instance groups
    gpus                the GPU count, and per GPU its name (when the metrics show one)
                        or total memory (a proxy for the model of GPU); only when
                        both sides could read the metrics endpoint
    client.cpu_count    the load generator's CPUs (and an embedded server's) bound
                        what it can drive on small hosts
    input_mix           the data source (random, zeros or a file and its hash), the
                        request shapes and their weights, and the client batch size:
                        other requests are another workload

Recorded but NOT required to match, because they differ on every CI run or
are exactly what a regression gate is meant to test: the host name, the start
time, the tuner version, the profile hash, server extensions, the model
version and the model's other config fields (its `parameters`, weights,
optimization settings). The tuned fields (max_batch_size, dynamic batching,
instance count) are matched per load point instead: a point is only ever
compared with a point measured under the same tuned fields. Fields absent on
either side (results written before environments were recorded) are listed
as unknown, not as a mismatch.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
import urllib.request

from tuner import __version__
from tuner import config as cfgmod

SCHEMA = 1
METRICS_TIMEOUT_S = 2.0


def _model_config(srv, model: str, version: str) -> dict | None:
    try:
        cfg = srv.control.model_config(model, version)
    except Exception:  # noqa: BLE001 - the environment is a record, never a failure
        return None
    return json.loads(cfgmod.config_to_json(cfg))


def gpus_from_metrics(text: str) -> list[dict]:
    """GPUs named in Triton's Prometheus metrics (an empty list when none)."""
    from prometheus_client.parser import text_string_to_metric_families

    gpus: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("nv_gpu_"):
            continue
        for sample in family.samples:
            uuid = sample.labels.get("gpu_uuid")
            if not uuid:
                continue
            g = gpus.setdefault(uuid, {"uuid": uuid, "name": None, "memory_total_bytes": None})
            for key in ("gpu_name", "name", "model_name", "product_name"):
                if sample.labels.get(key):
                    g["name"] = sample.labels[key]
            if family.name == "nv_gpu_memory_total_bytes":
                g["memory_total_bytes"] = float(sample.value)
    return [gpus[k] for k in sorted(gpus)]


# No proxies: a metrics endpoint is on the server's own network.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def guess_metrics_url(grpc_url: str) -> str | None:
    """Triton's default metrics port (8002) on the host of a gRPC host:port URL."""
    host = grpc_url.strip().split("://", 1)[-1].split("/", 1)[0]
    if host.startswith("["):
        host = host[: host.find("]") + 1]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return f"http://{host}:8002/metrics" if host else None


def read_gpus(metrics_url: str | None) -> tuple[list[dict], bool, str]:
    """(gpus, known, error) from a metrics URL; unknown URL or failure: ([], False, why)."""
    if not metrics_url:
        return [], False, "no metrics URL"
    try:
        with _OPENER.open(metrics_url, timeout=METRICS_TIMEOUT_S) as resp:
            text = resp.read().decode("utf-8", "replace")
        return gpus_from_metrics(text), True, ""
    except Exception as err:  # noqa: BLE001 - absent metrics are an empty list, never an error
        return [], False, f"{type(err).__name__}: {err}"[:200]


def collect(srv, model: str, profile_sha256: str | None, *, version: str = "",
            metrics_url: str | None = None) -> dict:
    """The environment of a measurement on `srv` (a `tuner.server.ServerContext`).

    `metrics_url` overrides the server's own (the embedded server knows its
    metrics port; for a remote server Triton's default port 8002 on its host
    is tried, and a closed or foreign port just leaves the GPUs unknown).
    """
    try:
        md = srv.control.metadata()
    except Exception:  # noqa: BLE001
        md = {}
    url = metrics_url or getattr(srv, "metrics_url", None) or guess_metrics_url(getattr(srv, "url", "") or "")
    gpus, known, err = read_gpus(url)
    return {
        "schema": SCHEMA,
        "tuner_version": __version__,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "profile_sha256": profile_sha256,
        "server": {"name": md.get("name", ""), "version": md.get("version", ""),
                   "extensions": sorted(md.get("extensions", [])),
                   "embedded": getattr(srv, "embedded", None) is not None},
        "model": {"name": model, "version": version, "config": _model_config(srv, model, version)},
        "gpus": gpus,
        "gpus_known": known,
        "metrics_url": url,
        "metrics_error": err,
        "client": {"host": socket.gethostname(), "cpu_count": os.cpu_count(),
                   "platform": platform.platform(), "python": platform.python_version()},
    }


# ------------------------------------------------------------- comparing ---

def _signature(cfg: dict) -> list:
    out = []
    for kind in ("input", "output"):
        for t in cfg.get(kind, []) or []:
            out.append([kind, t.get("name", ""), t.get("data_type", ""), [int(d) for d in t.get("dims", [])]])
    return out


def _instance_kinds(cfg: dict) -> list[str]:
    return sorted({g.get("kind", "KIND_AUTO") for g in cfg.get("instance_group", []) or []}) or ["KIND_AUTO"]


def _gpu_identity(env: dict) -> dict | None:
    if not env.get("gpus_known"):
        return None
    gpus = env.get("gpus", [])
    return {"count": len(gpus),
            "models": sorted(g.get("name") or f"{(g.get('memory_total_bytes') or 0) / 2**30:.0f} GiB"
                             for g in gpus)}


def must_match(env: dict) -> dict:
    """The fields that must match, each None when this environment did not record it."""
    server = env.get("server") or {}
    model = env.get("model") or {}
    cfg = model.get("config")
    client = env.get("client") or {}
    return {
        "server.version": server.get("version") or None,
        "model.name": model.get("name") or None,
        "model.platform": ({"platform": cfg.get("platform", ""), "backend": cfg.get("backend", "")}
                           if cfg is not None else None),
        "model.signature": _signature(cfg) if cfg is not None else None,
        "model.instance_kind": _instance_kinds(cfg) if cfg is not None else None,
        "gpus": _gpu_identity(env),
        "client.cpu_count": client.get("cpu_count"),
        "input_mix": input_mix_identity(env.get("input_mix")),
    }


def input_mix_identity(mix: dict | None) -> dict | None:
    """What of an input mix must match: source, data hash, client batch, shapes and weights."""
    if not mix:
        return None
    return {"source": mix.get("source"), "data_sha256": mix.get("data_sha256"),
            "batch_size": mix.get("batch_size", 1),
            "shapes": [[s.get("shape"), round(float(s.get("weight") or 0), 3)] for s in mix.get("shapes") or []]}


INFO_FIELDS = ("tuner_version", "profile_sha256", "server.extensions", "client.host", "model.version")


def _get(env: dict, dotted: str):
    cur = env
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def mix_text(identity: dict) -> str:
    """An input mix in a few words: source, shapes with their share, batch size."""
    source = identity.get("source") or "?"
    if identity.get("data_sha256"):
        source += f" sha256 {identity['data_sha256'][:12]}"
    shapes = " / ".join(f"{s} {w:.0%}" for s, w in identity.get("shapes") or [])
    return f"({source}; {shapes}; batch {identity.get('batch_size', 1)})"


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def differences(baseline: dict | None, current: dict | None) -> tuple[list[str], list[str], list[str]]:
    """(mismatches, unknown, informational differences), each a list of one-line texts."""
    baseline, current = baseline or {}, current or {}
    a, b = must_match(baseline), must_match(current)
    mismatches, unknown = [], []
    for key in a:
        if a[key] is None or b[key] is None:
            if key == "gpus" and (baseline or current):
                continue  # no metrics endpoint is common and documented: not worth a note
            unknown.append(f"{key}: not recorded in the {'baseline' if a[key] is None else 'current'} results")
        elif a[key] != b[key]:
            if key == "input_mix":
                mismatches.append(f"input_mix: baseline {mix_text(a[key])}, current {mix_text(b[key])}")
                continue
            mismatches.append(f"{key}: baseline {_short(a[key])}, current {_short(b[key])}")
    info = []
    for key in INFO_FIELDS:
        x, y = _get(baseline, key), _get(current, key)
        if isinstance(x, list) and isinstance(y, list):
            x, y = sorted(map(str, x)), sorted(map(str, y))
        if x is not None and y is not None and x != y:
            info.append(f"{key}: baseline {_short(x)}, current {_short(y)}")
    return mismatches, unknown, info
