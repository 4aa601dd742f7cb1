"""The records of a results file (`results.jsonl`), typed: the one place its schema is written down.

A results file is versioned JSON lines, one record per line, appended and
fsynced as each thing happens, so nothing measured is lost if a run dies.
Every record carries `"schema"` and `"type"`; each type is a dataclass here
with `to_record()` (the wire form) and `from_record()` (tolerant of fields
added later: a missing field takes its default).

Schema history:
  1  types "run", "candidate", "point", "candidate_end", "session_end",
     "server_restart"; a point keeps every window's raw latencies
     (microseconds) and the server statistics deltas, so every statistic can
     be recomputed. Later additions within schema 1 (readers take their
     defaults when absent): point.request_rate (open loop), the windows'
     client/telemetry/workers parts, and the types "torn_tail" (bytes of a
     record cut short by a crash, set aside) and "restore_failed"; then
     "confirm_plan" and "confirm_point" (the sweep's confirmation phase: the
     configs measured again, interleaved, and each visit's raw windows).
  2  several models tuned together (an ensemble's steps, a BLS model's
     callees): a candidate's spec may be joint, {"candidate_id", "steps":
     [{"model", <a spec's fields>}, ...]} (`config.JointSpec`), and its
     config_json then maps each changed model to the config read back; a
     window may carry "steps", each step model's statistics deltas by name.
     A stateful model's candidate spec carries "sequence" ({"strategy":
     "direct" | "oldest", "max_candidate_sequences"}, `config.SequenceSpec`):
     its max_batch_size, max_queue_delay_us and preferred_batch_size are then
     the sequence batcher's, and dynamic_batching is false.
     Several models sharing one server (`[[model]]`): the run's
     input_mix has "models" and one "shapes" entry per model (its share as
     the weight), so a window's shape_index says whose request each latency
     was; every window's "server" is the listed models' deltas summed.
     Schema 1 files read as before (no field of theirs changed meaning).
     Later, within schema 2: confirm_plan.visit_budget (the most visits of the
     sequential rounds; absent, rounds x slots, as the rounds then were).

Record types, in the order a run writes them:

  run            one per session (a resumed sweep adds one per resume): what
                 was run, against which server, and its `environment`
                 (`tuner/results/environment.py` documents that object)
  candidate      a config applied (status "loaded", with the config the
                 server read back), refused ("failed", with the reason) or
                 not measured ("skipped", with the reason)
  point          one load level of one candidate, with its raw windows
  candidate_end  the search is done with a candidate (a resumed sweep does
                 not start it again)
  server_restart the embedded server died and was started again
  confirm_plan   the confirmation phase's configs, each at its load, in visiting
                 order, and the rounds asked for (a resumed sweep keeps this plan)
  confirm_point  one visit of the confirmation: round, candidate, load and the
                 point's raw windows, as a "point" has them
  torn_tail      a record cut short by a crash was moved to `kept_in`
  restore_failed the model's original config could not be put back
  session_end    the session's wall time
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from tuner.config import CandidateSpec, JointSpec, is_joint_dict
from tuner.results.samples import WindowSample
from tuner.results.stats import PointSummary, summarize

SCHEMA = 2


def _known(cls, r: dict) -> dict:
    """The fields of `r` that `cls` declares (records may carry more, written by newer code)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in r.items() if k in names}


@dataclass(frozen=True)
class ServerInfo:
    """The server a session measured, as it described itself."""

    url: str = ""  # gRPC host:port
    version: str = ""  # Triton's version, e.g. "2.51.0"
    extensions: tuple[str, ...] = ()  # Triton protocol extensions the server announces
    embedded: bool = False  # started by tuner (the bundled tritonserver)
    tls: bool = False  # reached over TLS
    header_names: tuple[str, ...] = ()  # extra request headers sent (names only; values never stored)

    def to_dict(self) -> dict:
        return {"url": self.url, "version": self.version, "extensions": list(self.extensions),
                "embedded": self.embedded, "tls": self.tls, "header_names": list(self.header_names)}

    @classmethod
    def from_dict(cls, d: dict | None) -> "ServerInfo":
        d = _known(cls, d or {})
        d["extensions"] = tuple(d.get("extensions", ()))
        d["header_names"] = tuple(d.get("header_names", ()))
        return cls(**d)


