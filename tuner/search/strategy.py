"""Search strategies: which (candidate, load level) to measure next; the registry.

Strategies: "grid" (every candidate, climbed through the listed load levels) and "smart" (every candidate predicted from the server's statistics by a
simulation of the batcher, the most promising measured first, each one's load level at
the budget bracketed, what cannot win skipped with the reason, max_batch_size refined
between and beyond the listed values).

Where each part lives:
    base.py      Step, Strategy (the observe / next_step protocol), BASELINE, climb_stop_reason
    grid.py      GridStrategy, the reference
    joint.py     JointStrategy: several models tuned together (ensemble steps, BLS callees), the
                 limiting one first (chosen by the sweep for such models, not by name)
    smart.py     SmartStrategy, the method
    bracket.py   one candidate's load level: bracketing, interpolation, elasticity
    ceiling.py   Bound: the throughput ceiling from the server's costs
    costs.py     CostTable: compute per batch size from the server's statistics, time outside it
    batcher.py   a deterministic simulation of the dynamic batcher under closed-loop load
    model.py     BatchModel: predictions for unmeasured candidates, calibrated on measured points
    judge.py     when smart search skips a candidate, or stops measuring one
    refine.py    new max_batch_size values between and beyond the listed ones
    confirm.py   the confirmation phase's statistics: plan, intervals, ties, the final recommendation
    surfaces.py  a family of simulated response surfaces (the synthetic model's parameters)

This module only names the strategies (and re-exports what callers import from here);
the strategies never import it, so the package has no import cycle.
"""

from __future__ import annotations

from tuner.config import CandidateSpec
from tuner.search.base import BASELINE, Step, Strategy, climb_stop_reason
from tuner.search.ceiling import Bound
from tuner.search.grid import GridStrategy
from tuner.search.smart import SmartStrategy

__all__ = [
    "BASELINE",
    "STRATEGIES",
    "Bound",
    "GridStrategy",
    "SmartStrategy",
    "Step",
    "Strategy",
    "climb_stop_reason",
    "make_strategy",
]

STRATEGIES = {"grid": GridStrategy, "smart": SmartStrategy}


def make_strategy(name: str, profile, candidates: list[tuple[str, CandidateSpec]]) -> Strategy:
    if name == "smart" and any(spec.sequence is not None for _, spec in candidates):
        from tuner.errors import ProfileError
        from tuner.profile_sequence import SMART_REFUSED

        raise ProfileError(SMART_REFUSED)
    try:
        return STRATEGIES[name](profile, candidates)
    except KeyError:
        from tuner.errors import ProfileError

        raise ProfileError(f"unknown search strategy '{name}'; use one of {', '.join(STRATEGIES)}") from None
