"""Server telemetry from Triton's Prometheus metrics endpoint.

Scraped at window boundaries while a load point runs. The text is parsed
with `prometheus_client.parser` (never by hand). Anything missing is "not
available" (None): a CPU host has no GPU families, a remote server may have
metrics off or the port closed; a scrape that fails returns None quickly
(short timeout) and is never an error.

A window's telemetry (`window_telemetry`), all keys optional:
  gpus                    {gpu_uuid: {"utilization": 0..1, "memory_used_bytes", "power_w"}}
                          at the window's end; absent on hosts without GPU metrics
  cpu_utilization         0..1, at the window's end
  cpu_memory_used_bytes   at the window's end
  pending_requests        the model's nv_inference_pending_request_count at the window's end
  request_success, request_failure   the model's request counters over the window (deltas)
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_METRICS_PORT = 8002
SCRAPE_TIMEOUT_S = 0.5

GPU_GAUGES = {
    "nv_gpu_utilization": "utilization",
    "nv_gpu_memory_used_bytes": "memory_used_bytes",
    "nv_gpu_power_usage": "power_w",
}
CPU_GAUGES = {
    "nv_cpu_utilization": "cpu_utilization",
    "nv_cpu_memory_used_bytes": "cpu_memory_used_bytes",
}
MODEL_GAUGES = {"nv_inference_pending_request_count": "pending_requests"}
MODEL_COUNTERS = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
}
WANTED = set(GPU_GAUGES) | set(CPU_GAUGES) | set(MODEL_GAUGES) | set(MODEL_COUNTERS)

# No proxies: a metrics endpoint is on the server's own network.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_metrics_url(grpc_url: str, port: int = DEFAULT_METRICS_PORT) -> str | None:
    """Triton's default metrics URL on the host of a gRPC `host:port` URL."""
    url = re.sub(r"^(grpc|dns|ipv4|ipv6)://*", "", grpc_url.strip())
    url = url.split("/", 1)[0]
    if url.startswith("["):  # [v6 address]:port
        host = url[: url.find("]") + 1]
    else:
        host = url.rsplit(":", 1)[0] if url.count(":") == 1 else url
    if not host:
        return None
    return f"http://{host}:{port}/metrics"


@dataclass
class Snapshot:
    """One scrape, reduced to the families tuner reads."""

    gpus: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    pending_requests: float | None = None
    counters: dict[str, float] = field(default_factory=dict)


def parse_metrics(text: str, model: str = "", version: str = "") -> Snapshot:
    """Reduce Prometheus text to a Snapshot; samples of other models are ignored."""
    snap = Snapshot()
    for family in text_string_to_metric_families(text):
        name = family.name  # the parser names counter samples <family>_total
        if name not in WANTED:
            continue
        for sample in family.samples:
            if sample.name not in (name, name + "_total"):
                continue  # e.g. <family>_created
            labels = sample.labels
            value = float(sample.value)
            if name in GPU_GAUGES:
                uuid = labels.get("gpu_uuid", "")
                key = GPU_GAUGES[name]
                snap.gpus.setdefault(uuid, {})[key] = value
            elif name in CPU_GAUGES:
                snap.cpu[CPU_GAUGES[name]] = value
            else:
                if model and labels.get("model") != model:
                    continue
                if version and labels.get("version") not in (None, version):
                    continue
                if name in MODEL_GAUGES:
                    snap.pending_requests = (snap.pending_requests or 0.0) + value
                else:
                    key = MODEL_COUNTERS[name]
                    snap.counters[key] = snap.counters.get(key, 0.0) + value
    return snap


def scrape(url: str | None, model: str = "", version: str = "",
           timeout_s: float = SCRAPE_TIMEOUT_S) -> Snapshot | None:
    """One scrape of a metrics endpoint; None when it can't be read or parsed."""
    if not url:
        return None
    try:
        with _OPENER.open(url, timeout=timeout_s) as resp:
            if getattr(resp, "status", 200) != 200:
                return None
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError, urllib.error.URLError, http.client.HTTPException):
        return None  # closed port, unreachable host, timeout, bad URL: not available
    try:
        return parse_metrics(text, model, version)
    except (ValueError, TypeError, KeyError):
        return None  # not Prometheus text


def window_telemetry(before: Snapshot | None, after: Snapshot | None) -> dict | None:
    """Telemetry for one window: gauges at its end, counters over it."""
    if after is None:
        return None
    out: dict = {}
    if after.gpus:
        out["gpus"] = {uuid: dict(g) for uuid, g in after.gpus.items()}
    out.update(after.cpu)
    if after.pending_requests is not None:
        out["pending_requests"] = after.pending_requests
    if before is not None:
        for key, value in after.counters.items():
            if key in before.counters:
                out[key] = value - before.counters[key]
    return out