@dataclass(frozen=True)
class RunRecord:
    """What a session ran: type "run"."""

    command: str  # "sweep" | "measure" | "check"
    model: str
    version: str = ""  # model version asked for ("" = the server's policy)
    profile: str | None = None  # profile name (sweep, check)
    profile_sha256: str | None = None  # hash of the profile's text
    server: ServerInfo = field(default_factory=ServerInfo)
    tuner_version: str = ""
    started_at: str = ""  # UTC, ISO 8601
    candidates_planned: int | None = None  # sweep: candidates in the search space
    settings: dict | None = None  # measure/check: the LoadSettings fields
    baseline: str | None = None  # check: the baseline file compared with
    config: str | None = None  # check: "current", "recommended" or a config key
    environment: dict | None = None  # see tuner/results/environment.py

    def to_record(self) -> dict:
        r = {"schema": SCHEMA, "type": "run", "command": self.command, "model": self.model,
             "version": self.version, "server": self.server.to_dict(), "tuner_version": self.tuner_version,
             "started_at": self.started_at}
        for name in ("profile", "profile_sha256", "candidates_planned", "settings", "baseline", "config",
                     "environment"):
            value = getattr(self, name)
            if value is not None:
                r[name] = value
        return r

    @classmethod
    def from_record(cls, r: dict) -> "RunRecord":
        d = _known(cls, r)
        d.setdefault("command", "")
        d.setdefault("model", "")
        d["server"] = ServerInfo.from_dict(r.get("server"))
        return cls(**d)


@dataclass
class Measurement:
    """One load point of one candidate, with its raw samples: type "point"."""

    candidate_id: str
    concurrency: int  # requests in flight (closed loop); 0 for an open-loop point
    windows: list[WindowSample]  # every measured window, warm-up excluded
    stable: bool  # the last `summary_windows` windows agreed within the stability tolerance
    status: str = "ok"  # "ok" | "failed" (no request completed, or the server went away)
    error_kinds: dict[str, int] = field(default_factory=dict)  # gRPC status name -> requests
    first_error: str = ""
    summary_windows: int = 3  # how many of the last windows the point's statistics use
    request_rate: float | None = None  # open loop: the target requests/s (concurrency is 0 then)
    # `tuner measure` writes its verdict on the offered load beside the point's fields
    load: "PointLoad | None" = None

    @property
    def load_key(self) -> tuple[str, float]:
        """What load the point offered: ("rate", R) or ("concurrency", N); one point per key and candidate."""
        if self.request_rate is not None:
            return ("rate", float(self.request_rate))
        return ("concurrency", float(self.concurrency))

    def summary(self) -> PointSummary:
        return summarize(self.windows, self.summary_windows)

    def to_record(self) -> dict:
        r = {
            "schema": SCHEMA,
            "type": "point",
            "candidate_id": self.candidate_id,
            "concurrency": self.concurrency,
            "stable": self.stable,
            "status": self.status,
            "error_kinds": self.error_kinds,
            "first_error": self.first_error,
            "summary_windows": self.summary_windows,
            "request_rate": self.request_rate,
            "windows": [w.to_dict() for w in self.windows],
        }
        if self.load is not None:
            r.update(self.load.to_dict())
        return r

    @classmethod
    def from_record(cls, r: dict) -> "Measurement":
        return cls(
            candidate_id=r["candidate_id"],
            concurrency=int(r["concurrency"]),
            windows=[WindowSample.from_dict(w) for w in r.get("windows", [])],
            stable=bool(r.get("stable", False)),
            status=r.get("status", "ok"),
            error_kinds=dict(r.get("error_kinds", {})),
            first_error=r.get("first_error", ""),
            summary_windows=int(r.get("summary_windows", 3)),
            request_rate=float(r["request_rate"]) if r.get("request_rate") is not None else None,
        )


@dataclass(frozen=True)
class PointLoad:
    """A point's offered load and the load generator's verdict on it (derived from its windows)."""

    request_rate: float | None  # open loop: requests/s asked for; None for a closed loop
    arrivals: str  # "closed" | "constant" | "poisson"
    client_bound: bool  # the load generator, not the server, was the limit
    bound: str | None  # "client" | "server" | None (neither was saturated)
    bound_reason: str  # why, in words

    def to_dict(self) -> dict:
        return {"request_rate": self.request_rate, "arrivals": self.arrivals, "client_bound": self.client_bound,
                "bound": self.bound, "bound_reason": self.bound_reason}


@dataclass
class CandidateRecord:
    """A candidate config as applied: what was sent and what the server read back: type "candidate"."""

    spec: CandidateSpec | JointSpec  # JointSpec: several models tuned together (schema 2)
    status: str  # "loaded" | "failed" | "skipped"
    reason: str = ""  # why it failed or was skipped
    config_json: str = ""  # the config the server read back (Triton fills defaults); joint: {model: config}
    is_baseline: bool = False  # the model's original config

    @property
    def candidate_id(self) -> str:
        return "baseline" if self.is_baseline else self.spec.candidate_id

    def to_record(self) -> dict:
        return {
            "schema": SCHEMA,
            "type": "candidate",
            "candidate_id": self.candidate_id,
            "spec": self.spec.to_dict(),
            "status": self.status,
            "reason": self.reason,
            "config_json": self.config_json,
            "is_baseline": self.is_baseline,
        }

    @classmethod
    def from_record(cls, r: dict) -> "CandidateRecord":
        return cls(
            spec=(JointSpec.from_dict(r["spec"]) if is_joint_dict(r["spec"]) else CandidateSpec.from_dict(r["spec"])),
            status=r["status"],
            reason=r.get("reason", ""),
            config_json=r.get("config_json", ""),
            is_baseline=bool(r.get("is_baseline", False)),
        )


