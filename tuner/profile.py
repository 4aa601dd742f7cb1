"""Profiles: `profiles/<name>.toml`, one per tuned model, validated in full
before anything runs. Unknown keys, wrong types and impossible values are
reported as one line naming the file, the key and the fix.

    [model]        name, version, url, config (path to its config.pbtxt, optional),
                   first_dim_is_batch, data ("random" | "zeros"), input_data (a perf_analyzer-format
                   JSON file or a folder of .npy/.npz files; load/inputs.py documents both),
                   batch_size (items per request, client-side batch; 1), [model.shapes] (per input
                   a shape, INPUT0 = [128], or a weighted mix, INPUT0 = [{dims = [128], weight = 2}, ...]),
                   sequence_length (a sequence model's requests per sequence; 0 = 8),
                   composing_models (the models a BLS model calls, as perf_analyzer's
                   --bls-composing-models: tuned together, the load still sent to [model] name; an
                   ensemble's steps need no listing: they are read from its ensemble_scheduling);
                   [[model]] entries instead: several models on one server (profile_multi.py)
    [server]       ssl, root_certificates, private_key, certificate_chain (PEM paths),
                   [server.headers] Name = "env:VAR" (values only from the environment)
    [search]       max_batch_size, max_queue_delay_us, preferred_batch_size (a rule or list of rules:
                   none, max, halves), instance_count, concurrency (load levels, climbed in order),
                   plateau_pct (stop climbing when throughput grows less than this),
                   strategy ("smart", the default: predicts every candidate from the server's
                   statistics, measures the most promising, brackets each one's load level at the
                   budget and skips what cannot beat the best so far; "grid": every candidate
                   climbed through every listed level), confirm (true by default: the winner, the
                   candidates within noise of it and the baseline measured again, interleaved, for confidence
                   intervals; `--no-confirm` skips it), confirm_rounds (6) and confirm_visits (14): its bounds;
                   [search.sequence] tunes a stateful model's sequence batcher (profile_sequence.py)
    [constraints]  latency_percentile, latency_budget_ms, min_throughput_infer_per_s,
                   max_gpu_memory_mb (MiB, from the server's GPU telemetry; reported as
                   "not available" where the server exposes none), max_error_rate
    [objective]    goal = "max_throughput" | "min_latency" (lowest latency at the required
                   throughput, constraints.min_throughput_infer_per_s) |
                   "max_throughput_per_instance" | "min_energy" (lowest GPU J/inference within the
                   constraints, from the server's energy telemetry; "not available" without it)
    [measurement]  warmup_s, window_s, min_windows, max_windows, stability_pct,
                   request_timeout_s, workers (load processes, 0 = automatic; "ray" or
                   "ray://HOST:PORT": load from Ray actors), ray_actors (0 = one per node)
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tuner.config import CandidateSpec, PREFERRED_RULES, SequenceSpace, expand_sequence_specs, expand_specs
from tuner.profile_multi import read_models
from tuner.profile_sequence import sequence_space
from tuner.server.connection import Connection
from tuner.errors import ProfileError
from tuner.load.inputs import InputSpec, ShapeChoice, parse_shape_mix
from tuner.load.spec import LoadSettings
from tuner.search.recommend import Constraints, GOALS, LATENCY_KEYS

PROFILES_DIR = Path("profiles")


@dataclass(frozen=True)
class TlsSettings:
    ssl: bool = False
    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None


@dataclass(frozen=True)
class SearchSpace:
    max_batch_size: tuple[int, ...] = (1, 4, 8, 16)
    max_queue_delay_us: tuple[int, ...] = (0, 1000)
    preferred_batch_size: tuple[str, ...] = ("none", "halves")
    instance_count: tuple[int, ...] = (1,)
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    plateau_pct: float = 3.0
    strategy: str = "smart"
    confirm: bool = True  # measure the winner, its near ties and the baseline again, interleaved
    confirm_rounds: int = 6  # the most rounds of the confirmation (the first two visit every config)
    confirm_visits: int = 14  # ... and the most visits, all rounds together: its time bound
    sequence: SequenceSpace | None = None  # [search.sequence]: a stateful model's sequence batcher

    def specs(self) -> list[CandidateSpec]:
        if self.sequence is not None:
            return expand_sequence_specs(list(self.max_batch_size), list(self.instance_count), self.sequence)
        return expand_specs(list(self.max_batch_size), list(self.max_queue_delay_us),
                            list(self.instance_count), self.preferred_batch_size)


@dataclass(frozen=True)
class Profile:
    name: str
    path: Path | None
    model: str
    version: str = ""
    url: str | None = None
    tls: "TlsSettings" = field(default_factory=lambda: TlsSettings())
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # values are "env:VAR" in files
    config_path: Path | None = None
    first_dim_is_batch: bool = False
    data: str = "random"
    shapes: dict[str, tuple[ShapeChoice, ...]] = field(default_factory=dict)
    input_data: Path | None = None
    batch_size: int = 1
    sequence_length: int = 0  # a sequence model's requests per sequence (0: load/sequence.py's default)
    composing_models: tuple[str, ...] = ()  # a BLS model's callees, tuned together (ensemble steps: found)
    search: SearchSpace = field(default_factory=SearchSpace)
    constraints: Constraints = field(default_factory=Constraints)
    goal: str = "max_throughput"
    measurement: LoadSettings = field(default_factory=LoadSettings)
    text: str = ""
    overrides: dict = field(default_factory=dict)  # CLI flags applied over the file
    base_dir: Path | None = None  # the folder relative paths in the profile resolve against

    @property
    def inputs(self) -> InputSpec:
        """What the profile's requests carry."""
        return InputSpec(data=self.data, data_path=self.input_data, shapes=self.shapes, batch_size=self.batch_size,
                         sequence_length=self.sequence_length)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def connection(self) -> Connection | None:
        """How to reach the server; None means the embedded one."""
        if not self.url:
            return None
        return Connection(url=self.url, ssl=self.tls.ssl, root_certificates=self.tls.root_certificates,
                          private_key=self.tls.private_key, certificate_chain=self.tls.certificate_chain,
                          headers=self.headers)

    def with_connection(self, *, ssl: bool = False, root_certificates: Path | None = None,
                        private_key: Path | None = None, certificate_chain: Path | None = None,
                        headers: list[tuple[str, str]] = ()) -> "Profile":
        """TLS and header flags over the profile's (never stored: they may carry secrets)."""
        tls = TlsSettings(ssl=ssl or self.tls.ssl,
                          root_certificates=root_certificates or self.tls.root_certificates,
                          private_key=private_key or self.tls.private_key,
                          certificate_chain=certificate_chain or self.tls.certificate_chain)
        merged = dict(self.headers)
        merged.update(dict(headers))
        return replace(self, tls=tls, headers=tuple(merged.items()))

    def with_overrides(self, *, url: str | None = None, latency_budget_ms: float | None = None,
                       latency_percentile: str | None = None, search_strategy: str | None = None,
                       input_data: str | None = None, batch_size: int | None = None) -> "Profile":
        p = self
        overrides = dict(self.overrides)
        if url:
            p = replace(p, url=url)
            overrides["url"] = url
        if input_data:  # kept absolute: a resumed run may start elsewhere
            path = Path(input_data).resolve()
            if not path.exists():
                raise ProfileError(f"--input-data {input_data}: no such file or folder")
            p = replace(p, input_data=path)
            overrides["input_data"] = str(path)
        if batch_size is not None:
            if batch_size < 1:
                raise ProfileError(f"--batch-size must be >= 1, got {batch_size}")
            p = replace(p, batch_size=batch_size)
            overrides["batch_size"] = batch_size
        if search_strategy is not None:
            from tuner.search.strategy import STRATEGIES

            if search_strategy not in STRATEGIES:
                raise ProfileError(f"--search must be one of {', '.join(STRATEGIES)}, got {search_strategy!r}")
            p = replace(p, search=replace(p.search, strategy=search_strategy))
            overrides["search_strategy"] = search_strategy
        c = p.constraints
        if latency_budget_ms is not None:
            if latency_budget_ms <= 0:
                raise ProfileError("--latency-budget-ms must be > 0")
            c = replace(c, latency_budget_ms=latency_budget_ms)
            overrides["latency_budget_ms"] = latency_budget_ms
        if latency_percentile is not None:
            if latency_percentile not in LATENCY_KEYS:
                raise ProfileError(f"--latency-percentile must be one of {', '.join(LATENCY_KEYS)}")
            c = replace(c, latency_percentile=latency_percentile)
            overrides["latency_percentile"] = latency_percentile
        return replace(p, constraints=c, overrides=overrides)


