"""A joint run's outputs (several models tuned together), from its stored files alone.

`RUN/original/steps.json` names the tuned models in order (written by `tuner/steps.py`);
`RUN/original/<model>/config.pbtxt` holds each one's original config. The recommendation
gives `RUN/recommended/<model>/config.pbtxt` and `config.diff` for every tuned model (an
unchanged model's diff is empty), and the report shows, for each candidate at its best
point (else its highest load), each model's queue and compute time per request, from the
statistics API of that model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuner import config as cfgmod
from tuner.config import JointSpec
from tuner.errors import StoreError
from tuner.report.text import esc
from tuner.results.records import Measurement
from tuner.results.store import RunResults, write_atomic
from tuner.search.budgets import model_latencies_ms
from tuner.search.joint import step_breakdown_ms
from tuner.search.recommend import Recommendation

STEPS_FILE = "steps.json"  # RUN/original/steps.json: {"kind": "ensemble" | "bls" | "multi", "models": [...]}


def read_steps(run_dir: Path) -> dict | None:
    """{"kind", "models"} of a joint run; None for a single-model run."""
    f = Path(run_dir) / "original" / STEPS_FILE
    if not f.exists():
        return None
    return json.loads(f.read_text(encoding="utf-8"))


def chosen_spec(results: RunResults, rec: Recommendation) -> JointSpec:
    if rec.best is None or rec.best.candidate_id == "baseline":
        return JointSpec()
    spec = results.candidates[rec.best.candidate_id].spec
    return spec if isinstance(spec, JointSpec) else JointSpec()


def write_recommended(run_dir: Path, results: RunResults, rec: Recommendation, models: list[str]) -> tuple[str, str, str, dict]:
    """recommended/<model>/config.pbtxt and config.diff for every tuned model; (originals, recommended,
    diffs) as one text each for the report, and summary.json's `recommended_configs`."""
    run_dir = Path(run_dir)
    joint = chosen_spec(results, rec)
    originals, chosen, diffs, files = [], [], [], {}
    for name in models:
        path = run_dir / "original" / name / "config.pbtxt"
        if not path.exists():
            raise StoreError(f"{run_dir} has no original/{name}/config.pbtxt; the sweep stopped before reading it")
        original = cfgmod.read_config(path)
        spec = joint.spec_of(name)
        config = cfgmod.make_candidate(original, spec) if spec is not None else original
        diff = cfgmod.diff_configs(original, config, f"original/{name}/config.pbtxt",
                                   f"recommended/{name}/config.pbtxt") if spec is not None else ""
        write_atomic(run_dir / "recommended" / name / "config.pbtxt", cfgmod.format_config(config))
        write_atomic(run_dir / "recommended" / name / "config.diff", diff)
        originals.append(f"# original/{name}/config.pbtxt\n{cfgmod.format_config(original)}")
        chosen.append(f"# recommended/{name}/config.pbtxt\n{cfgmod.format_config(config)}")
        diffs.append(diff or f"# {name}: unchanged\n")
        files[name] = {"config": f"recommended/{name}/config.pbtxt", "changed": spec is not None,
                       "spec": spec.to_dict() if spec is not None else None}
    return "\n".join(originals), "\n".join(chosen), "\n".join(diffs), files


def _shown_point(results: RunResults, rec: Recommendation, cid: str) -> Measurement | None:
    """The candidate's point the table shows: its best feasible one, else its highest load."""
    pts = [m for m in results.points if m.candidate_id == cid and m.status == "ok" and m.windows]
    best = max((p for p in rec.feasible if p.candidate_id == cid), key=lambda p: p.throughput_infer_per_s,
               default=None)
    if best is not None:
        return next((m for m in pts if m.concurrency == best.concurrency), None)
    return max(pts, key=lambda m: m.concurrency, default=None)


def step_times(results: RunResults, rec: Recommendation) -> dict[str, dict]:
    """Candidate -> {"concurrency", "steps": {model: {"queue": ms, "compute": ms}}} (summary.json, report)."""
    out = {}
    for cid in dict.fromkeys(m.candidate_id for m in results.points):
        m = _shown_point(results, rec, cid)
        steps = step_breakdown_ms(m) if m is not None else {}
        if steps:  # none: a single-model run, or no statistics
            out[cid] = {"concurrency": m.concurrency, "steps": steps}
    return out


def spec_text(spec) -> str:
    """One candidate's settings, model by model (the report's table)."""
    if not isinstance(spec, JointSpec):
        return ""
    parts = [f"{name}: {s.candidate_id}" for name, s in spec.steps]
    return "; ".join(parts) or "every model as it is"


def steps_section(results: RunResults, rec: Recommendation, models: list[str]) -> str:
    """The report's per-step table: queue and compute time per request of each model, per candidate."""
    times = step_times(results, rec) if models else {}
    if not times:
        return ""
    head = "".join(f"<th>{esc(n)} queue ms</th><th>{esc(n)} compute ms</th>" for n in models)
    rows = []
    best = rec.best.candidate_id if rec.best is not None else None
    for cid, t in times.items():
        cells = []
        for n in models:
            b = t["steps"].get(n)
            cells.append(f"<td>{b['queue']:.2f}</td><td>{b['compute']:.2f}</td>" if b else "<td>—</td><td>—</td>")
        cand = results.candidates.get(cid)
        what = spec_text(cand.spec) if cand is not None else ""
        mark, cls = (" ★", ' class="rec"') if cid == best else ("", "")
        rows.append(f'<tr{cls}><td title="{esc(what)}">{esc(cid)}{mark}</td>'
                    f"<td>{t['concurrency']}</td>{''.join(cells)}</tr>")
    return ("<section><h2>Per step: queue and compute time per request</h2><p class=\"sub\">From each model's "
            "statistics API, at each candidate's best point within the constraints (else its highest load). "
            "The search tunes the model with the most time first.</p><table class=\"cands\"><tr><th>candidate"
            f"</th><th>concurrency</th>{head}</tr>{''.join(rows)}</table></section>")


def shared_latencies(results: RunResults, rec: Recommendation, models) -> dict[str, dict]:
    """Models sharing the server: the recommended and baseline points' latency per model, each at its own
    percentile (ms) beside its budget (summary.json's `model_latency_ms`)."""
    out = {}
    for role, op in (("recommended", rec.best), ("baseline", rec.baseline)):
        m = None if op is None else next((p for p in results.points if p.candidate_id == op.candidate_id
                                          and p.concurrency == op.concurrency and p.status == "ok"), None)
        if m is not None:
            lat = model_latencies_ms(m, models)
            out[role] = {sm.name: {"percentile": sm.latency_percentile, "latency_ms": lat[sm.name],
                                   "budget_ms": sm.latency_budget_ms, "share": sm.share} for sm in models}
    return out
