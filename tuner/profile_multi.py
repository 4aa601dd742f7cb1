"""Several models on one server: a profile's `[[model]]` entries.

    [[model]]
    name = "multi_a"
    share = 0.7                 # expected fraction of the requests (normalized; default: equal)
    latency_budget_ms = 20.0    # its own budget, on its own requests ([constraints]' by default)
    latency_percentile = "p99"
    url = "localhost:8001"      # the server and the request settings (version, data, batch_size):
                                # on the first entry only, shared by every model

    [[model]]
    name = "multi_b"
    share = 0.3
    latency_budget_ms = 60.0

All the models are under load at once, each with its share of the requests (they share
the device), so every candidate is a joint setting of all of them (`config.JointSpec`);
a point is feasible when every model meets its own budget (`search/budgets.py`). The
first entry is the run's `[model]` (`Profile.model`); the models and their budgets go to
`Constraints.models`, and [constraints]' own latency budget becomes the loosest one
(every model within its budget implies it), so the single-model checks still hold.

With one `[model]` table the profile reads as before. Parsed with the `profile._Reader`
and section readers passed in, so this module does not import profile.
"""

from __future__ import annotations

from dataclasses import replace

from tuner.search.budgets import PERCENTILES, SharedModel

OWN_KEYS = ("share", "latency_budget_ms", "latency_percentile")  # each entry's own
FIRST_KEYS = ("name", "version", "url", "data", "batch_size")  # the run's, on the first entry only


def read_models(doc: dict, where: str, at, reader, model_section, constraints_section):
    """(the [model] fields, Constraints) of a profile, with or without `[[model]]` entries."""
    table = doc.get("model", {})
    constraints = constraints_section(reader(where, doc.get("constraints", {}), "constraints"))
    if not isinstance(table, list):
        return model_section(reader(where, table, "model"), at), constraints
    if len(table) < 2:
        raise_fail(reader, where, "model", "[[model]] lists the models sharing one server: give at least two "
                   "entries (one model: a single [model] table)")
    models, first = [], {}
    for i, entry in enumerate(table):
        section = f"model[{i}]"
        if not isinstance(entry, dict):
            raise_fail(reader, where, section, "must be a table ([[model]])")
        own = reader(where, {k: v for k, v in entry.items() if k in OWN_KEYS}, section)
        rest = {k: v for k, v in entry.items() if k not in OWN_KEYS}
        allowed = FIRST_KEYS if i == 0 else ("name",)
        extra = sorted(set(rest) - set(allowed))
        if extra:
            own.fail(f"{section}.{extra[0]}", f"not available with [[model]]; an entry takes "
                     f"{', '.join(('name',) + OWN_KEYS)}" + (f", and the first also {', '.join(FIRST_KEYS[1:])}"
                                                             if i == 0 else " (the rest goes on the first entry)"))
        fields = model_section(reader(where, rest, section), at)
        if i == 0:
            first = fields
        name = fields["model"]
        if any(sm.name == name for sm in models):
            own.fail(f"{section}.name", f"'{name}' is listed twice; name each model once")
        pct = own.get("latency_percentile", str, constraints.latency_percentile)
        if pct not in PERCENTILES:
            own.fail(f"{section}.latency_percentile", f"must be one of {', '.join(PERCENTILES)}")
        models.append(SharedModel(
            name=name, share=float(own.number("share", 1.0, positive=True)), latency_percentile=pct,
            latency_budget_ms=float(own.number("latency_budget_ms", constraints.latency_budget_ms, positive=True))))
        own.finish()
    total = sum(sm.share for sm in models)
    models = tuple(replace(sm, share=sm.share / total) for sm in models)
    # the whole load's latency at the lowest percentile listed is within the loosest budget
    # whenever every model is within its own: the single-model check stays true, never binding
    lowest = min((sm.latency_percentile for sm in models), key=PERCENTILES.get)
    loosest = max(sm.latency_budget_ms for sm in models)
    return first, replace(constraints, latency_percentile=lowest, latency_budget_ms=loosest, models=models)


def raise_fail(reader, where: str, section: str, fix: str) -> None:
    reader(where, {}, section).fail(section, fix)
