"""The command line's input, traffic, init and export parts (registered on the app by `cli.py`).

Option parsing for what requests carry (`--input-data`, `--shape`,
`--batch-size`) and how they are timed (`--request-rate` lists and
FROM:TO:STEP ranges, `--ramp`, `--request-intervals`), and the `init` and
`export` commands. Library errors pass through to `cli.cli_errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

INPUT_DATA_HELP = ("input data: a perf_analyzer-format JSON file or a folder of .npy/.npz files "
                   "(entries used in order, cycled)")
BATCH_SIZE_HELP = "items per request (client-side batch; needs max_batch_size > 0); throughput counts items"
SEQUENCE_LENGTH_HELP = ("a sequence (stateful) model: requests per sequence (default 8); --concurrency then "
                        "counts concurrent sequences")
SHAPE_HELP = ("shape of an input, NAME=D1,D2; repeat a NAME with @WEIGHT for a weighted mix, "
              "e.g. --shape INPUT0=128@2 --shape INPUT0=256@1")

REQUEST_RATE = typer.Option(None, help="open-loop request rates (requests/s): 100,400 (one point each), or "
                                       "FROM:TO:STEP, a step schedule: each rate held for one window")
RAMP = typer.Option(False, "--ramp", help="with --request-rate FROM:TO:STEP: raise the rate linearly instead")
REQUEST_INTERVALS = typer.Option(None, help="replay a file of intervals between sends (microseconds, one a "
                                            "line), looped")


def input_spec(data: str, shape: list[str], input_data: Optional[Path], batch_size: Optional[int],
               sequence_length: Optional[int] = None):
    """`--data`, `--shape`, `--input-data`, `--batch-size` (None: 1), `--sequence-length` (None: the
    default of a sequence model) as an InputSpec."""
    from tuner.load.inputs import InputSpec, parse_shape_option

    try:
        shapes = parse_shape_option(shape)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    batch_size = 1 if batch_size is None else batch_size
    if batch_size < 1:
        raise typer.BadParameter("--batch-size takes a count >= 1")
    if input_data is not None and not input_data.exists():
        raise typer.BadParameter(f"--input-data {input_data}: no such file or folder")
    if sequence_length is not None and sequence_length < 1:
        raise typer.BadParameter("--sequence-length takes a count of requests per sequence >= 1")
    return InputSpec(data=data, data_path=input_data, shapes=shapes, batch_size=batch_size,
                     sequence_length=sequence_length or 0)


def rates_and_traffic(request_rate: Optional[str], request_intervals: Optional[Path], ramp: bool):
    """(steady rates, traffic shape or None) from `--request-rate`, `--request-intervals`, `--ramp`."""
    from tuner.load.traffic import Traffic, parse_rate_range, read_intervals

    if request_intervals is not None:
        if request_rate is not None or ramp:
            raise typer.BadParameter("--request-intervals replays its own timing: leave out --request-rate / --ramp")
        return [], read_intervals(request_intervals)
    if request_rate is None:
        if ramp:
            raise typer.BadParameter("--ramp needs --request-rate FROM:TO:STEP")
        return [], None
    try:
        steps = parse_rate_range(request_rate)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    if steps is not None:
        return [], Traffic("ramp" if ramp else "step", rates=steps)
    if ramp:
        raise typer.BadParameter("--ramp needs --request-rate FROM:TO:STEP")
    try:
        values = [float(x) for x in request_rate.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter("--request-rate takes comma-separated numbers (100,400) or "
                                 "FROM:TO:STEP (100:1000:100)") from None
    if not values or any(not v > 0 for v in values):
        raise typer.BadParameter("--request-rate needs rates > 0")
    return values, None


def sweep_profile(profile: Optional[str], model: Optional[str], resume: Optional[Path], out: Optional[Path],
                  connection) -> tuple:
    """(the profile, the run folder) of `tuner sweep`: a resumed run's, a profile file's, or the
    profile `tuner init` would write for `--model` (with `--url`, or a bundled model)."""
    from tuner.profile import load_profile
    from tuner.profile_init import default_profile
    from tuner.sweep import new_run_dir, resume_profile

    if resume is not None:
        return resume_profile(resume), resume
    if profile is not None and model is not None:
        raise typer.BadParameter("give a profile or --model, not both")
    if profile is None and model is None:
        raise typer.BadParameter("give a profile name (e.g. `tuner sweep resnet`), --model M (with --url U for "
                                 "a running Triton), or --resume RUN_DIR")
    prof = load_profile(profile) if profile is not None else default_profile(model, connection)
    return prof, new_run_dir(prof.name, out)


def init_command(
    model: str = typer.Argument(..., help="model name (a bundled model when no --url is given)"),
    url: Optional[str] = typer.Option(None, help="gRPC host:port of a running Triton (default: the embedded one)"),
    out: Optional[Path] = typer.Option(None, help="profile file to write (default profiles/<MODEL>.toml)"),
    force: bool = typer.Option(False, "--force", help="replace the file if it exists"),
) -> None:
    """Write a profile from the live model's config: search space, placeholders to edit."""
    from tuner.profile_init import write_profile

    path = write_profile(model, url=url, out=out, force=force)
    typer.echo(f"profile: {path} (edit the placeholders: latency budget, shapes of variable inputs; "
               f"then `tuner sweep {path}`)")


def export_command(
    run_dir: Path = typer.Argument(..., help="a run folder (sweep, measure or check)"),
    csv_out: Path = typer.Option(..., "--csv", help="CSV file to write, in perf_analyzer's columns"),
    candidate: Optional[str] = typer.Option(None, help="only this candidate's points (default: all)"),
) -> None:
    """Write a run's load points as perf_analyzer's CSV (microseconds), tuner's columns after them."""
    from tuner.errors import StoreError
    from tuner.results.frame import export_csv

    if not (Path(run_dir) / "results.jsonl").exists() and not Path(run_dir).is_file():
        raise StoreError(f"{run_dir} has no results.jsonl: give a run folder written by tuner")
    try:
        n = export_csv(run_dir, csv_out, candidate)
    except ValueError as err:
        raise StoreError(str(err)) from None
    typer.echo(f"csv: {csv_out} ({n} points)")
