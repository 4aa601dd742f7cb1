"""Latency percentiles read off stored samples, and the sample reduction that preserves them.

Percentiles are the inverted-CDF definition (the smallest latency with at
least q% of requests at or below it). A stored sample may stand for several
real requests, so every percentile here is read off a weighted distribution.
"""

from __future__ import annotations

import numpy as np

PERCENTILE_KEYS = ("p50", "p90", "p95", "p99")


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs) -> np.ndarray:
    """Inverted-CDF percentiles of sorted `values` under each row of `weights` (rows x len(values)).

    Returns rows x len(qs); a row with no weight gives NaN.
    """
    if values.size == 0:
        return np.full((weights.shape[0], len(qs)), np.nan)
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1]
    out = np.empty((weights.shape[0], len(qs)))
    for j, q in enumerate(qs):
        target = total * (q / 100.0)
        # first index whose cumulative weight reaches the target (tolerant of float sums)
        idx = np.argmax(cum >= target[:, None] - 1e-9 * np.maximum(total[:, None], 1.0), axis=1)
        out[:, j] = values[idx]
    out[total <= 0] = np.nan
    return out


def order_statistics(values, k: int) -> np.ndarray:
    """`k` evenly spaced order statistics of `values` (min and max kept), sorted."""
    v = np.sort(np.asarray(values, dtype=np.int64))
    if k >= len(v):
        return v
    if k <= 1:
        return v[len(v) // 2:len(v) // 2 + 1]
    return v[np.round(np.linspace(0, len(v) - 1, k)).astype(int)]