@dataclass(frozen=True)
class CandidateEnd:
    """The search is done with a candidate: type "candidate_end"."""

    candidate_id: str
    reason: str = ""

    def to_record(self) -> dict:
        return {"schema": SCHEMA, "type": "candidate_end", "candidate_id": self.candidate_id, "reason": self.reason}

    @classmethod
    def from_record(cls, r: dict) -> "CandidateEnd":
        return cls(**_known(cls, r))


@dataclass(frozen=True)
class SessionEnd:
    """A session ended (normally or not): type "session_end"."""

    duration_s: float  # wall time of the session

    def to_record(self) -> dict:
        return {"schema": SCHEMA, "type": "session_end", "duration_s": self.duration_s}

    @classmethod
    def from_record(cls, r: dict) -> "SessionEnd":
        return cls(duration_s=float(r.get("duration_s", 0.0)))


@dataclass(frozen=True)
class ServerRestart:
    """The embedded server died and was started again: type "server_restart"."""

    reason: str
    restart_s: float  # time to bring it back with the original config loaded

    def to_record(self) -> dict:
        return {"schema": SCHEMA, "type": "server_restart", "reason": self.reason, "restart_s": self.restart_s}

    @classmethod
    def from_record(cls, r: dict) -> "ServerRestart":
        return cls(reason=r.get("reason", ""), restart_s=float(r.get("restart_s", 0.0)))


@dataclass(frozen=True)
class TornTail:
    """The bytes of a record cut short by a crash, moved out of the results file: type "torn_tail"."""

    size_bytes: int  # how many bytes were set aside
    offset_bytes: int  # where they started in results.jsonl
    kept_in: str  # the file (beside results.jsonl) that holds them

    def to_record(self) -> dict:
        return {"schema": SCHEMA, "type": "torn_tail", "size_bytes": self.size_bytes,
                "offset_bytes": self.offset_bytes, "kept_in": self.kept_in}

    @classmethod
    def from_record(cls, r: dict) -> "TornTail":
        return cls(size_bytes=int(r.get("size_bytes", 0)), offset_bytes=int(r.get("offset_bytes", 0)),
                   kept_in=str(r.get("kept_in", "")))


@dataclass(frozen=True)
class RestoreFailed:
    """The model's original config could not be put back: type "restore_failed"."""

    model: str
    error: str

    def to_record(self) -> dict:
        return {"schema": SCHEMA, "type": "restore_failed", "model": self.model, "error": self.error}

    @classmethod
    def from_record(cls, r: dict) -> "RestoreFailed":
        return cls(model=r.get("model", ""), error=r.get("error", ""))


@dataclass(frozen=True)
class ConfirmPlan:
    """The confirmation phase's configs and rounds: type "confirm_plan"."""

    slots: tuple[tuple[str, int], ...]  # (candidate_id, concurrency), in the order each round visits them
    rounds: int                         # the most rounds
    method: str = "interleaved"
    visit_budget: int = 0               # the most visits, all rounds together; 0 (older files): rounds x slots

    def to_record(self) -> dict:
        return {"schema": SCHEMA, "type": "confirm_plan", "method": self.method, "rounds": self.rounds,
                "visit_budget": self.visit_budget,
                "slots": [{"candidate_id": c, "concurrency": n} for c, n in self.slots]}

    @classmethod
    def from_record(cls, r: dict) -> "ConfirmPlan":
        slots = tuple((str(x["candidate_id"]), int(x["concurrency"])) for x in r.get("slots", []))
        return cls(slots=slots, rounds=int(r.get("rounds", 0)), method=str(r.get("method", "interleaved")),
                   visit_budget=int(r.get("visit_budget", 0)))

    @property
    def visits(self) -> int:
        return self.visit_budget or self.rounds * len(self.slots)


@dataclass(frozen=True)
class ConfirmPoint:
    """One visit of the confirmation phase: type "confirm_point" (a point's fields, plus its round)."""

    round: int  # 0-based
    point: Measurement

    @property
    def candidate_id(self) -> str:
        return self.point.candidate_id

    def to_record(self) -> dict:
        r = self.point.to_record()
        r["type"] = "confirm_point"
        r["round"] = self.round
        return r

    @classmethod
    def from_record(cls, r: dict) -> "ConfirmPoint":
        return cls(round=int(r.get("round", 0)), point=Measurement.from_record(r))


Record = (RunRecord | Measurement | CandidateRecord | CandidateEnd | SessionEnd | ServerRestart | TornTail
          | RestoreFailed | ConfirmPlan | ConfirmPoint)