def resolve_profile_path(name_or_path: str, profiles_dir: Path = PROFILES_DIR) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    candidate = Path(profiles_dir) / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    have = sorted(x.stem for x in Path(profiles_dir).glob("*.toml")) if Path(profiles_dir).is_dir() else []
    raise ProfileError(
        f"no profile '{name_or_path}': {candidate} does not exist"
        + (f" (profiles here: {', '.join(have)})" if have else "; run from the project folder or pass a path")
    )


def load_profile(name_or_path: str, profiles_dir: Path = PROFILES_DIR) -> Profile:
    path = resolve_profile_path(name_or_path, profiles_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError(f"{path}: cannot read profile: {err}") from None
    return parse_profile(text, path)


class _Reader:
    """Typed access to one TOML table that remembers which keys were used."""

    def __init__(self, path: str, table: Any, section: str):
        self.path, self.section = path, section
        if not isinstance(table, dict):
            self.fail(section, f"must be a table ([{section}])")
        self.table = table
        self.used: set[str] = set()

    def fail(self, key: str, fix: str) -> None:
        raise ProfileError(f"{self.path}: {key}: {fix}")

    def key(self, name: str) -> str:
        return f"{self.section}.{name}"

    def get(self, name: str, kind: type | tuple, default: Any, *, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                self.fail(self.key(name), "is required")
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            self.fail(self.key(name), f"must be {_kind_name(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            self.fail(self.key(name), f"must be {_kind_name(kinds)}, got {type(value).__name__} {value!r}")
        return value

    def number(self, name: str, default: float, *, minimum: float | None = None, positive: bool = False,
               integer: bool = False) -> Any:
        v = self.get(name, int if integer else (int, float), default)
        if positive and not v > 0:
            self.fail(self.key(name), f"must be > 0, got {v}")
        if minimum is not None and v < minimum:
            self.fail(self.key(name), f"must be >= {minimum:g}, got {v}")
        return v

    def int_list(self, name: str, default: tuple[int, ...], *, minimum: int) -> tuple[int, ...]:
        v = self.get(name, list, None)
        if v is None:
            return default
        if not v:
            self.fail(self.key(name), "needs at least one value")
        for x in v:
            if isinstance(x, bool) or not isinstance(x, int):
                self.fail(self.key(name), f"must be a list of integers, got {x!r}")
            if x < minimum:
                self.fail(self.key(name), f"values must be >= {minimum}, got {x}")
        return tuple(sorted(set(v)))

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            self.fail(self.key(unknown[0]), f"unknown key; known keys in [{self.section}]: "
                      f"{', '.join(sorted(self.used))}")


def _kind_name(kinds: tuple) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a table"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _rules(s: _Reader, value) -> tuple[str, ...]:
    rules = (value,) if isinstance(value, str) else tuple(value)
    if not rules:
        s.fail("search.preferred_batch_size", "needs at least one rule")
    for r in rules:
        if r not in PREFERRED_RULES:
            s.fail("search.preferred_batch_size", f"rules must be among {', '.join(PREFERRED_RULES)}, got {r!r}")
    return rules


@dataclass(frozen=True)
class _Where:
    """Where a profile came from: `path` names it in messages; relative paths in it
    (config, certificates) resolve against `base_dir`, the folder the profile was written in."""

    path: Path
    base_dir: Path
    check_files: bool  # certificate files must exist (False: re-rendering a run on another machine)

    def file(self, value: str) -> Path:
        return Path(value) if Path(value).is_absolute() else self.base_dir / value


def parse_profile(text: str, path: Path | str = "<profile>", *, base_dir: Path | None = None,
                  check_files: bool = True) -> Profile:
    """A validated Profile; `base_dir` (default: the profile's folder) anchors relative paths."""
    path = Path(path)
    at = _Where(path, Path(base_dir) if base_dir is not None else path.parent, check_files)
    where = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ProfileError(f"{where}: not valid TOML: {err}") from None
    known = {"model", "server", "search", "constraints", "objective", "measurement"}
    for section in doc:
        if section not in known:
            raise ProfileError(f"{where}: [{section}]: unknown section; sections are {', '.join(sorted(known))}")
    # one [model] table, or [[model]] entries: several models on one server (profile_multi.py)
    model, constraints = read_models(doc, where, at, _Reader, _model_section, _constraints_section)
    tls, headers = _server_section(_Reader(where, doc.get("server", {}), "server"), at)
    return Profile(
        name=path.stem, path=path, tls=tls, headers=headers, **model,
        search=_search_section(_Reader(where, doc.get("search", {}), "search")),
        constraints=constraints,
        goal=_objective_section(_Reader(where, doc.get("objective", {}), "objective"), constraints),
        measurement=_measurement_section(_Reader(where, doc.get("measurement", {}), "measurement")),
        text=text, base_dir=at.base_dir,
    )


def _model_section(m: _Reader, at: _Where) -> dict:
    model = m.get("name", str, "", required=True)
    if not model.strip():
        m.fail("model.name", "must not be empty")
    version = m.get("version", (str, int), "")
    url = m.get("url", str, "") or None
    config_path = m.get("config", str, "") or None
    first_dim_is_batch = m.get("first_dim_is_batch", bool, False)
    data = m.get("data", str, "random")
    if data not in ("random", "zeros"):
        m.fail("model.data", f"must be \"random\" or \"zeros\", got {data!r}")
    shapes: dict[str, tuple[ShapeChoice, ...]] = {}
    for name, value in m.get("shapes", dict, {}).items():
        try:
            shapes[name] = parse_shape_mix(value)
        except ValueError as err:
            m.fail(f"model.shapes.{name}", f"{err}; e.g. {name} = [128] or {name} = [{{dims = [128], weight = 2}}]")
    input_data = m.get("input_data", str, "") or None
    if input_data and at.check_files and not at.file(input_data).exists():
        m.fail("model.input_data", f"{at.file(input_data)} does not exist; give a perf_analyzer-format JSON "
               "file or a folder of .npy/.npz files (relative paths start at the profile's folder)")
    batch_size = int(m.number("batch_size", 1, minimum=1, integer=True))
    sequence_length = int(m.number("sequence_length", 0, minimum=0, integer=True))
    composing = m.get("composing_models", list, [])
    if not all(isinstance(x, str) and x.strip() for x in composing):
        m.fail("model.composing_models", f"must be a list of model names, got {composing!r}")
    if model in composing or len(set(composing)) != len(composing):
        m.fail("model.composing_models", "must name each model the BLS model calls once, not the BLS model itself")
    m.finish()
    return {"model": model, "version": str(version), "url": url,
            "config_path": at.file(config_path) if config_path else None,
            "first_dim_is_batch": first_dim_is_batch, "data": data, "shapes": shapes,
            "input_data": at.file(input_data) if input_data else None, "batch_size": batch_size,
            "sequence_length": sequence_length, "composing_models": tuple(composing)}


def _search_section(s: _Reader) -> SearchSpace:
    d = SearchSpace()
    seq_table = s.get("sequence", dict, None)
    sequence = None if seq_table is None else sequence_space(_Reader(s.path, seq_table, "search.sequence"), s.table)
    search = SearchSpace(
        max_batch_size=s.int_list("max_batch_size", d.max_batch_size, minimum=1),
        max_queue_delay_us=s.int_list("max_queue_delay_us", d.max_queue_delay_us, minimum=0),
        preferred_batch_size=_rules(s, s.get("preferred_batch_size", (str, list), d.preferred_batch_size)),
        instance_count=s.int_list("instance_count", d.instance_count, minimum=1),
        concurrency=s.int_list("concurrency", d.concurrency, minimum=1),
        plateau_pct=s.number("plateau_pct", d.plateau_pct, minimum=0),
        strategy=s.get("strategy", str, d.strategy if sequence is None else "grid"),
        confirm=s.get("confirm", bool, d.confirm),
        confirm_rounds=int(s.number("confirm_rounds", d.confirm_rounds, minimum=2, integer=True)),
        confirm_visits=int(s.number("confirm_visits", d.confirm_visits, minimum=2, integer=True)),
        sequence=sequence,
    )
    from tuner.search.strategy import STRATEGIES

    if search.strategy not in STRATEGIES:
        s.fail("search.strategy", f"must be one of {', '.join(STRATEGIES)}, got {search.strategy!r}")
    if max(search.concurrency) > 4096:
        s.fail("search.concurrency", "values above 4096 are not supported")
    s.finish()
    return search


def _constraints_section(c: _Reader) -> Constraints:
    dc = Constraints()
    constraints = Constraints(
        latency_percentile=c.get("latency_percentile", str, dc.latency_percentile),
        latency_budget_ms=float(c.number("latency_budget_ms", dc.latency_budget_ms, positive=True)),
        min_throughput_infer_per_s=float(c.number("min_throughput_infer_per_s", 0.0, minimum=0)),
        max_gpu_memory_mb=(float(c.number("max_gpu_memory_mb", 0, positive=True))
                           if "max_gpu_memory_mb" in c.table else None),
        max_error_rate=float(c.number("max_error_rate", 0.0, minimum=0)),
    )
    if constraints.latency_percentile not in LATENCY_KEYS:
        c.fail("constraints.latency_percentile", f"must be one of {', '.join(LATENCY_KEYS)}")
    if constraints.max_error_rate >= 1:
        c.fail("constraints.max_error_rate", "is a fraction: must be < 1 (e.g. 0.001)")
    c.finish()
    return constraints


def _server_section(sv: _Reader, at: _Where) -> tuple[TlsSettings, tuple[tuple[str, str], ...]]:
    def cert(key: str) -> Path | None:
        v = sv.get(key, str, "")
        if not v:
            return None
        f = at.file(v)
        if at.check_files and not f.exists():
            sv.fail(sv.key(key), f"file {f} does not exist; give the PEM file's path")
        return f

    tls = TlsSettings(ssl=sv.get("ssl", bool, False), root_certificates=cert("root_certificates"),
                      private_key=cert("private_key"), certificate_chain=cert("certificate_chain"))
    headers = []
    for hname, hvalue in sv.get("headers", dict, {}).items():
        if not isinstance(hvalue, str) or not hvalue.startswith("env:") or len(hvalue) < 5:
            sv.fail(f"server.headers.{hname}", 'must name an environment variable ("env:VAR"): a profile is '
                    "stored with the results, so it never holds a secret; or pass --header")
        headers.append((hname.lower(), hvalue))
    sv.finish()
    return tls, tuple(headers)


def _objective_section(o: _Reader, constraints: Constraints) -> str:
    goal = o.get("goal", str, "max_throughput")
    if goal not in GOALS:
        o.fail("objective.goal", f"must be one of {', '.join(GOALS)}")
    if goal == "min_latency" and not constraints.min_throughput_infer_per_s > 0:
        o.fail("objective.goal", "min_latency needs the required throughput: set "
                                 "[constraints] min_throughput_infer_per_s > 0")
    o.finish()
    return goal


def _measurement_section(r: _Reader) -> LoadSettings:
    dm = LoadSettings()
    settings = LoadSettings(
        warmup_s=float(r.number("warmup_s", dm.warmup_s, minimum=0)),
        window_s=float(r.number("window_s", dm.window_s, positive=True)),
        min_windows=int(r.number("min_windows", dm.min_windows, minimum=1, integer=True)),
        max_windows=int(r.number("max_windows", dm.max_windows, minimum=1, integer=True)),
        stability_pct=float(r.number("stability_pct", dm.stability_pct, positive=True)),
        request_timeout_s=float(r.number("request_timeout_s", dm.request_timeout_s, positive=True)),
    )
    workers = r.get("workers", (int, str), 0)  # a count, "ray" or "ray://HOST:PORT" (load/raypool.py)
    ray_actors = int(r.number("ray_actors", 0, minimum=0, integer=True))
    if isinstance(workers, str):
        if workers != "ray" and not workers.startswith("ray://"):
            r.fail("measurement.workers", f"must be a count, \"ray\" or \"ray://HOST:PORT\", got {workers!r}")
        settings.ray_address = "auto" if workers == "ray" else workers
        settings.workers = ray_actors
    elif workers < 0:
        r.fail("measurement.workers", f"must be >= 0, got {workers}")
    else:
        settings.workers = workers
    if settings.max_windows < settings.min_windows:
        r.fail("measurement.max_windows", f"must be >= min_windows ({settings.min_windows})")
    r.finish()
    return settings


RUN_PROFILE = "profile.toml"
RUN_OVERRIDES = "overrides.json"


def save_run_profile(run_dir: Path, profile: Profile) -> None:
    """A run folder keeps its profile text and the CLI overrides applied to it."""
    import json

    run_dir = Path(run_dir)
    (run_dir / RUN_PROFILE).write_text(profile.text, encoding="utf-8")
    # relative paths in the profile (config, certificates) were written against its own folder
    base_dir = str(Path(profile.base_dir).resolve()) if profile.base_dir is not None else None
    (run_dir / RUN_OVERRIDES).write_text(
        json.dumps({"name": profile.name, "overrides": profile.overrides, "base_dir": base_dir}, indent=2) + "\n",
        encoding="utf-8")


def load_run_profile(run_dir: Path, *, check_files: bool = False) -> Profile:
    """The profile a run folder was measured with, overrides included; relative paths in it
    resolve where the profile was written, not in the run folder. `check_files`: its
    certificate files must exist (to reach the server again; a re-render needs none)."""
    import json

    run_dir = Path(run_dir)
    path = run_dir / RUN_PROFILE
    if not path.exists():
        raise ProfileError(f"{run_dir} has no {RUN_PROFILE}: not a run folder written by `tuner sweep`")
    extra = {"overrides": {}}
    if (run_dir / RUN_OVERRIDES).exists():
        extra = json.loads((run_dir / RUN_OVERRIDES).read_text(encoding="utf-8"))
    base_dir = Path(extra["base_dir"]) if extra.get("base_dir") else None
    profile = parse_profile(path.read_text(encoding="utf-8"), path, base_dir=base_dir, check_files=check_files)
    profile = replace(profile, name=extra.get("name", profile.name))
    return profile.with_overrides(**extra.get("overrides", {}))
