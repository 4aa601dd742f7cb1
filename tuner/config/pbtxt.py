"""config.pbtxt through protobuf: parse, write, JSON for the load API, diff.

Everything goes through `model_config_pb2.ModelConfig` and protobuf's
`text_format`; config.pbtxt is never parsed by hand. Errors carry
`path:line:col` (protobuf's own positions, or, for a rule of Triton's the
file breaks, the position of the field: `validate.py`, `locate.py`).
"""

from __future__ import annotations

import difflib
import re
import json
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from tuner.config.locate import Where
from tuner.config.validate import check_config
from tuner.errors import ConfigError

ModelConfig = mc.ModelConfig


def parse_config(text: str, source: str = "config.pbtxt") -> ModelConfig:
    """Parse config.pbtxt text; errors read `source:line:col: message`."""
    cfg = ModelConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as err:
        line, col = err.GetLine(), err.GetColumn()
        msg = str(err)
        # protobuf prefixes the message with "line:col : "; keep only the reason.
        msg = re.sub(r"^\d+:\d+\s*:\s*", "", msg)
        if line is None:
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}:{line}:{col}: {msg}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{source}: cannot parse: {err}") from None
    return cfg


def read_config(path: str | Path) -> ModelConfig:
    """Parse a config.pbtxt file and check it with Triton's own rules (`validate.py`)."""
    return read_config_text(path)[0]


def read_config_text(path: str | Path) -> tuple[ModelConfig, str]:
    """`read_config`, and the file's text (for checks that name a field by its line)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; pass the path of the model's config.pbtxt") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        before = data[: err.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1
        raise ConfigError(
            f"{path}:{line}:{col}: not UTF-8 text (byte 0x{data[err.start]:02x}); "
            "config.pbtxt must be protobuf text format in UTF-8"
        ) from None
    cfg = parse_config(text, str(path))
    check_config(cfg, Where(str(path), text))
    return cfg, text


def format_config(cfg: ModelConfig) -> str:
    return text_format.MessageToString(cfg, use_short_repeated_primitives=True)


def config_to_json(cfg: ModelConfig) -> str:
    """The JSON form Triton's load API takes as a config override."""
    return json_format.MessageToJson(cfg, preserving_proto_field_name=True, indent=None)


def config_from_json(text: str | dict) -> ModelConfig:
    cfg = ModelConfig()
    if isinstance(text, dict):
        text = json.dumps(text)
    json_format.Parse(text, cfg, ignore_unknown_fields=True)
    return cfg


def copy_config(cfg: ModelConfig) -> ModelConfig:
    out = ModelConfig()
    out.CopyFrom(cfg)
    return out


def diff_configs(original: ModelConfig, changed: ModelConfig, a_name: str = "original/config.pbtxt",
                 b_name: str = "recommended/config.pbtxt") -> str:
    a = format_config(original).splitlines(keepends=True)
    b = format_config(changed).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=a_name, tofile=b_name))
