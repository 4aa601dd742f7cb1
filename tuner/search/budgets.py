"""Each model's own latency budget when several models share one server (pure).

A profile with `[[model]]` entries (`profile_multi.py`) sends every model its share of
the load at once; each request's latency keeps its model's index (the index of its
"shape": `load/multi.py` makes the models the shapes of one request plan, so
`WindowSample.shape_index` says whose request it was). A point meets the models'
budgets when every model's latency at its own percentile, over its own requests in the
point's summary windows, is within its own budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuner.results.records import Measurement

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}


@dataclass(frozen=True)
class SharedModel:
    """One of several models under load on one server: its share of the requests and its budget."""

    name: str
    share: float  # fraction of the requests sent to it (the shares add up to 1)
    latency_percentile: str = "p99"
    latency_budget_ms: float = 50.0


def model_latencies_ms(m: Measurement, models: tuple[SharedModel, ...]) -> dict[str, float | None]:
    """Each model's latency at its own percentile over its requests in the summary windows (ms);
    None where it completed no request (or the windows do not say whose each request was)."""
    used = [w for w in m.windows if not w.failed][-m.summary_windows:]
    if not used or any(w.shape_index is None for w in used):
        return {sm.name: None for sm in models}
    lat = np.fromiter((x for w in used for x in w.latencies_us), dtype=np.int64)
    idx = np.fromiter((x for w in used for x in w.shape_index), dtype=np.int64)
    out: dict[str, float | None] = {}
    for i, sm in enumerate(models):
        mine = lat[idx == i]
        out[sm.name] = float(np.percentile(mine, PERCENTILES[sm.latency_percentile])) / 1000.0 if mine.size else None
    return out


def budget_ratios(m: Measurement, models: tuple[SharedModel, ...]) -> dict[str, float]:
    """Each model's latency over its budget (1.0: on the edge; inf: no request of it completed)."""
    lat = model_latencies_ms(m, models)
    return {sm.name: (lat[sm.name] / sm.latency_budget_ms if lat[sm.name] is not None else float("inf"))
            for sm in models}


def budgets_met(m: Measurement, models: tuple[SharedModel, ...]) -> bool:
    """Every model within its own budget (True when there are no such models: one model's run)."""
    return not models or all(r <= 1.0 for r in budget_ratios(m, models).values())
