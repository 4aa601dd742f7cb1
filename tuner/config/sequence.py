"""The sequence batcher's tuned fields: strategy and candidate sequences, read and written.

A stateful model (`sequence_batching`) is tuned through the sequence batcher,
never the dynamic one (they are one `scheduling_choice` in the schema: setting
one clears the other). A candidate of such a model is a `CandidateSpec` with a
`SequenceSpec`: its `max_batch_size` is the slots per instance (direct) or the
largest batch (oldest), its `max_queue_delay_us` / `preferred_batch_size` are
the oldest strategy's (they stay 0 / () with direct, whose own settings tuner
does not tune), its `instance_count` the instances. Everything else in
`sequence_batching` (control inputs, implicit state, the idle timeout, the
direct strategy's settings when the strategy stays direct, oldest's
preserve_ordering when it stays oldest) survives a rewrite untouched.

    direct  each instance has max_batch_size slots, each holding one live
            sequence from its start to its end; a batch is the slots' ready
            requests (empty slots are filled with not-ready requests)
    oldest  up to max_candidate_sequences sequences are candidates; each batch
            takes the oldest request of as many of them as fit, dynamic-batcher
            style (max_queue_delay_us, preferred_batch_size)
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from tuner.errors import ConfigError

STRATEGIES = ("direct", "oldest")


@dataclass(frozen=True)
class SequenceSpec:
    """The sequence batcher's tuned fields beyond the ones every candidate has (see the module docstring)."""

    strategy: str = "direct"  # "direct" | "oldest"
    max_candidate_sequences: int = 0  # oldest: sequences batched from (0 with direct, or oldest left at Triton's)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "max_candidate_sequences": self.max_candidate_sequences}

    @classmethod
    def from_dict(cls, d: dict) -> "SequenceSpec":
        return cls(strategy=str(d.get("strategy", "direct")),
                   max_candidate_sequences=int(d.get("max_candidate_sequences", 0)))


@dataclass(frozen=True)
class SequenceSpace:
    """A profile's search over the sequence batcher ([search.sequence]); max_batch_size and
    instance_count come from [search] as for any model."""

    strategy: tuple[str, ...] = STRATEGIES
    max_candidate_sequences: tuple[int, ...] = (16,)  # oldest
    max_queue_delay_us: tuple[int, ...] = (0,)  # oldest
    preferred_batch_size: tuple[str, ...] = ("none",)  # oldest: rules, as for the dynamic batcher


def read_sequence(cfg: mc.ModelConfig) -> tuple[SequenceSpec, int, tuple[int, ...]]:
    """(the spec, oldest's queue delay in us, oldest's preferred sizes) as `cfg` has them."""
    sb = cfg.sequence_batching
    if sb.HasField("oldest"):
        o = sb.oldest
        return (SequenceSpec("oldest", o.max_candidate_sequences), o.max_queue_delay_microseconds,
                tuple(o.preferred_batch_size))
    return SequenceSpec("direct"), 0, ()  # Triton's default strategy is direct


def check_sequence(seq: SequenceSpec, max_batch_size: int, max_queue_delay_us: int,
                   preferred_batch_size: tuple[int, ...], where: str) -> None:
    if seq.strategy not in STRATEGIES:
        raise ConfigError(f"{where}: sequence strategy must be one of {', '.join(STRATEGIES)}, got {seq.strategy!r}")
    if seq.strategy == "direct":
        if max_queue_delay_us or preferred_batch_size or seq.max_candidate_sequences:
            raise ConfigError(f"{where}: the direct strategy takes no queue delay, preferred sizes or candidate "
                              "sequences (those are the oldest strategy's); drop them or use oldest")
        return
    if seq.max_candidate_sequences < 1:
        raise ConfigError(f"{where}: max_candidate_sequences must be >= 1, got {seq.max_candidate_sequences}")


def apply_sequence(cfg: mc.ModelConfig, seq: SequenceSpec, max_queue_delay_us: int,
                   preferred_batch_size: tuple[int, ...]) -> None:
    """Set the sequence batcher's tuned fields on `cfg` (a copy), leaving the rest as it is."""
    sb = cfg.sequence_batching
    if seq.strategy == "direct":
        if sb.HasField("oldest"):
            sb.direct.SetInParent()  # switches the strategy oneof; a config with neither is direct already
        return
    o = sb.oldest  # writing a field selects oldest, clearing direct
    o.max_candidate_sequences = seq.max_candidate_sequences
    o.max_queue_delay_microseconds = max_queue_delay_us
    del o.preferred_batch_size[:]
    o.preferred_batch_size.extend(preferred_batch_size)


def check_kind(cfg: mc.ModelConfig, sequence_candidates: bool, where: str) -> None:
    """A stateful model is tuned with sequence candidates only, and any other model without them."""
    stateful = cfg.HasField("sequence_batching")
    if stateful and not sequence_candidates:
        raise ConfigError(
            f"{where}: uses sequence_batching (a stateful model), which cannot use dynamic batching; tune the "
            "sequence batcher instead: add a [search.sequence] table to the profile (strategy = [\"direct\", "
            "\"oldest\"], max_candidate_sequences = [...])")
    if sequence_candidates and not stateful:
        raise ConfigError(
            f"{where}: has no sequence_batching, so [search.sequence] does not apply (the sequence batcher needs "
            "the model's control inputs and per-sequence state); remove that table to tune dynamic batching")
