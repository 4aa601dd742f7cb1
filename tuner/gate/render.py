"""A comparison's reports: the terminal table, markdown (a CI summary), JUnit XML (one testcase per
point) and JSON (schema 1), and writing them to the files `--markdown`, `--junit`, `--json` name."""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

from tuner.errors import StoreError
from tuner.gate.compare import METRICS, Comparison, MetricResult, signed_pct
from tuner.results.store import write_atomic


def _num(x: float, unit: str) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.1f}" if unit == "infer/s" else f"{x:.2f}"


def _interval(m: MetricResult) -> str:
    return f"{signed_pct(m.ci_low)}..{signed_pct(m.ci_high)}"


def _limit(m: MetricResult) -> str:
    if m.limit is None:
        return "-"
    return f"{'-' if m.worse_is_lower else '+'}{m.limit * 100:g}%"


def _verdict(m: MetricResult) -> str:
    if m.regressed:
        return "REGRESSION"
    if m.not_gated:
        return "too few samples"
    if m.limit is None:
        return "info"
    beyond = (m.change < -m.limit) if m.worse_is_lower else (m.change > m.limit)
    if beyond:
        return "ok (not significant)"
    return "ok"


def rows(c: Comparison, gated_only: bool = False):
    """(point, metric) rows in display order."""
    for p in c.points:
        if not p.metrics:
            yield p, None
        for m in p.metrics:
            if gated_only and m.limit is None:
                continue
            yield p, m


