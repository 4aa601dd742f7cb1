"""A stateful model's part of a profile: the `[search.sequence]` table.

    [model]
    sequence_length = 8            # requests per sequence (0 or left out: 8)

    [search]
    max_batch_size = [4, 8]        # slots per instance (direct) / largest batch (oldest)
    instance_count = [1, 2]
    concurrency = [1, 4, 16]       # concurrent sequences, each one request in flight
    strategy = "grid"              # the default here: smart search predicts the dynamic batcher

    [search.sequence]
    strategy = ["direct", "oldest"]
    max_candidate_sequences = [16] # oldest
    max_queue_delay_us = [0, 500]  # oldest
    preferred_batch_size = "none"  # oldest: rules, as [search] preferred_batch_size

The table makes the sweep tune the sequence batcher (`config/sequence.py`);
a model with sequence_batching needs it, any other model refuses it. Parsed
with `profile._Reader` (passed in, so this module does not import profile).
"""

from __future__ import annotations

from tuner.config.candidates import PREFERRED_RULES
from tuner.config.sequence import STRATEGIES, SequenceSpace

# [search] keys of the dynamic batcher, and where the oldest strategy's are instead
DYNAMIC_ONLY = ("max_queue_delay_us", "preferred_batch_size")
SMART_REFUSED = ("smart search predicts the dynamic batcher and cannot predict the sequence batcher; "
                 "a sequence model is searched with grid: set [search] strategy = \"grid\" (the default "
                 "with [search.sequence]) or pass --search grid")


def sequence_space(r, search_table: dict) -> SequenceSpace:
    """[search.sequence] read by `r` (a profile `_Reader` over it); `search_table` is [search] itself."""
    for key in DYNAMIC_ONLY:
        if key in search_table:
            r.fail(f"search.{key}", f"applies to the dynamic batcher, which a sequence model cannot use; the oldest "
                   f"strategy's is [search.sequence] {key}")
    if search_table.get("strategy") == "smart":
        r.fail("search.strategy", SMART_REFUSED)
    d = SequenceSpace()
    strategy = r.get("strategy", (str, list), list(d.strategy))
    strategies = (strategy,) if isinstance(strategy, str) else tuple(strategy)
    if not strategies or any(s not in STRATEGIES for s in strategies):
        r.fail(r.key("strategy"), f"must be {' and/or '.join(STRATEGIES)} (a string or a list), got {strategy!r}")
    rules = r.get("preferred_batch_size", (str, list), list(d.preferred_batch_size))
    rules = (rules,) if isinstance(rules, str) else tuple(rules)
    if not rules or any(x not in PREFERRED_RULES for x in rules):
        r.fail(r.key("preferred_batch_size"), f"rules must be among {', '.join(PREFERRED_RULES)}, got {rules!r}")
    space = SequenceSpace(
        strategy=tuple(dict.fromkeys(strategies)),
        max_candidate_sequences=r.int_list("max_candidate_sequences", d.max_candidate_sequences, minimum=1),
        max_queue_delay_us=r.int_list("max_queue_delay_us", d.max_queue_delay_us, minimum=0),
        preferred_batch_size=rules,
    )
    r.finish()
    return space
