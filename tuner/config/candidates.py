"""Candidate configs: the tuned fields of a config, and the config made from them.

A candidate is the original config with only `max_batch_size`,
`dynamic_batching` (max_queue_delay_microseconds, preferred_batch_size), or for a
stateful model `sequence_batching`'s strategy and its settings (`sequence.py`), and
the instance count changed, so every other field (platform, backend,
version_policy, model_transaction_policy, inputs/outputs, optimization,
parameters, model_warmup, ...) survives a rewrite untouched. The original and
every candidate are checked with Triton's own rules (`validate.py`) first, so
tuner never writes or sends a config Triton would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuner.config.locate import Where
from tuner.config.pbtxt import ModelConfig, copy_config, format_config
from tuner.config.sequence import (SequenceSpace, SequenceSpec, apply_sequence, check_kind, check_sequence,
                                   read_sequence)
from tuner.config.validate import check_config
from tuner.errors import ConfigError


@dataclass(frozen=True)
class CandidateSpec:
    """The tuned fields of one candidate configuration.

    With `sequence` (a stateful model), max_batch_size, the queue delay and the preferred
    sizes are the sequence batcher's (`sequence.py`), and dynamic_batching is False.
    """

    max_batch_size: int
    max_queue_delay_us: int = 0
    preferred_batch_size: tuple[int, ...] = ()
    instance_count: int = 1
    dynamic_batching: bool = True
    sequence: SequenceSpec | None = None

    @property
    def candidate_id(self) -> str:
        if self.sequence is not None:  # e.g. seq-direct-mbs4-i1, seq-oldest-mbs8-mcs16-qd500-pbsauto-i2
            seq = self.sequence
            oldest = "" if seq.strategy == "direct" else (
                f"-mcs{seq.max_candidate_sequences}-qd{self.max_queue_delay_us}"
                f"-pbs{'_'.join(map(str, self.preferred_batch_size)) or 'auto'}")
            return f"seq-{seq.strategy}-mbs{self.max_batch_size}{oldest}-i{self.instance_count}"
        if not self.dynamic_batching:
            return f"mbs{self.max_batch_size}-nodb-i{self.instance_count}"
        pbs = "_".join(str(p) for p in self.preferred_batch_size) or "auto"
        return (
            f"mbs{self.max_batch_size}-qd{self.max_queue_delay_us}"
            f"-pbs{pbs}-i{self.instance_count}"
        )

    def to_dict(self) -> dict:
        return {
            "candidate_id": self.candidate_id,
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_us": self.max_queue_delay_us,
            "preferred_batch_size": list(self.preferred_batch_size),
            "instance_count": self.instance_count,
            "dynamic_batching": self.dynamic_batching,
            # only for a stateful model's candidates: older results never carry it
            **({"sequence": self.sequence.to_dict()} if self.sequence is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CandidateSpec":
        return cls(
            max_batch_size=int(d["max_batch_size"]),
            max_queue_delay_us=int(d.get("max_queue_delay_us", 0)),
            preferred_batch_size=tuple(int(x) for x in d.get("preferred_batch_size", ())),
            instance_count=int(d.get("instance_count", 1)),
            dynamic_batching=bool(d.get("dynamic_batching", True)),
            sequence=SequenceSpec.from_dict(d["sequence"]) if d.get("sequence") else None,
        )


def current_spec(cfg: ModelConfig) -> CandidateSpec:
    """The tuned fields as they are in `cfg` (the baseline's spec)."""
    db = cfg.HasField("dynamic_batching")
    # Candidates set the same count on every group, so the first one speaks for all.
    count = (cfg.instance_group[0].count or 1) if cfg.instance_group else 1
    if cfg.HasField("sequence_batching"):
        seq, delay_us, preferred = read_sequence(cfg)
        return CandidateSpec(max_batch_size=cfg.max_batch_size, max_queue_delay_us=delay_us,
                             preferred_batch_size=preferred, instance_count=count, dynamic_batching=False,
                             sequence=seq)
    return CandidateSpec(
        max_batch_size=cfg.max_batch_size,
        max_queue_delay_us=cfg.dynamic_batching.max_queue_delay_microseconds if db else 0,
        preferred_batch_size=tuple(cfg.dynamic_batching.preferred_batch_size) if db else (),
        instance_count=count,
        dynamic_batching=db,
    )


# How each command spells the switch for a max_batch_size 0 model whose first dim is the batch dim.
PROFILE_SWITCH = "set first_dim_is_batch = true in the profile"
CLI_SWITCH = "pass --first-dim-is-batch"


def check_tunable(cfg: ModelConfig, *, first_dim_is_batch: bool = False, where: str = "",
                  text: str | None = None, batch_switch: str = PROFILE_SWITCH) -> None:
    """Refuse configs Triton would refuse, or that dynamic batching cannot be tuned on, saying why.

    text: the file `cfg` was read from, so that messages give the field's line and column
    and a field left out for Triton's auto-complete can be told from one set to 0.
    batch_switch: how the calling command turns on first_dim_is_batch.
    """
    loc = Where(where or (cfg.name or "model"), text)
    check_config(cfg, loc)  # Triton's own rules first: their reason is the real one
    if cfg.platform == "ensemble":
        raise ConfigError(
            f"{loc.at(('platform',))}: is an ensemble; ensembles are scheduled by their steps, "
            "tune each composing model instead"
        )
    _check_complete(cfg, loc)
    if cfg.max_batch_size == 0 and not first_dim_is_batch:
        unsure = "" if loc.text is not None else (
            " (a config that leaves max_batch_size out for Triton to auto-complete reads as 0 too: set it there)")
        raise ConfigError(
            f"{loc.at(('max_batch_size',))}: has max_batch_size 0 (no batch dimension); {batch_switch} if every "
            f"input's and output's first dim is a batch dim, else it cannot be batched{unsure}"
        )
    if cfg.max_batch_size == 0:
        _check_first_dims(cfg, loc)


def _check_complete(cfg: ModelConfig, loc: Where) -> None:
    """Refuse a config that leaves to Triton's auto-complete what candidates are made from."""
    missing = [name for name, absent in (("max_batch_size", loc.states("max_batch_size") is False),
                                         ("inputs", not cfg.input), ("outputs", not cfg.output)) if absent]
    if missing:
        raise ConfigError(
            f"{loc.at()}: leaves {', '.join(missing)} out, relying on Triton's auto-complete to fill them from "
            "the model when the server loads it; tuner needs them to make candidates: run tuner against a "
            "server that has loaded the model (tuner reads the completed config back; in a profile, leave "
            f"[model] config out), or set {', '.join(missing)} in the file"
        )


def _check_first_dims(cfg: ModelConfig, loc: Where) -> None:
    for kind, tensors in (("input", cfg.input), ("output", cfg.output)):
        for i, t in enumerate(tensors):
            if not t.dims or t.dims[0] != -1:
                raise ConfigError(
                    f"{loc.at((kind, i, 'dims', 0))}: first_dim_is_batch needs every input/output's first dim "
                    f"to be -1, but '{t.name}' has dims {list(t.dims)}"
                )
            if t.HasField("reshape") and (not t.reshape.shape or t.reshape.shape[0] != -1):
                raise ConfigError(
                    f"{loc.at((kind, i, 'reshape'))}: first_dim_is_batch needs '{t.name}' reshape to start "
                    f"with the batch dim -1, but it is {list(t.reshape.shape)}"
                )


def validate_spec(spec: CandidateSpec, where: str = "candidate") -> None:
    if spec.max_batch_size < 1:
        raise ConfigError(f"{where}: max_batch_size must be >= 1, got {spec.max_batch_size}")
    if spec.max_queue_delay_us < 0:
        raise ConfigError(f"{where}: max_queue_delay_us must be >= 0, got {spec.max_queue_delay_us}")
    if spec.instance_count < 1:
        raise ConfigError(f"{where}: instance count must be >= 1, got {spec.instance_count}")
    if spec.sequence is not None:
        check_sequence(spec.sequence, spec.max_batch_size, spec.max_queue_delay_us, spec.preferred_batch_size,
                       where)
    for p in spec.preferred_batch_size:
        if p < 1 or p > spec.max_batch_size:
            raise ConfigError(
                f"{where}: preferred batch size {p} must be between 1 and max_batch_size "
                f"{spec.max_batch_size}"
            )


def make_candidate(
    original: ModelConfig, spec: CandidateSpec, *, first_dim_is_batch: bool = False
) -> ModelConfig:
    """The original config with only the tuned fields changed."""
    check_tunable(original, first_dim_is_batch=first_dim_is_batch)
    validate_spec(spec, spec.candidate_id)
    check_kind(original, spec.sequence is not None, spec.candidate_id)
    cfg = copy_config(original)
    if original.max_batch_size == 0:
        # The first dim was the batch dim; with batching on, dims are per item.
        for t in list(cfg.input) + list(cfg.output):
            del t.dims[0]
            if t.HasField("reshape"):
                del t.reshape.shape[0]
            if not t.dims:  # a per-item scalar: Triton needs dims [1] reshaped to []
                t.dims.append(1)
                t.reshape.SetInParent()
    cfg.max_batch_size = spec.max_batch_size
    if spec.sequence is not None:
        apply_sequence(cfg, spec.sequence, spec.max_queue_delay_us, spec.preferred_batch_size)
    elif spec.dynamic_batching:
        db = cfg.dynamic_batching  # keeps priority levels, queue policies, ...
        db.max_queue_delay_microseconds = spec.max_queue_delay_us
        del db.preferred_batch_size[:]
        db.preferred_batch_size.extend(spec.preferred_batch_size)
    else:
        cfg.ClearField("dynamic_batching")
    if cfg.instance_group:
        for g in cfg.instance_group:
            g.count = spec.instance_count
    else:
        g = cfg.instance_group.add()
        g.count = spec.instance_count
    check_config(cfg, spec.candidate_id)  # what a tuned field can break (e.g. a warmup batch above it)
    return cfg


def expand_specs(
    max_batch_sizes: list[int],
    queue_delays_us: list[int],
    instance_counts: list[int],
    preferred_rule: str | list[str] = "none",
) -> list[CandidateSpec]:
    """Every combination of the given values; preferred sizes by rule(s).

    Rules: "none" (Triton's default, which prefers max_batch_size), "max"
    (explicitly [max_batch_size]), "halves" ([mbs/2, mbs]). Rules that give
    the same effective preferred sizes for a max_batch_size yield one candidate.
    """
    rules = [preferred_rule] if isinstance(preferred_rule, str) else list(preferred_rule)
    specs: list[CandidateSpec] = []
    for mbs in max_batch_sizes:
        seen: set[tuple[int, ...]] = set()
        sizes = []
        for rule in rules:
            pbs = preferred_sizes(mbs, rule)
            effective = pbs or (mbs,)
            if effective not in seen:
                seen.add(effective)
                sizes.append(pbs)
        for pbs in sizes:
            for qd in queue_delays_us:
                for n in instance_counts:
                    specs.append(CandidateSpec(mbs, qd, pbs, n))
    return specs


def expand_sequence_specs(max_batch_sizes: list[int], instance_counts: list[int],
                          space: SequenceSpace) -> list[CandidateSpec]:
    """A stateful model's candidates: each strategy at every max_batch_size and instance count;
    oldest also at every max_candidate_sequences, queue delay and preferred-size rule. An oldest
    candidate with fewer candidate sequences than max_batch_size is left out: its batches can
    never fill, so it only repeats a smaller max_batch_size."""
    specs: list[CandidateSpec] = []
    for strategy in space.strategy:
        for mbs in max_batch_sizes:
            if strategy == "direct":
                specs += [CandidateSpec(mbs, 0, (), n, False, SequenceSpec("direct")) for n in instance_counts]
                continue
            sizes = list(dict.fromkeys(preferred_sizes(mbs, rule) for rule in space.preferred_batch_size))
            for mcs in space.max_candidate_sequences:
                if mcs < mbs:
                    continue
                specs += [CandidateSpec(mbs, qd, pbs, n, False, SequenceSpec("oldest", mcs))
                          for pbs in sizes for qd in space.max_queue_delay_us for n in instance_counts]
    return specs


PREFERRED_RULES = ("none", "max", "halves")


def preferred_sizes(max_batch_size: int, rule: str) -> tuple[int, ...]:
    if rule == "none":
        return ()
    if rule == "max":
        return (max_batch_size,)
    if rule == "halves":
        half = max_batch_size // 2
        return (half, max_batch_size) if half >= 1 and half != max_batch_size else (max_batch_size,)
    raise ConfigError(f"unknown preferred_batch_size rule '{rule}'; use one of {', '.join(PREFERRED_RULES)}")


def write_candidates(
    original: ModelConfig, specs: list[CandidateSpec], out_dir: Path, *, first_dim_is_batch: bool = False
) -> list[tuple[CandidateSpec, Path]]:
    out_dir = Path(out_dir)
    written = []
    for spec in specs:
        cfg = make_candidate(original, spec, first_dim_is_batch=first_dim_is_batch)
        d = out_dir / spec.candidate_id
        d.mkdir(parents=True, exist_ok=True)
        p = d / "config.pbtxt"
        p.write_text(format_config(cfg), encoding="utf-8")
        written.append((spec, p))
    return written
