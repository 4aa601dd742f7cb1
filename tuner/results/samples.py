"""The raw samples of one measurement window, as stored in results.jsonl: pure data.

`WindowSample` holds what the load generator recorded over one window (every
completed request's latency, errors, its self-check) and what the server
said about it (`ServerDelta`: statistics-API counter deltas); statistics
(`stats.py`) and the client's verdict (`selfcheck.py`) are computed from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ServerDelta:
    """Server statistics-API counters over one window (deltas)."""

    success_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    inference_count: int = 0
    execution_count: int = 0
    # batch size -> (executions, compute_infer ns) seen in the window
    batch_compute_infer: dict[int, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_compute_infer"] = {str(k): list(v) for k, v in self.batch_compute_infer.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "ServerDelta | None":
        if d is None:
            return None
        d = dict(d)
        d["batch_compute_infer"] = {int(k): tuple(v) for k, v in d.get("batch_compute_infer", {}).items()}
        return cls(**d)


@dataclass
class WindowSample:
    """One measurement window of one load point: its raw samples.

    Optional parts (absent in records written before they existed):
    - first_response_us / responses: decoupled models over the stream; time to
      the first response of each request (parallel to latencies_us, which then
      is the time to the final response) and the responses received;
    - send_latencies_us: open loop; each request's latency from when it was
      actually sent (parallel to latencies_us, which runs from its scheduled
      send time: what a caller sees). The difference is the client's lateness;
    - shape_index: several request shapes (a shape mix, input data of several
      shapes); for each latency, the index of its request's shape in the run's
      environment `input_mix["shapes"]` (parallel to latencies_us; absent when
      every request has one shape);
    - batch_size: client-side batches; the items each request carried (absent:
      1). Throughput in inferences counts items, in requests counts latencies;
    - client: the load generator's self-check over the window (see CLIENT_KEYS);
    - telemetry: the server's Prometheus metrics at the window's end (gauges)
      and over it (counter deltas), None where not available;
    - steps: the models a request passes through besides the one it was sent to
      (an ensemble's steps, the models a BLS model calls): each one's statistics
      deltas over the window, by model name (schema 2).
    """

    start_s: float
    duration_s: float
    latencies_us: list[int]
    errors: int = 0
    server: ServerDelta | None = None
    first_response_us: list[int] | None = None
    responses: int | None = None
    client: dict | None = None
    send_latencies_us: list[int] | None = None
    telemetry: dict | None = None
    # load from a Ray cluster (distributed.py): who produced the window, and workers
    # lost during it (such a window is failed: left out of stability and summaries)
    workers: list[dict] | None = None
    failed_workers: list[str] | None = None
    shape_index: list[int] | None = None
    batch_size: int | None = None
    steps: dict[str, ServerDelta] | None = None

    @property
    def failed(self) -> bool:
        return bool(self.failed_workers)

    @property
    def completed(self) -> int:
        return len(self.latencies_us)

    @property
    def throughput(self) -> float:
        """Inferences (items) per second."""
        return self.completed * (self.batch_size or 1) / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict:
        d = {
            "start_s": self.start_s,
            "duration_s": self.duration_s,
            "errors": self.errors,
            "latencies_us": list(self.latencies_us),
            "server": self.server.to_dict() if self.server else None,
        }
        if self.first_response_us is not None:
            d["first_response_us"] = list(self.first_response_us)
        if self.send_latencies_us is not None:
            d["send_latencies_us"] = list(self.send_latencies_us)
        if self.responses is not None:
            d["responses"] = self.responses
        if self.client is not None:
            d["client"] = self.client
        if self.telemetry is not None:
            d["telemetry"] = self.telemetry
        if self.workers is not None:
            d["workers"] = self.workers
        if self.failed_workers is not None:
            d["failed_workers"] = self.failed_workers
        if self.shape_index is not None:
            d["shape_index"] = list(self.shape_index)
        if self.batch_size is not None:
            d["batch_size"] = self.batch_size
        if self.steps is not None:
            d["steps"] = {name: delta.to_dict() for name, delta in self.steps.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "WindowSample":
        first = d.get("first_response_us")
        sent = d.get("send_latencies_us")
        return cls(
            start_s=float(d["start_s"]),
            duration_s=float(d["duration_s"]),
            latencies_us=[int(x) for x in d["latencies_us"]],
            errors=int(d.get("errors", 0)),
            server=ServerDelta.from_dict(d.get("server")),
            first_response_us=[int(x) for x in first] if first is not None else None,
            responses=int(d["responses"]) if d.get("responses") is not None else None,
            client=d.get("client"),
            telemetry=d.get("telemetry"),
            workers=d.get("workers"),
            failed_workers=d.get("failed_workers"),
            send_latencies_us=[int(x) for x in sent] if sent is not None else None,
            shape_index=[int(x) for x in d["shape_index"]] if d.get("shape_index") is not None else None,
            batch_size=int(d["batch_size"]) if d.get("batch_size") is not None else None,
            steps=({name: ServerDelta.from_dict(x) for name, x in d["steps"].items()}
                   if d.get("steps") is not None else None),
        )
