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

from tuner import cli_inputs
from tuner import config as cfgmod
from tuner.errors import TunerError

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
    original, text = cfgmod.read_config_text(config_path)
    cfgmod.check_tunable(original, first_dim_is_batch=first_dim_is_batch, where=str(config_path), text=text,
                         batch_switch=cfgmod.CLI_SWITCH)
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
    from tuner.server.serve import serve_forever

    serve_forever(model_repository, grpc_port, [m for m in load.split(",") if m], log, echo=typer.echo)


def _headers(items: list[str]) -> list[tuple[str, str]]:
    from tuner.server.connection import parse_header

    return [parse_header(h) for h in items]


def _run_dir(out: Optional[Path], label: str) -> Path:
    from tuner.results.rundir import new_run_dir

    return new_run_dir(label, out)


# TLS and header options: every command that reaches a server takes the same ones.
SSL = typer.Option(False, "--ssl", help="connect to the server over TLS")
ROOT_CERTIFICATES = typer.Option(None, help="PEM root certificates for TLS")
PRIVATE_KEY = typer.Option(None, help="PEM client private key (mutual TLS)")
CERTIFICATE_CHAIN = typer.Option(None, help="PEM client certificate chain (mutual TLS)")
HEADER = typer.Option([], help="extra request header 'Name: value' (repeatable; never stored)")
# What requests carry: measure, sweep and check take the same options.
INPUT_DATA = typer.Option(None, "--input-data", help=cli_inputs.INPUT_DATA_HELP)
BATCH_SIZE = typer.Option(None, "--batch-size", help=cli_inputs.BATCH_SIZE_HELP)
TRANSPORT = typer.Option("auto", help="http, stream, unary or auto: HTTP when the server's HTTP endpoint is known "
                                      "(the embedded one's; --http-url), else gRPC (README: which wire)")
HTTP_URL = typer.Option(None, help="HTTP host:port of the Triton given by --url (its port 8000 by default): "
                                   "load over HTTP")


def _connection(url, ssl, root_certificates, private_key, certificate_chain, header, http_url=None):
    """The --url server's connection from the flags; None: the embedded server."""
    from tuner.server.connection import Connection

    if not url:
        if http_url:
            raise typer.BadParameter("--http-url names the HTTP endpoint of the server given by --url; pass both")
        return None
    return Connection(url, ssl=ssl, root_certificates=root_certificates, private_key=private_key,
                      certificate_chain=certificate_chain, headers=tuple(_headers(header)), http_url=http_url)


def _load_settings(workers: str, ray_actors: int, transport: str, arrivals: str, **fields):
    """`tuner measure`'s load flags, checked, as LoadSettings."""
    from tuner.errors import LoadError
    from tuner.load.raypool import import_ray, parse_workers
    from tuner.load.spec import LoadSettings

    if arrivals not in ("constant", "poisson"):
        raise typer.BadParameter("--arrivals takes constant or poisson")
    try:
        n_workers, ray_address = parse_workers(workers)
    except LoadError as err:
        raise typer.BadParameter(str(err)) from None
    if n_workers < 0 or ray_actors < 0:
        raise typer.BadParameter("--workers takes 0 (automatic) or a positive count")
    if ray_address:
        import_ray()  # one clear line when Ray is not installed
        n_workers = ray_actors
    if transport not in ("auto", "unary", "stream", "http"):
        raise typer.BadParameter("--transport takes auto, unary, stream or http")
    return LoadSettings(workers=n_workers, transport=transport, ray_address=ray_address, **fields)


