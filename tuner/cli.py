"""The `tuner` command line: parse arguments, call one library function, print.

Errors from the library (the TunerError family) become one line on stderr
and an exit code here, and nowhere else.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer

from . import config as cfgmod
from .errors import TunerError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Find the best batching configuration for a Triton model, with measurements.")


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{what} takes comma-separated integers, e.g. 1,8,32") from None
    if not values:
        raise typer.BadParameter(f"{what} needs at least one value")
    return values


def fail(err: TunerError) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(err.exit_code)


def cli_errors(fn):
    """Turn library errors into one-line messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TunerError as err:
            fail(err)
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


@app.command()
@cli_errors
def candidates(
    config_path: Path = typer.Argument(..., metavar="CONFIG.pbtxt", help="the model's config.pbtxt"),
    max_batch_size: str = typer.Option("8,16,32", help="comma-separated max_batch_size values"),
    queue_delay_us: str = typer.Option("0", help="comma-separated max_queue_delay_microseconds values"),
    instances: str = typer.Option("1", help="comma-separated instance counts"),
    preferred: str = typer.Option("none", help="comma-separated preferred_batch_size rules: none, max, halves"),
    first_dim_is_batch: bool = typer.Option(False, help="for max_batch_size 0 models whose first dim is a batch dim"),
    out: Path = typer.Option(..., help="folder to write <candidate-id>/config.pbtxt into"),
) -> None:
    """Write one config.pbtxt per candidate (only the tuned fields changed)."""
    original = cfgmod.read_config(config_path)
    cfgmod.check_tunable(original, first_dim_is_batch=first_dim_is_batch, where=str(config_path))
    specs = cfgmod.expand_specs(
        _ints(max_batch_size, "--max-batch-size"),
        _ints(queue_delay_us, "--queue-delay-us"),
        _ints(instances, "--instances"),
        [r.strip() for r in preferred.split(",") if r.strip()],
    )
    written = cfgmod.write_candidates(original, specs, out, first_dim_is_batch=first_dim_is_batch)
    for spec, path in written:
        typer.echo(f"{spec.candidate_id}\t{path}")


@app.command()
@cli_errors
def serve(
    model_repository: Path = typer.Option(..., help="model repository folder to serve"),
    grpc_port: Optional[int] = typer.Option(None, help="gRPC port (default: a free one)"),
    load: str = typer.Option("", help="comma-separated models to load at start"),
    log: Path = typer.Option(Path("tritonserver.log"), help="server log file"),
) -> None:
    """Run the embedded Triton in the foreground on any model repository."""
    from .serve import serve_forever

    serve_forever(model_repository, grpc_port, [m for m in load.split(",") if m], log, echo=typer.echo)


def _shapes(items: list[str]) -> dict[str, list[int]]:
    shapes = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            shapes[name.strip()] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise typer.BadParameter(f"--shape takes NAME=D1,D2,..., got '{item}'") from None
    return shapes


def _headers(items: list[str]) -> list[tuple[str, str]]:
    from .connection import parse_header

    return [parse_header(h) for h in items]


def _run_dir(out: Optional[Path], label: str) -> Path:
    import time

    from .paths import safe_name

    if out is not None:
        return out
    return Path("reports") / f"{safe_name(label)}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


@app.command()
@cli_errors
def measure(
    model: str = typer.Argument(..., help="model name (a bundled model when no --url is given)"),
    url: Optional[str] = typer.Option(None, help="gRPC host:port of a running Triton (default: start the embedded one)"),
    concurrency: str = typer.Option("1,8,32", help="comma-separated concurrency levels"),
    version: str = typer.Option("", help="model version (default: the server's policy)"),
    shape: list[str] = typer.Option([], help="shape for an input with variable dims: NAME=D1,D2"),
    data: str = typer.Option("random", help="input data: random or zeros"),
    window_s: float = typer.Option(2.0, help="measurement window length, seconds"),
    warmup_s: float = typer.Option(1.0, help="warm-up before the first window, seconds"),
    max_windows: int = typer.Option(8, help="windows before a point is flagged unstable"),
    stability_pct: float = typer.Option(10.0, help="last 3 windows must agree within this percentage"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write a JSON summary here"),
    out: Optional[Path] = typer.Option(None, help="run folder (default reports/measure-<model>-<UTC time>)"),
) -> None:
    """Measure a model's current config at a few concurrency levels."""
    import json

    from .load import LoadSettings
    from .measure import measure_model, summary_json
    from .results import write_atomic
    from .table import measure_table

    settings = LoadSettings(warmup_s=warmup_s, window_s=window_s, max_windows=max_windows,
                            stability_pct=stability_pct)
    run_dir = _run_dir(out, f"measure-{model}")
    result = measure_model(model, run_dir, url=url, version=version,
                           concurrencies=_ints(concurrency, "--concurrency"), settings=settings,
                           shapes=_shapes(shape), data=data)
    measure_table(result)
    if json_out is not None:
        write_atomic(json_out, json.dumps(summary_json(result), indent=2) + "\n")
    typer.echo(f"results: {result.results_path}")


@app.command()
@cli_errors
def sweep(
    profile: Optional[str] = typer.Argument(None, help="profile name (profiles/<name>.toml) or path"),
    url: Optional[str] = typer.Option(None, help="gRPC host:port of a running Triton (overrides the profile)"),
    out: Optional[Path] = typer.Option(None, help="run folder (default reports/<profile>-<UTC time>)"),
    latency_budget_ms: Optional[float] = typer.Option(None, help="latency budget (overrides the profile)"),
    latency_percentile: Optional[str] = typer.Option(None, help="p50, p90, p95 or p99 (overrides the profile)"),
    resume: Optional[Path] = typer.Option(None, help="continue an interrupted run folder, skipping stored points"),
    ssl: bool = typer.Option(False, "--ssl", help="connect to the server over TLS"),
    root_certificates: Optional[Path] = typer.Option(None, help="PEM root certificates for TLS"),
    private_key: Optional[Path] = typer.Option(None, help="PEM client private key (mutual TLS)"),
    certificate_chain: Optional[Path] = typer.Option(None, help="PEM client certificate chain (mutual TLS)"),
    header: list[str] = typer.Option([], help="extra request header 'Name: value' (repeatable; never stored)"),
) -> None:
    """Sweep candidate configs and load levels, recommend one, write the report."""
    from .profile import load_profile
    from .progress import SweepProgress
    from .sweep import new_run_dir, resume_profile, run_sweep

    if resume is not None:
        prof = resume_profile(resume)
        run_dir = resume
    elif profile is None:
        raise typer.BadParameter("give a profile name (e.g. `tuner sweep resnet`) or --resume RUN_DIR")
    else:
        prof = load_profile(profile)
        run_dir = new_run_dir(prof, out)
    prof = prof.with_overrides(url=url, latency_budget_ms=latency_budget_ms,
                               latency_percentile=latency_percentile)
    prof = prof.with_connection(ssl=ssl, root_certificates=root_certificates, private_key=private_key,
                                certificate_chain=certificate_chain, headers=_headers(header))
    with SweepProgress() as progress:
        outcome = run_sweep(prof, run_dir, resume=resume is not None, on_event=progress.on_event)
    from .table import sweep_summary

    sweep_summary(outcome.summary, outcome.run_dir)


@app.command()
@cli_errors
def report(run_dir: Path = typer.Argument(..., help="a run folder written by `tuner sweep`")) -> None:
    """Re-render summary.json, the recommended config and report.html from stored results."""
    from .outputs import finalize_run
    from .table import sweep_summary

    summary = finalize_run(run_dir)
    sweep_summary(summary, run_dir)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
