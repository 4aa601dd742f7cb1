"""Traffic shapes for the open loop: a replayed intervals file, step and ramp schedules.

Formats:

- request-intervals file (`--request-intervals FILE`, perf_analyzer's
  format): one interval in microseconds per line, the time from one send to
  the next (the first send comes one interval after the start); blank lines
  and `#` comments are skipped. The intervals are replayed in a loop for as
  long as the point runs.
- rate range (`--request-rate FROM:TO:STEP`, e.g. `100:1000:100`): the
  rates FROM, FROM+STEP, ..., TO. A step schedule holds each rate for one
  measurement window (after a warm-up at FROM), with no pause between
  steps, so a backlog carries over as it would in production; a ramp
  (`--ramp`) raises the rate linearly from FROM at the first window's start
  to TO at the last one's end. Each window is one load point.

Within a step or ramp, sends are evenly spaced (constant) or Poisson. Every
schedule here is one global sequence of send times; with several load
processes, process i of n sends the global sends i, i + n, i + 2n, ..., so
the processes together keep exactly the global schedule. Latency is measured
from each request's scheduled send time (coordinated-omission safe).
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import LoadError
from tuner.load.schedule import Schedule

KINDS = ("intervals", "step", "ramp")
MAX_STEPS = 200


@dataclass(frozen=True)
class Traffic:
    """An open loop's shape over time, beyond one steady rate."""

    kind: str  # "intervals" | "step" | "ramp"
    intervals_us: tuple[int, ...] = ()  # intervals: gaps between successive sends, replayed in a loop
    rates: tuple[float, ...] = ()  # step / ramp: requests/s, one per measurement window
    source: str = ""  # intervals: the file's name

    @property
    def mean_rate(self) -> float:
        """Requests/s over a whole replay (intervals) or over the steps."""
        if self.kind == "intervals":
            return 1e6 * len(self.intervals_us) / sum(self.intervals_us)
        return float(np.mean(self.rates))

    @property
    def windows(self) -> int | None:
        """Measurement windows a step or ramp takes (one per rate); None: as many as the point needs."""
        return len(self.rates) if self.kind in ("step", "ramp") else None


def read_intervals(path: Path | str) -> Traffic:
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise LoadError(f"request intervals {p}: cannot read it ({err}); give a text file with one "
                        "interval in microseconds per line") from None
    values = []
    for no, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            v = int(float(text)) if float(text).is_integer() else None
        except ValueError:
            v = None
        if v is None or v < 0:
            raise LoadError(f"request intervals {p}:{no}: {text!r} is not a whole number of microseconds "
                            ">= 0; one interval per line, e.g. 1500")
        values.append(v)
    if not values or sum(values) <= 0:
        raise LoadError(f"request intervals {p}: no intervals, or all zero; one interval in microseconds per line")
    return Traffic("intervals", intervals_us=tuple(values), source=p.name)


def parse_rate_range(text: str) -> tuple[float, ...] | None:
    """`FROM:TO:STEP` -> the rates; None when `text` is not a range (a plain list of rates)."""
    if ":" not in text:
        return None
    parts = text.split(":")
    try:
        start, end, step = (float(x) for x in parts) if len(parts) == 3 else (None, None, None)
    except ValueError:
        start = None
    if start is None or not (start > 0 and end >= start and step > 0):
        raise ValueError(f"--request-rate takes FROM:TO:STEP with 0 < FROM <= TO and STEP > 0, "
                         f"e.g. 100:1000:100; got {text!r}")
    count = int(math.floor((end - start) / step + 1e-9)) + 1
    if count > MAX_STEPS:
        raise ValueError(f"--request-rate {text} makes {count} steps (at most {MAX_STEPS}); use a larger STEP")
    return tuple(round(start + k * step, 6) for k in range(count))


# --------------------------------------------------------------- schedules ---