@app.command()
@cli_errors
def measure(
    model: str = typer.Argument(..., help="model name (a bundled model when no --url is given)"),
    url: Optional[str] = typer.Option(None, help="gRPC host:port of a running Triton (default: start the embedded one)"),
    concurrency: Optional[str] = typer.Option(
        None, help="comma-separated concurrency levels (default 1,8,32 unless --request-rate is given)"),
    request_rate: Optional[str] = cli_inputs.REQUEST_RATE,
    ramp: bool = cli_inputs.RAMP,
    request_intervals: Optional[Path] = cli_inputs.REQUEST_INTERVALS,
    arrivals: str = typer.Option("constant", help="open-loop arrivals: constant or poisson"),
    workers: str = typer.Option(
        "0", help="load processes (0 = automatic from client cores and load); 'ray' or 'ray://HOST:PORT': "
                  "Ray actors, one per node of the cluster (pip install 'tuner[distributed]')"),
    ray_actors: int = typer.Option(0, help="with --workers ray: actors in all (0 = one per node)"),
    transport: str = TRANSPORT,
    http_url: Optional[str] = HTTP_URL,
    metrics_url: Optional[str] = typer.Option(
        None, help="Triton metrics URL (default: the embedded server's, or http://<url host>:8002/metrics)"),
    version: str = typer.Option("", help="model version (default: the server's policy)"),
    shape: list[str] = typer.Option([], help=cli_inputs.SHAPE_HELP),
    data: str = typer.Option("random", help="generated input data: random or zeros"),
    input_data: Optional[Path] = INPUT_DATA,
    batch_size: Optional[int] = BATCH_SIZE,
    sequence_length: Optional[int] = typer.Option(None, "--sequence-length", help=cli_inputs.SEQUENCE_LENGTH_HELP),
    window_s: float = typer.Option(2.0, help="measurement window length, seconds"),
    warmup_s: float = typer.Option(1.0, help="warm-up before the first window, seconds"),
    max_windows: int = typer.Option(8, help="windows before a point is flagged unstable"),
    stability_pct: float = typer.Option(10.0, help="last 3 windows must agree within this percentage"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write a JSON summary here"),
    out: Optional[Path] = typer.Option(None, help="run folder (default reports/measure-<model>-<UTC time>)"),
    ssl: bool = SSL,
    root_certificates: Optional[Path] = ROOT_CERTIFICATES,
    private_key: Optional[Path] = PRIVATE_KEY,
    certificate_chain: Optional[Path] = CERTIFICATE_CHAIN,
    header: list[str] = HEADER,
) -> None:
    """Measure a model's current config at a few concurrency levels or request rates."""
    import json

    from tuner.measure import measure_model, summary_json
    from tuner.report.table import measure_table
    from tuner.results.store import write_atomic

    settings = _load_settings(workers, ray_actors, transport, arrivals, warmup_s=warmup_s, window_s=window_s,
                              max_windows=max_windows, stability_pct=stability_pct)
    rates, traffic = cli_inputs.rates_and_traffic(request_rate, request_intervals, ramp)
    levels = (_ints(concurrency, "--concurrency") if concurrency is not None
              else ([] if rates or traffic else [1, 8, 32]))
    target = _connection(url, ssl, root_certificates, private_key, certificate_chain, header, http_url)
    result = measure_model(model, _run_dir(out, f"measure-{model}"), url=target, version=version,
                           concurrencies=levels, settings=settings, request_rates=rates, arrivals=arrivals,
                           metrics_url=metrics_url, traffic=traffic,
                           inputs=cli_inputs.input_spec(data, shape, input_data, batch_size, sequence_length))
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
    ssl: bool = SSL,
    root_certificates: Optional[Path] = ROOT_CERTIFICATES,
    private_key: Optional[Path] = PRIVATE_KEY,
    certificate_chain: Optional[Path] = CERTIFICATE_CHAIN,
    header: list[str] = HEADER,
    search: Optional[str] = typer.Option(
        None, help="search strategy: smart (few measurements, skips what cannot win) or grid (every "
                   "candidate at every level); overrides the profile's [search] strategy"),
    no_confirm: bool = typer.Option(
        False, "--no-confirm", help="skip the confirmation phase (the winner, its near ties and the baseline "
                                    "measured again, interleaved); overrides the profile's [search] confirm"),
    model: Optional[str] = typer.Option(
        None, help="sweep this model without a profile: the profile `tuner init` would write, kept in the run folder"),
    input_data: Optional[Path] = INPUT_DATA,
    batch_size: Optional[int] = BATCH_SIZE,
) -> None:
    """Sweep candidate configs and load levels, recommend one, write the report."""
    from tuner.report.progress import SweepProgress
    from tuner.sweep import run_sweep

    conn = _connection(url, ssl, root_certificates, private_key, certificate_chain, header)
    prof, run_dir = cli_inputs.sweep_profile(profile, model, resume, out, conn)
    if search is not None and search not in ("grid", "smart"):
        raise typer.BadParameter("--search takes grid or smart")
    if resume is not None and search is not None and search != prof.search.strategy:
        raise typer.BadParameter(f"--search {search}: {resume} was swept with '{prof.search.strategy}'; a resumed "
                                 "run replays its own strategy")
    prof = prof.with_overrides(url=url, latency_budget_ms=latency_budget_ms, latency_percentile=latency_percentile,
                               search_strategy=search, input_data=input_data and str(input_data),
                               batch_size=batch_size)
    prof = prof.with_connection(ssl=ssl, root_certificates=root_certificates, private_key=private_key,
                                certificate_chain=certificate_chain, headers=_headers(header))
    if no_confirm:  # this invocation only: pass it again with --resume
        from dataclasses import replace

        prof = replace(prof, search=replace(prof.search, confirm=False))
    with SweepProgress() as progress:
        outcome = run_sweep(prof, run_dir, resume=resume is not None, on_event=progress.on_event)
    from tuner.report.table import sweep_summary

    sweep_summary(outcome.summary, outcome.run_dir)


