"""When to send: a microsecond timer for the event loop, and open-loop arrival times."""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import time
from array import array
from bisect import bisect_left

import numpy as np

from tuner.errors import LoadError

ARRIVALS = ("constant", "poisson")  # how sends are spaced at a given rate

class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval_s", ctypes.c_long), ("interval_ns", ctypes.c_long),
                ("value_s", ctypes.c_long), ("value_ns", ctypes.c_long)]


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
    _LIBC.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
except (OSError, AttributeError):  # not Linux: asyncio's own timers
    _LIBC = None

_CLOCK_MONOTONIC, _TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1


class Timer:
    """Sleep until an absolute perf_counter_ns time, to the microsecond.

    asyncio's timers wake through epoll's millisecond timeout, rounded up: an
    idle loop wakes up to 1 ms late, which would count as latency in open-loop
    mode. A Linux timerfd (CLOCK_MONOTONIC, the clock of perf_counter) wakes
    the loop through a readable fd instead. Falls back to asyncio.sleep.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.fd = -1
        self.fut: asyncio.Future | None = None
        self.spec = _ITimerSpec()
        if _LIBC is not None and time.get_clock_info("perf_counter").implementation.endswith("(CLOCK_MONOTONIC)"):
            try:
                fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            except AttributeError:
                fd = -1
            if fd >= 0:
                self.fd = fd
                self.loop.add_reader(fd, self._ready)

    def sleep_until(self, t_ns: int):
        if self.fd < 0:
            return asyncio.sleep(max(0.0, (t_ns - time.perf_counter_ns()) / 1e9))
        spec = self.spec
        spec.value_s, spec.value_ns = divmod(max(1, t_ns), 1_000_000_000)
        _LIBC.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None)
        self.fut = fut = self.loop.create_future()
        return fut

    def _ready(self) -> None:
        try:
            os.read(self.fd, 8)
        except (BlockingIOError, InterruptedError):
            return
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class Schedule:
    """Send times (perf_counter ns) of an open-loop load: constant or Poisson arrivals."""

    CHUNK = 4096

    def __init__(self, start_ns: int, rate: float, arrivals: str, offset_ns: int = 0, seed: int = 0):
        if arrivals not in ARRIVALS:
            raise LoadError(f"arrivals '{arrivals}' is not supported; use {' or '.join(ARRIVALS)}")
        self.start = start_ns + offset_ns
        self.interval = 1e9 / rate
        self.poisson = arrivals == "poisson"
        self.rng = np.random.default_rng(seed)
        self.times = array("q")
        self.last = float(self.start)

    def _extend(self) -> None:
        gaps = self.rng.exponential(self.interval, self.CHUNK)
        cum = self.last + np.cumsum(gaps)
        self.last = float(cum[-1])
        self.times.extend(cum.astype(np.int64).tolist())

    def at(self, i: int) -> int:
        if not self.poisson:
            return self.start + int(i * self.interval)
        while i >= len(self.times):
            self._extend()
        return self.times[i]

    def count_before(self, t_ns: int) -> int:
        """Sends scheduled before t_ns."""
        if t_ns <= self.start:
            return 0
        if not self.poisson:
            return math.ceil((t_ns - self.start) / self.interval)
        while not self.times or self.times[-1] < t_ns:
            self._extend()
        return bisect_left(self.times, t_ns)
