"""Several models under load at once: one request plan that sends each model its share.

Every request names its model (`ModelInferRequest.model_name`), so a load to several models
is one `RequestPlan` whose payload pool holds every model's requests: the order draws the
model of each request by share (`inputs.draw_order`: shuffled blocks, so a short window
sees the shares asked for), then takes that model's next request in its own order. The
models are the plan's request "shapes": each latency keeps its model's index
(`WindowSample.shape_index`), so each model's budget is judged on its own requests
(`search/budgets.py`), and the engine needs nothing new. In a closed loop the sends, and
so the completions, follow the shares whatever each model's latency.

The plan's `mix` records {"models": [...], "shapes": [{"shape": <model>, "weight": <share>}],
"per_model": {<model>: <its own mix>}} (the environment's `input_mix`).
"""

from __future__ import annotations

from tuner.errors import LoadError
from tuner.load.inputs import draw_order
from tuner.load.request import RequestPlan

SEED = 0


def shared_plan(plans: list[tuple[str, RequestPlan]], shares: list[float]) -> RequestPlan:
    """One plan sending each (model, plan) its share of the requests, in the given model order."""
    if len(plans) < 2 or len(shares) != len(plans):
        raise LoadError("a load shared by several models needs a plan and a share for each of at least two models")
    for name, plan in plans:
        if plan.decoupled or plan.sequence is not None:
            kind = "decoupled" if plan.decoupled else "stateful (sequence_batching)"
            raise LoadError(f"'{name}' is {kind}; models sharing one server under load must each answer "
                            "every request once, on its own (tune it in its own profile)")
    payloads, expected, shape_of, base = [], [], [], []
    for i, (_name, plan) in enumerate(plans):
        base.append(len(payloads))
        payloads.extend(plan.payloads)
        expected.extend(plan.expected)
        shape_of.extend([i] * len(plan.payloads))
    choices = draw_order(list(shares), SEED)
    nexts = [0] * len(plans)
    order = []
    for i in choices:  # each model's requests keep their own order (its shape mix, its data)
        own = plans[i][1].order
        order.append(base[i] + own[nexts[i] % len(own)])
        nexts[i] += 1
    mix = {"models": [name for name, _ in plans],
           "shapes": [{"shape": name, "weight": round(share, 6)} for (name, _), share in zip(plans, shares)],
           "batch_size": plans[0][1].batch_size,
           "per_model": {name: plan.mix for name, plan in plans}}
    return RequestPlan(tuple(payloads), tuple(expected), tuple(order), tuple(shape_of), plans[0][1].batch_size,
                       mix=mix)
