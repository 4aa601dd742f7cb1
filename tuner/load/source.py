"""Where a load point's windows come from: one interface, several implementations.

`LoadClient` runs every point the same way, whatever generates its load:

    LoadSource          the interface (below), and its contract
    +-- LocalSource     this process and event loop (this module)
    +-- ProcessSource   the load processes of a `pool.WorkerPool`
    +-- RaySource       the Ray actors of a `raypool.RayPool`

A failure inside a source (a crashed engine, a lost or broken load process,
Ray refusing to start actors) raises; `load_error` turns it into tuner's
`LoadError`, at one boundary: `LoadClient.run`.
"""

from __future__ import annotations

import asyncio
import time

from tuner.errors import LoadError, TunerError
from tuner.load.channel import LoadChannel
from tuner.load.engine import Engine
from tuner.load.request import RequestPlan
from tuner.load.spec import LoadSettings, LoadSpec
from tuner.results.samples import WindowSample


class SourceError(Exception):
    """A source's load generator failed; the message is for the user, as it is."""


def load_error(err: Exception) -> TunerError:
    """The one mapping from a failure inside a source to what tuner reports."""
    if isinstance(err, TunerError):
        return err
    if isinstance(err, SourceError):
        return LoadError(str(err))
    return LoadError(f"the load generator failed: {err!r}")


async def sleep_until_ns(t_ns: int) -> None:
    """Sleep until t_ns on the monotonic clock (`time.perf_counter_ns`)."""
    await asyncio.sleep(max(0.0, (t_ns - time.perf_counter_ns()) / 1e9))


class LoadSource:
    """The load of one point, seen by the driver as one source of aligned windows.

    The driver (`LoadClient._measure`) makes one source per point and calls:

    1. `start(t_start_ns)`, once, with t_start_ns = now + `start_delay_ns` on
       this host's monotonic clock (`time.perf_counter_ns`). It returns
       without waiting for t_start_ns; the load begins at t_start_ns.
    2. `window(k, boundary_ns)` for k = 0, 1, 2, ... in order, with
       boundary_ns = t_start_ns + warm-up + k * window. It returns once what
       completed in [previous boundary, boundary_ns) is known:
       - k = 0 is the warm-up: its samples are discarded, it returns None;
       - k >= 1: that window's `WindowSample`, the union of every worker's
         raw samples (`stats.merge_windows`), with the client self-check;
         a window some workers could not deliver (a lost Ray actor) says so
         in `failed_workers` rather than raising;
       - or None when the load has stopped (every request path died): the
         driver ends the point there.
       The driver adds the server's statistics and telemetry itself.
    3. `stop()`, exactly once after `start`, also when a window raised:
       stops sending, waits for what is outstanding (open loop: up to
       `drain_s`) and leaves the workers ready for the next point.
    4. `errors()` and `worker_windows()`, after `stop()`.

    Failed requests are not failures of the source: they are counted by kind
    in `errors()`. A failure of the generator itself raises, from any
    method; `SourceError` carries a message for the user, anything else is
    reported as "the load generator failed" (`load_error`).
    """

    #: how far ahead of now the driver puts the start, so every worker has it in time
    start_delay_ns: int = 1_000_000

    async def start(self, t_start_ns: int) -> None:
        raise NotImplementedError

    async def window(self, k: int, boundary_ns: int) -> WindowSample | None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def errors(self) -> tuple[dict[str, int], str]:
        """(failed requests by kind (gRPC status, BAD_OUTPUT, WORKER_LOST, ...), the first error's message)."""
        raise NotImplementedError

    def worker_windows(self) -> list[list[WindowSample]] | None:
        """Each worker's own windows (merged into what `window` returned); None for a single worker."""
        return None


class LocalSource(LoadSource):
    """The load of a point in this process and event loop, on the client's own channel."""

    start_delay_ns = 1_000_000

    def __init__(self, channel: LoadChannel, plan: RequestPlan, spec: LoadSpec, settings: LoadSettings):
        self.engine = Engine(channel, plan, settings, spec.share(0, 1))

    def _raise_if_crashed(self) -> None:
        crashed = self.engine.crashed
        if crashed is not None:
            raise SourceError(f"the load generator failed: {crashed!r}") from crashed

    async def start(self, t_start_ns: int) -> None:
        self.engine.start(t_start_ns)

    async def window(self, k: int, boundary_ns: int) -> WindowSample | None:
        await sleep_until_ns(boundary_ns)
        self._raise_if_crashed()
        if not self.engine.alive():
            return None
        window = self.engine.cut(boundary_ns)
        return window if k > 0 else None  # the warm-up is cut all the same: window 1 starts at its end

    async def stop(self) -> None:
        await self.engine.stop()
        self._raise_if_crashed()

    def errors(self) -> tuple[dict[str, int], str]:
        return dict(self.engine.error_kinds), self.engine.first_error