@app.command()
@cli_errors
def report(run_dir: Path = typer.Argument(..., help="a run folder written by `tuner sweep`")) -> None:
    """Re-render summary.json, the recommended config and report.html from stored results."""
    from tuner.report.outputs import report_run
    from tuner.report.table import sweep_summary

    summary = report_run(run_dir)
    sweep_summary(summary, run_dir)


# ------------------------------------------------ regression gate (issue 6) ---

def _compare_options(max_throughput_drop: str, max_latency_rise: list[str], confidence: float, run_noise: str,
                     bootstrap: int, seed: int, allow_env_mismatch: bool):
    from tuner.gate.compare import CompareOptions, parse_latency_limits, parse_pct
    from tuner.gate.errors import CompareError

    off = ("off", "none")
    drop = (None if max_throughput_drop.strip().lower() in off
            else parse_pct(max_throughput_drop, "--max-throughput-drop"))
    if [x for x in max_latency_rise if x.strip().lower() in off]:
        rise = {}
    else:
        rise = parse_latency_limits(max_latency_rise) if max_latency_rise else {"p99": 0.10}
    if not 0 < confidence < 1:
        raise CompareError(f"--confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if bootstrap < 100:
        raise CompareError(f"--bootstrap must be >= 100, got {bootstrap}")
    return CompareOptions(max_throughput_drop=drop, max_latency_rise=rise, confidence=confidence,
                          run_noise=parse_pct(run_noise, "--run-noise"), bootstrap=bootstrap, seed=seed,
                          allow_env_mismatch=allow_env_mismatch)


def _report_comparison(comparison, markdown: Optional[Path], junit: Optional[Path], json_out: Optional[Path]) -> None:
    from tuner.gate.render import render_table, write_outputs

    render_table(comparison)
    write_outputs(comparison, markdown=markdown, junit=junit, json_out=json_out)
    if comparison.regressed:
        raise typer.Exit(1)


_DROP_HELP = "throughput drop that fails a point, e.g. 5% ('off' to not gate throughput)"
_RISE_HELP = ("latency rise that fails a point, PERCENTILE=LIMIT (repeatable or comma-separated, e.g. "
              "p99=10%,p50=5%; given values replace the default p99=10%; 'off' for none)")
_NOISE_HELP = "between-run noise (relative std dev) added to the bootstrap; 0 = pure within-run bootstrap"


@app.command()
@cli_errors
def compare(
    baseline: Path = typer.Argument(..., help="baseline: run folder, results file or saved baseline file"),
    current: Path = typer.Argument(..., help="current: run folder, results file or saved baseline file"),
    max_throughput_drop: str = typer.Option("5%", help=_DROP_HELP),
    max_latency_rise: list[str] = typer.Option([], help=_RISE_HELP),
    confidence: float = typer.Option(0.95, help="confidence a regression must be significant at"),
    run_noise: str = typer.Option("3%", help=_NOISE_HELP),
    bootstrap: int = typer.Option(2000, help="bootstrap resamples"),
    seed: int = typer.Option(0, help="bootstrap seed"),
    allow_env_mismatch: bool = typer.Option(False, help="compare results from different environments anyway"),
    markdown: Optional[Path] = typer.Option(None, help="write a markdown summary here"),
    junit: Optional[Path] = typer.Option(None, help="write JUnit XML here (one testcase per point)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the comparison as JSON here"),
) -> None:
    """Compare two measurements point by point; exit 1 on a significant regression beyond the limits."""
    from tuner.gate.compare import compare_paths

    opts = _compare_options(max_throughput_drop, max_latency_rise, confidence, run_noise, bootstrap, seed,
                            allow_env_mismatch)
    _report_comparison(compare_paths(baseline, current, opts), markdown, junit, json_out)


@app.command()
@cli_errors
def check(
    profile: str = typer.Argument(..., help="profile name (profiles/<name>.toml) or path"),
    baseline: Optional[Path] = typer.Option(None, help="saved baseline (default profiles/<name>.baseline.json), "
                                            "run folder or results file"),
    url: Optional[str] = typer.Option(None, help="gRPC host:port of a running Triton (overrides the profile)"),
    metrics_url: Optional[str] = typer.Option(None, help="the server's Prometheus metrics URL (GPU names/count)"),
    config: str = typer.Option("current", help="current (the model as loaded), recommended (the baseline's "
                               "recommended config, applied and restored) or a config key of the baseline"),
    out: Optional[Path] = typer.Option(None, help="run folder (default reports/check-<profile>-<UTC time>)"),
    max_throughput_drop: str = typer.Option("5%", help=_DROP_HELP),
    max_latency_rise: list[str] = typer.Option([], help=_RISE_HELP),
    confidence: float = typer.Option(0.95, help="confidence a regression must be significant at"),
    run_noise: str = typer.Option("3%", help=_NOISE_HELP),
    bootstrap: int = typer.Option(2000, help="bootstrap resamples"),
    seed: int = typer.Option(0, help="bootstrap seed"),
    allow_env_mismatch: bool = typer.Option(False, help="compare with a baseline from another environment anyway"),
    markdown: Optional[Path] = typer.Option(None, help="write a markdown summary here"),
    junit: Optional[Path] = typer.Option(None, help="write JUnit XML here (one testcase per point)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the comparison as JSON here"),
    ssl: bool = SSL,
    root_certificates: Optional[Path] = ROOT_CERTIFICATES,
    private_key: Optional[Path] = PRIVATE_KEY,
    certificate_chain: Optional[Path] = CERTIFICATE_CHAIN,
    header: list[str] = HEADER,
    input_data: Optional[Path] = INPUT_DATA,
    batch_size: Optional[int] = BATCH_SIZE,
) -> None:
    """Measure the profile's config at the baseline's load levels and compare (the CI gate)."""
    from tuner.gate.baseline import default_path
    from tuner.gate.check import run_check
    from tuner.profile import load_profile

    opts = _compare_options(max_throughput_drop, max_latency_rise, confidence, run_noise, bootstrap, seed,
                            allow_env_mismatch)
    prof = load_profile(profile).with_overrides(url=url, input_data=input_data and str(input_data),
                                                batch_size=batch_size)
    prof = prof.with_connection(ssl=ssl, root_certificates=root_certificates, private_key=private_key,
                                certificate_chain=certificate_chain, headers=_headers(header))
    base = baseline if baseline is not None else default_path(profile if prof.path is None else str(prof.path))
    run_dir = _run_dir(out, f"check-{prof.name}")

    def on_point(m) -> None:
        s = m.summary()
        typer.echo(f"concurrency {m.concurrency}: {s.throughput_infer_per_s:.1f} infer/s, "
                   f"p99 {s.latency_ms['p99']:.2f} ms, errors {s.errors}")

    outcome = run_check(prof, base, run_dir, config=config, options=opts, metrics_url=metrics_url,
                        on_point=on_point)
    typer.echo(f"checked {outcome.config_key} in {outcome.duration_s:.0f} s; run folder {outcome.run_dir}")
    _report_comparison(outcome.comparison, markdown, junit, json_out)


baseline_app = typer.Typer(no_args_is_help=True, help="Save and show baselines for `tuner check`.")
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("save")
@cli_errors
def baseline_save(
    run_dir: Path = typer.Argument(..., help="a run folder (tuner sweep, measure or check)"),
    profile: str = typer.Option(..., help="profile name (or path) the baseline belongs to"),
    out: Optional[Path] = typer.Option(None, help="baseline file (default profiles/<name>.baseline.json)"),
    all_candidates: bool = typer.Option(False, help="keep every candidate, not only the original and recommended"),
    max_samples: int = typer.Option(1000, help="latency samples kept per load point"),
) -> None:
    """Store a run's original and recommended configs' points as a committed baseline."""
    from tuner.gate.baseline import save_baseline

    path = save_baseline(run_dir, profile, out, all_candidates=all_candidates, max_samples=max_samples)
    typer.echo(f"baseline: {path} ({path.stat().st_size // 1024} KiB)")


@baseline_app.command("show")
@cli_errors
def baseline_show(file: Path = typer.Argument(..., help="a baseline file")) -> None:
    """Print a saved baseline: its environment and every stored point."""
    from tuner.gate.baseline import show_baseline

    show_baseline(file)


# ------------------------------------------------------ capacity plan (issue 5) ---

@app.command()
@cli_errors
def plan(
    run_dir: Path = typer.Argument(..., help="a run folder written by `tuner sweep`"),
    target_rps: float = typer.Option(..., "--target-rps", help="the load to serve, inferences per second"),
    headroom: float = typer.Option(0.3, help="fraction of each replica's capacity kept free (0 <= h < 1)"),
    cost_per_gpu_hour: Optional[float] = typer.Option(None, help="price of one replica (server/GPU) per hour"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the plan as JSON here"),
) -> None:
    """Replicas of the recommended config needed for a target load, from stored results alone."""
    import json

    from tuner.search.plan import check_inputs, make_plan, print_plan
    from tuner.results.store import write_atomic

    try:
        check_inputs(target_rps, headroom, cost_per_gpu_hour)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    result = make_plan(run_dir, target_rps, headroom, cost_per_gpu_hour)
    print_plan(result)
    if json_out is not None:
        write_atomic(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
    if not result.feasible:
        raise typer.Exit(1)


# ------------------------------------- profiles and data (issue 14) ---

app.command("init")(cli_errors(cli_inputs.init_command))
app.command("export")(cli_errors(cli_inputs.export_command))


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