class _Strided:
    """Own send times of process `phase` of `stride`, generated in chunks: at(i), count_before(t)."""

    CHUNK = 4096

    def __init__(self, phase: int, stride: int):
        self.phase, self.stride = phase, max(1, stride)
        self.times = array("q")
        self.k = 0  # own sends generated so far

    def _global(self, j: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _extend(self) -> None:
        own = np.arange(self.k, self.k + self.CHUNK, dtype=np.int64)
        self.times.extend(self._global(own * self.stride + self.phase).astype(np.int64).tolist())
        self.k += self.CHUNK

    def at(self, i: int) -> int:
        while i >= len(self.times):
            self._extend()
        return self.times[i]

    def count_before(self, t_ns: int) -> int:
        while not self.times or self.times[-1] < t_ns:
            self._extend()
        return bisect_left(self.times, t_ns)


class IntervalSchedule(_Strided):
    """A request-intervals file replayed in a loop from `start_ns`."""

    def __init__(self, start_ns: int, intervals_us: tuple[int, ...], phase: int = 0, stride: int = 1):
        super().__init__(phase, stride)
        self.start = start_ns
        self.cum = np.cumsum(np.asarray(intervals_us, dtype=np.int64) * 1000)
        self.period = int(self.cum[-1])

    def _global(self, j: np.ndarray) -> np.ndarray:
        n = len(self.cum)
        return self.start + self.cum[j % n] + (j // n) * self.period


class RateSchedule(_Strided):
    """Sends at a rate that is piecewise linear in time (step and ramp), constant or Poisson.

    Segments (start offset ns, rate at its start, rate at its end, length ns);
    the last rate holds after the last segment. Send j is where the expected
    number of sends since the start, the integral of the rate, reaches j
    (constant) or the j-th sum of unit exponential gaps (Poisson).
    """

    def __init__(self, start_ns: int, segments: list[tuple[float, float, float]], poisson: bool, seed: int,
                 phase: int = 0, stride: int = 1):
        super().__init__(phase, stride)
        self.start = start_ns
        self.poisson = poisson
        self.rng = np.random.default_rng(seed)
        self.sums = np.zeros(0)  # Poisson: cumulative unit exponential gaps of the global sequence
        t0, lam0 = [0.0], [0.0]
        self.r0, self.slope = [], []
        for r_a, r_b, length_ns in segments:
            length_s = length_ns / 1e9
            self.r0.append(r_a)
            self.slope.append((r_b - r_a) / length_s if length_s > 0 else 0.0)
            lam0.append(lam0[-1] + (r_a + r_b) / 2 * length_s)
            t0.append(t0[-1] + length_s)
        self.r0.append(segments[-1][1])
        self.slope.append(0.0)
        self.t0, self.lam0 = np.asarray(t0), np.asarray(lam0)
        self.r0, self.slope = np.asarray(self.r0), np.asarray(self.slope)

    def _expected_count(self, j: np.ndarray) -> np.ndarray:
        if not self.poisson:
            return j.astype(np.float64)
        need = int(j.max()) + 1
        if need > len(self.sums):
            # the global Poisson sequence, the same in every process (same seed, drawn in order)
            extra = self.rng.exponential(1.0, need - len(self.sums) + self.CHUNK)
            last = self.sums[-1] if len(self.sums) else 0.0
            self.sums = np.concatenate([self.sums, last + np.cumsum(extra)])
        return self.sums[j]

    def _global(self, j: np.ndarray) -> np.ndarray:
        y = self._expected_count(j)
        seg = np.clip(np.searchsorted(self.lam0, y, side="right") - 1, 0, len(self.r0) - 1)
        left = y - self.lam0[seg]
        r, s = self.r0[seg], self.slope[seg]
        # time u into the segment where r*u + s*u^2/2 = left, in the form that is stable as s -> 0
        u = 2 * left / (r + np.sqrt(np.maximum(r * r + 2 * s * left, 0.0)))
        return self.start + np.round((self.t0[seg] + u) * 1e9)


def rate_segments(traffic: Traffic, warmup_ns: int, window_ns: int) -> list[tuple[float, float, float]]:
    """(rate at start, rate at end, length ns): the warm-up at the first rate, then one per window."""
    rates = traffic.rates
    segs = [(rates[0], rates[0], float(warmup_ns))]
    if traffic.kind == "step":
        segs += [(r, r, float(window_ns)) for r in rates]
    else:
        m = len(rates)
        for k in range(m):
            a = rates[0] + (rates[-1] - rates[0]) * k / m
            b = rates[0] + (rates[-1] - rates[0]) * (k + 1) / m
            segs.append((a, b, float(window_ns)))
    return segs


def make_schedule(t_start_ns: int, share, warmup_ns: int, window_ns: int):
    """The send times of one process's share (`spec.LoadShare`) of an open-loop point."""
    spec = share.spec
    traffic = spec.traffic
    if traffic is None:
        return Schedule(t_start_ns, share.rate, spec.arrivals, share.offset_ns, share.seed)
    if traffic.kind == "intervals":
        return IntervalSchedule(t_start_ns, traffic.intervals_us, share.index, share.of)
    if traffic.kind not in KINDS:
        raise LoadError(f"traffic '{traffic.kind}' is not supported; use {', '.join(KINDS)}")
    return RateSchedule(t_start_ns, rate_segments(traffic, warmup_ns, window_ns), spec.arrivals == "poisson",
                        share.seed - share.index, share.index, share.of)