def render_table(c: Comparison, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    conf = f"{c.options.confidence * 100:g}% CI"
    t = Table(title=f"{c.current.source} vs baseline {c.baseline.source}")
    for col in ("config", "conc.", "metric", "baseline", "current", "change", conf, "limit", "verdict"):
        t.add_column(col, justify="left" if col in ("config", "metric", "verdict") else "right")
    for p, m in rows(c):
        if m is None:
            t.add_row(p.label, str(p.concurrency), "-", "-", "-", "-", "-", "-",
                      "[bold red]REGRESSION[/]: " + "; ".join(p.reasons))
            continue
        v = _verdict(m)
        style = "bold red" if m.regressed else ("dim" if m.limit is None else "")
        t.add_row(p.label, str(p.concurrency), m.metric, _num(m.baseline, m.unit), _num(m.current, m.unit),
                  signed_pct(m.change), _interval(m), _limit(m),
                  f"[{style}]{v}[/]" if style else v)
    console.print(t)
    for line in _extra_lines(c):
        console.print(line, markup=False)
    color = "bold red" if c.regressed else "bold green"
    console.print(f"[{color}]{c.verdict()}[/]: {c.options.describe()}; {_simultaneous(c)}")


def _simultaneous(c: Comparison) -> str:
    return f"intervals simultaneous over {c.tests} gated tests (z {c.z:.2f})"


def _extra_lines(c: Comparison) -> list[str]:
    out = []
    for p in c.points:
        for r in p.reasons:
            if not any(r.startswith(m) for m in METRICS):
                out.append(f"{p.name}: {r}")
        for n in p.notes:
            out.append(f"{p.name}: note: {n}")
    for key, conc, side in c.unmatched:
        out.append(f"not compared: {key} @ concurrency {conc} (only in {side})")
    if c.env_mismatches:
        out.append("environment differs (compared anyway, --allow-env-mismatch): " + "; ".join(c.env_mismatches))
    if c.env_unknown:
        out.append("environment not recorded: " + "; ".join(c.env_unknown))
    if c.env_info:
        out.append("environment (not required to match): " + "; ".join(c.env_info))
    return out


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(c: Comparison) -> str:
    icon = ":x:" if c.regressed else ":white_check_mark:"
    conf = f"{c.options.confidence * 100:g}% CI"
    lines = [
        f"## {icon} tuner: {c.verdict()}",
        "",
        f"- baseline: `{c.baseline.source}` ({c.baseline.model or 'model ?'}, {c.baseline.created_at or 'time ?'})",
        f"- current: `{c.current.source}` ({c.current.model or 'model ?'}, {c.current.created_at or 'time ?'})",
        f"- a point regresses on {_md_escape(c.options.describe())}; {_simultaneous(c)}",
        "",
        f"| config | concurrency | metric | baseline | current | change | {conf} | limit | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for p, m in rows(c):
        if m is None:
            lines.append(f"| {_md_escape(p.label)} | {p.concurrency} | - | - | - | - | - | - | "
                         f"**REGRESSION**: {_md_escape('; '.join(p.reasons))} |")
            continue
        v = _verdict(m)
        lines.append(
            f"| {_md_escape(p.label)} | {p.concurrency} | {m.metric} ({m.unit}) | {_num(m.baseline, m.unit)} | "
            f"{_num(m.current, m.unit)} | {signed_pct(m.change)} | {_interval(m)} | "
            f"{_limit(m)} | {'**REGRESSION**' if m.regressed else v} |")
    extra = _extra_lines(c)
    if extra:
        lines += [""] + [f"- {_md_escape(x)}" for x in extra]
    return "\n".join(lines) + "\n"


def to_junit(c: Comparison) -> str:
    """JUnit XML: one testcase per compared point (failure = regression), skipped for unmatched."""
    n = len(c.points) + len(c.unmatched)
    failures = len(c.regressions)
    suites = ET.Element("testsuites", name="tuner compare", tests=str(n), failures=str(failures),
                        errors="0", time=f"{c.duration_s:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"tuner.compare.{c.current.model or 'model'}",
                          tests=str(n), failures=str(failures), errors="0", skipped=str(len(c.unmatched)),
                          time=f"{c.duration_s:.3f}",
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    props = ET.SubElement(suite, "properties")
    for name, value in (("baseline", c.baseline.source), ("current", c.current.source),
                        ("rule", c.options.describe())):
        ET.SubElement(props, "property", name=name, value=str(value))
    for p in c.points:
        case = ET.SubElement(suite, "testcase", classname=f"tuner.{p.key}", name=p.name, time="0")
        detail = "\n".join(
            f"{m.metric}: baseline {_num(m.baseline, m.unit)} {m.unit}, current {_num(m.current, m.unit)} "
            f"{m.unit}, change {signed_pct(m.change)} (CI {_interval(m)}), limit {_limit(m)}: {_verdict(m)}"
            for m in p.metrics)
        if p.regressed:
            fail = ET.SubElement(case, "failure", type="PerformanceRegression", message="; ".join(p.reasons))
            fail.text = detail
        else:
            out = ET.SubElement(case, "system-out")
            out.text = detail + ("\n" + "\n".join(p.notes) if p.notes else "")
    for key, conc, side in c.unmatched:
        case = ET.SubElement(suite, "testcase", classname=f"tuner.{key}", name=f"{key} @ concurrency {conc}",
                             time="0")
        ET.SubElement(case, "skipped", message=f"not compared: only in {side}")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(c: Comparison) -> dict:
    return _clean({
        "schema": 1,
        "regressed": c.regressed,
        "verdict": c.verdict(),
        "baseline": {"source": c.baseline.source, "kind": c.baseline.kind, "model": c.baseline.model},
        "current": {"source": c.current.source, "kind": c.current.kind, "model": c.current.model},
        "options": asdict(c.options),
        "environment": {"mismatches": c.env_mismatches, "unknown": c.env_unknown, "info": c.env_info},
        "points": [
            {"config": p.key, "label": p.label, "concurrency": p.concurrency, "regressed": p.regressed,
             "reasons": p.reasons, "notes": p.notes,
             "metrics": [asdict(m) for m in p.metrics]}
            for p in c.points
        ],
        "unmatched": [{"config": k, "concurrency": conc, "only_in": side} for k, conc, side in c.unmatched],
    })


def write_outputs(c: Comparison, *, markdown: Path | None = None, junit: Path | None = None,
                  json_out: Path | None = None) -> None:
    try:
        if markdown is not None:
            write_atomic(Path(markdown), to_markdown(c))
        if junit is not None:
            write_atomic(Path(junit), to_junit(c))
        if json_out is not None:
            write_atomic(Path(json_out), json.dumps(to_json(c), indent=2) + "\n")
    except OSError as err:
        raise StoreError(f"cannot write the comparison report: {err}") from None
