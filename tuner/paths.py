"""File names made from user-given names (models, profiles, candidates)."""

from __future__ import annotations

import re


def safe_name(name: str) -> str:
    """A single path component: no separators, no `..`, nothing hidden."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "unnamed"
    return cleaned[:100]
