"""The regression gate's data errors: every one ends `tuner compare` / `tuner check` with exit 2."""

from __future__ import annotations

from tuner.errors import StoreError


class CompareError(StoreError):
    """Results that cannot be compared (nothing in common, unreadable, ...): exit 2."""


class EnvironmentMismatch(CompareError):
    """BASELINE and CURRENT were measured in different environments."""
