"""Search strategies: which (candidate, load level) to measure next; the registry.

Strategies: "grid" (every candidate, climbed through the listed load levels) and
"smart" (bracketing of each candidate's load level at the budget, compute ceilings
from the server's statistics to skip candidates that cannot win, queue delay /
preferred sizes refined around the best).

Where each part lives:
    base.py      Step, Strategy (the observe / next_step protocol), BASELINE, climb_stop_reason
    grid.py      GridStrategy, the reference
    smart.py     SmartStrategy, the method
    bracket.py   one candidate's load level: bracketing, interpolation, elasticity
    ceiling.py   ComputeFit and Bound: the fitted compute model and throughput ceiling

This module only names the strategies (and re-exports what callers import from here);
the strategies never import it, so the package has no import cycle.
"""

from __future__ import annotations

from tuner.config import CandidateSpec
from tuner.search.base import BASELINE, Step, Strategy, climb_stop_reason
from tuner.search.ceiling import Bound, ComputeFit
from tuner.search.grid import GridStrategy
from tuner.search.smart import SmartStrategy

__all__ = [
    "BASELINE",
    "STRATEGIES",
    "Bound",
    "ComputeFit",
    "GridStrategy",
    "SmartStrategy",
    "Step",
    "Strategy",
    "climb_stop_reason",
    "make_strategy",
]

STRATEGIES = {"grid": GridStrategy, "smart": SmartStrategy}


def make_strategy(name: str, profile, candidates: list[tuple[str, CandidateSpec]]) -> Strategy:
    try:
        return STRATEGIES[name](profile, candidates)
    except KeyError:
        from tuner.errors import ProfileError

        raise ProfileError(f"unknown search strategy '{name}'; use one of {', '.join(STRATEGIES)}") from None
