"""Server telemetry from Triton's Prometheus metrics endpoint.

Scraped at window boundaries while a load point runs. The text is parsed
with `prometheus_client.parser` (never by hand). Anything missing is "not
available" (None): a CPU host has no GPU families, a remote server may have
metrics off or the port closed; a scrape that fails returns None quickly
(short timeout) and is never an error.

A window's telemetry (`window_telemetry`), all keys optional:
  gpus                    {gpu_uuid: {"utilization": 0..1, "memory_used_bytes", "memory_total_bytes",
                          "power_w", "power_limit_w"}} at the window's end, plus "energy_j": the
                          GPU's nv_energy_consumption counter over the window; absent on hosts
                          without GPU metrics
  energy_j                every GPU's energy over the window, summed (only when every GPU's
                          counter could be read at both ends)
  inference_count         the model's nv_inference_count over the window (inferences, not requests)
  energy_j_per_infer      energy_j / inference_count for this window alone, when energy_j > 0;
                          Triton refreshes GPU metrics every --metrics-interval-ms (2 s by default),
                          so one window's value is coarse: a point's figure sums its windows
                          (stats.telemetry_summary)
  cpu_utilization         0..1, at the window's end
  cpu_memory_used_bytes   at the window's end
  pending_requests        the model's nv_inference_pending_request_count at the window's end
  request_success, request_failure   the model's request counters over the window (deltas)

Energy is the whole GPU's, whatever else runs on it: on a GPU shared with
other models or processes it is an upper bound for this model.
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
    "nv_gpu_memory_total_bytes": "memory_total_bytes",
    "nv_gpu_power_usage": "power_w",
    "nv_gpu_power_limit": "power_limit_w",
}
GPU_COUNTERS = {"nv_energy_consumption": "energy_j"}  # joules since the server started
CPU_GAUGES = {
    "nv_cpu_utilization": "cpu_utilization",
    "nv_cpu_memory_used_bytes": "cpu_memory_used_bytes",
}
MODEL_GAUGES = {"nv_inference_pending_request_count": "pending_requests"}
MODEL_COUNTERS = {
    "nv_inference_request_success": "request_success",
    "nv_inference_request_failure": "request_failure",
    "nv_inference_count": "inference_count",
}
WANTED = set(GPU_GAUGES) | set(GPU_COUNTERS) | set(CPU_GAUGES) | set(MODEL_GAUGES) | set(MODEL_COUNTERS)

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
    gpu_counters: dict[str, dict[str, float]] = field(default_factory=dict)  # {uuid: {"energy_j": J}}
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
                snap.gpus.setdefault(labels.get("gpu_uuid", ""), {})[GPU_GAUGES[name]] = value
            elif name in GPU_COUNTERS:
                snap.gpu_counters.setdefault(labels.get("gpu_uuid", ""), {})[GPU_COUNTERS[name]] = value
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
    if after.gpus or after.gpu_counters:
        out["gpus"] = {uuid: dict(g) for uuid, g in after.gpus.items()}
    out.update(after.cpu)
    if after.pending_requests is not None:
        out["pending_requests"] = after.pending_requests
    if before is not None:
        for key, value in after.counters.items():
            if key in before.counters:
                out[key] = value - before.counters[key]
        _energy(before, after, out)
    return out


def _energy(before: Snapshot, after: Snapshot, out: dict) -> None:
    """Each GPU's energy over the window, their sum, and the sum per inference."""
    deltas = {}
    for uuid, counters in after.gpu_counters.items():
        start = before.gpu_counters.get(uuid, {}).get("energy_j")
        end = counters.get("energy_j")
        if start is None or end is None or end < start:  # a GPU new to the scrape, or a restarted server
            continue
        deltas[uuid] = end - start
        out["gpus"].setdefault(uuid, {})["energy_j"] = end - start
    if not deltas or len(deltas) < len(after.gpu_counters):
        return  # a sum over some GPUs only would pass for the whole server's energy
    out["energy_j"] = sum(deltas.values())
    inferences = out.get("inference_count")
    if inferences and out["energy_j"] > 0:  # 0 J: the counter was not refreshed in this window
        out["energy_j_per_infer"] = out["energy_j"] / inferences
