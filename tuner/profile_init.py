"""`tuner init MODEL`: a profile written from the live model's config.

The model's config is read back from the server (the embedded one for a
bundled model, else `--url`); a model the server had not loaded is loaded
for the read and unloaded again. The profile that comes out validates and
sweeps as it is:

- [model]: the name, the URL when given; an input with variable dims gets a
  placeholder shape under [model.shapes] and a comment saying so;
- [search]: max_batch_size around the current value (a quarter, a half,
  the value, twice it), no higher than the model allows (its
  `max_supported_batch_size` parameter where it has one); queue delays 0,
  1000 and 4000 us (and the current one); the current instance count and
  one more; concurrency in powers of two up to twice the largest batch;
- [constraints]: a p99 budget placeholder, to edit;
- [measurement]: the defaults, written out.

`default_profile` makes the same profile in memory: `tuner sweep --url U
--model M` runs with it and keeps its text in the run folder.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from tuner import config as cfgmod
from tuner.errors import ConfigError, ProfileError
from tuner.profile import PROFILES_DIR, Profile, parse_profile
from tuner.server.connection import Connection
from tuner.server.context import open_server
from tuner.server.model_session import ModelSession

PLACEHOLDER_DIM = 64  # what a variable dim gets until the user says what their clients send
BUDGET_PLACEHOLDER_MS = 100.0
QUEUE_DELAYS_US = (0, 1000, 4000)
MAX_CONCURRENCY = 256


def live_config(model: str, url: "str | Connection | None" = None) -> cfgmod.ModelConfig:
    """The config the server serves for `model` (a bundled model on the embedded server when no url)."""
    with tempfile.TemporaryDirectory(prefix="tuner-init-") as tmp:
        with open_server(url, Path(tmp), [model] if url is None else None) as srv:
            with ModelSession(srv.control, model) as session:
                return session.original


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _batch_sizes(cfg: cfgmod.ModelConfig) -> list[int]:
    m = cfg.max_batch_size
    allowed = cfg.parameters["max_supported_batch_size"].string_value if "max_supported_batch_size" in \
        cfg.parameters else ""
    cap = int(allowed) if allowed.isdigit() and int(allowed) > 0 else 2 * m
    return sorted({v for v in (max(1, m // 4), max(1, m // 2), m, 2 * m) if 1 <= v <= max(cap, 1)})


def search_space(cfg: cfgmod.ModelConfig) -> dict:
    """The [search] values derived from the model's current config."""
    spec = cfgmod.current_spec(cfg)
    sizes = _batch_sizes(cfg)
    delays = sorted(set(QUEUE_DELAYS_US) | {spec.max_queue_delay_us})
    instances = [spec.instance_count, spec.instance_count + 1]
    top = min(MAX_CONCURRENCY, 2 * max(sizes) * max(instances))
    levels, c = [], 1
    while c <= top:
        levels.append(c)
        c *= 4 if c >= 4 else 2
    if levels[-1] != top:
        levels.append(top)
    return {"max_batch_size": sizes, "max_queue_delay_us": delays, "instance_count": instances,
            "concurrency": levels}


def _candidates(cfg: cfgmod.ModelConfig) -> set[int]:
    """The oldest strategy's max_candidate_sequences as the config has it (none with direct)."""
    mcs = cfg.sequence_batching.oldest.max_candidate_sequences
    return {mcs} if mcs > 0 else set()


def profile_text(cfg: cfgmod.ModelConfig, model: str, url: str | None = None) -> str:
    """A profile for `model`, from its config; raises ConfigError when there is nothing to tune."""
    cfgmod.check_tunable(cfg, where=model, batch_switch="write the profile by hand with [model] "
                         "first_dim_is_batch = true")
    space = search_space(cfg)
    lines = [f"# Written by `tuner init {model}` from the config the server serves "
             f"(max_batch_size {cfg.max_batch_size}).",
             "# Edit the placeholders (the latency budget; shapes of variable inputs), then `tuner sweep` it.",
             "[model]", f"name = {json.dumps(model)}"]
    if url:
        lines.append(f"url = {json.dumps(url)}")
    stateful = cfg.HasField("sequence_batching")  # tuned through the sequence batcher: [search.sequence]
    if stateful:
        lines.append("sequence_length = 8  # placeholder: the requests per sequence your clients send")
    variable = [t for t in cfg.input if any(d < 0 for d in t.dims)]
    if variable:
        lines += ["", "[model.shapes]"]
        for t in variable:
            dims = [PLACEHOLDER_DIM if d < 0 else d for d in t.dims]
            lines.append(f"# placeholder: '{t.name}' has variable dims {list(t.dims)}; give the shape your "
                         f"clients send, or a weighted mix: [{{dims = {dims}, weight = 2}}, ...]")
            lines.append(f"{_key(t.name)} = {dims}")
    batcher = ([f"max_queue_delay_us = {space['max_queue_delay_us']}", 'preferred_batch_size = "none"']
               if not stateful else [])
    sequence = ["", "[search.sequence]", 'strategy = ["direct", "oldest"]',
                f"max_candidate_sequences = {sorted({2 * max(space['max_batch_size']), *_candidates(cfg)})}",
                f"max_queue_delay_us = {space['max_queue_delay_us']}"] if stateful else []
    lines += ["", "[search]",
              f"max_batch_size = {space['max_batch_size']}",
              *batcher,
              f"instance_count = {space['instance_count']}",
              f"concurrency = {space['concurrency']}  # {'concurrent sequences' if stateful else 'requests in flight'}",
              *sequence,
              "", "[constraints]", 'latency_percentile = "p99"',
              f"latency_budget_ms = {BUDGET_PLACEHOLDER_MS}  # placeholder: your latency budget",
              "", "[objective]", 'goal = "max_throughput"',
              "", "[measurement]", "warmup_s = 1.0", "window_s = 2.0", "min_windows = 3", "max_windows = 8",
              "stability_pct = 10.0", ""]
    return "\n".join(lines)


def write_profile(model: str, *, url: str | None = None, out: Path | None = None, force: bool = False,
                  connection: Connection | None = None) -> Path:
    """`tuner init`: write profiles/MODEL.toml (or `out`) and return its path."""
    path = Path(out) if out is not None else PROFILES_DIR / f"{model}.toml"
    if path.exists() and not force:
        raise ProfileError(f"{path} already exists; pass --out FILE for another file, or --force to replace it")
    text = profile_text(live_config(model, connection or url), model, url)
    parse_profile(text, path, check_files=False)  # what is written must load
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def default_profile(model: str, connection: Connection | None = None) -> Profile:
    """The profile `tuner init` would write, in memory (for `tuner sweep --url U --model M`)."""
    if not model:
        raise ConfigError("give --model with --url (or a profile)")
    url = connection.url if connection is not None else None
    text = profile_text(live_config(model, connection), model, url)
    return parse_profile(text, Path(f"{model}.toml"), base_dir=Path.cwd())
