"""A family of response surfaces to test search on: the bundled `synthetic` model's parameters.

The synthetic model (`tuner/models/synthetic/1/model.py`) sleeps for what a batch would
cost an accelerator; its config parameters choose the cost model, so one model plays
many servers. Each surface here names those parameters and the search space and latency
budget it is searched with. `bench/bench_search.py` runs grid and smart search on each,
on the embedded Triton; the tests simulate the same costs (`cost_ms`) without a server.

    linear    2 ms per execution + 0.5 ms per item (the model's default)
    knee      the per-item cost jumps from 0.5 to 4 ms above 12 items (not a listed
              max_batch_size, not a power of two): the best max_batch_size is between
              listed values
    overhead  a large fixed cost per execution (12 ms) and little per item: batching
              pays until the budget binds, above the largest listed max_batch_size and
              the profile's highest load level. Its budget is 60 ms: below twice
              max_batch_size of load, a closed loop's latency stays near twice the fixed
              cost whatever the load, so a budget just above that (40 ms on a 2-core
              host) would make the answer a coin toss on p99 noise, not a test of search
    padded    a static-shape engine: every execution costs a full max_batch_size batch,
              so how full the queue delay lets batches get matters, and by how much
              depends on max_batch_size
    shared    instances share one device: 70% of an execution is exclusive, so a second
              instance adds far less than a second device would, a third nothing
    jitter    the linear surface with +-10% random jitter on every execution
"""

from __future__ import annotations

from dataclasses import dataclass, field

LEVELS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Surface:
    name: str
    parameters: dict[str, str] = field(default_factory=dict)  # the synthetic model's config parameters
    max_batch_size: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    max_queue_delay_us: tuple[int, ...] = (0, 500, 2000)
    instance_count: tuple[int, ...] = (1,)
    concurrency: tuple[int, ...] = LEVELS
    budget_ms: float = 40.0

    def param(self, key: str, default: float) -> float:
        v = self.parameters.get(key)
        return float(v) if v not in (None, "") else default

    def cost_ms(self, items: int, max_batch_size: int) -> float:
        """One execution's mean cost (jitter aside), as the synthetic model computes it."""
        if self.parameters.get("pad_to_max_batch", "false") == "true":
            items = max(items, max_batch_size)
        fixed, per_item = self.param("fixed_cost_ms", 2.0), self.param("per_item_cost_ms", 0.5)
        knee = int(self.param("knee_batch_size", 0))
        if knee > 0 and items > knee:
            return fixed + per_item * knee + self.param("knee_per_item_cost_ms", 0.0) * (items - knee)
        return fixed + per_item * items

    @property
    def jitter(self) -> float:
        """Relative half-width of the uniform jitter on each execution."""
        return self.param("jitter_pct", 0.0) / 100.0

    @property
    def device_overlap(self) -> float:
        """Share of an execution that overlaps other instances' (1.0: nothing shared)."""
        return self.param("device_overlap", 1.0)

    def pbtxt_parameters(self) -> str:
        """The parameters as config.pbtxt lines (replacing the model's own)."""
        params = {"fixed_cost_ms": "2.0", "per_item_cost_ms": "0.5", **self.parameters}
        return "".join(f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
                       for k, v in params.items())

    def profile_search(self) -> str:
        """The [search] keys of the surface's space (TOML lines)."""
        return (f"max_batch_size = {list(self.max_batch_size)}\n"
                f"max_queue_delay_us = {list(self.max_queue_delay_us)}\n"
                'preferred_batch_size = "none"\n'
                f"instance_count = {list(self.instance_count)}\n"
                f"concurrency = {list(self.concurrency)}\n")


SURFACES: dict[str, Surface] = {s.name: s for s in (
    Surface("linear"),
    Surface("knee", {"knee_batch_size": "12", "knee_per_item_cost_ms": "4.0"}),
    Surface("overhead", {"fixed_cost_ms": "12.0", "per_item_cost_ms": "0.1"}, budget_ms=60.0),
    Surface("padded", {"pad_to_max_batch": "true"}),
    Surface("shared", {"device_overlap": "0.3"}, max_batch_size=(4, 8, 16, 32), max_queue_delay_us=(0, 2000),
            instance_count=(1, 2, 3)),
    Surface("jitter", {"jitter_pct": "10"}),
)}
