"""Broken config.pbtxt files: every error names the file, the line and the column, and
says what is wrong (typos, bad enums, unclosed braces, binary or non-UTF-8 bytes, bad dims)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tuner.config import check_tunable, parse_config, read_config
from tuner.errors import ConfigError

LOC = r"^{path}:(\d+):(\d+): "


def read_error(tmp_path: Path, content: str | bytes, name: str = "config.pbtxt") -> tuple[str, str]:
    p = tmp_path / name
    if isinstance(content, str):
        p.write_text(content, encoding="utf-8")
    else:
        p.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        cfg = read_config(p)
        check_tunable(cfg, where=str(p))
    return str(p), str(exc.value)


def location(path: str, msg: str) -> tuple[int, int, str]:
    m = re.match(LOC.format(path=re.escape(path)), msg)
    assert m, f"no {path}:line:col: prefix in {msg!r}"
    return int(m.group(1)), int(m.group(2)), msg[m.end():]


def test_typo_in_field_name(tmp_path):
    path, msg = read_error(tmp_path, 'name: "resnet"\nplatform: "onnxruntime_onnx"\nmax_batch_sze: 8\n')
    line, col, rest = location(path, msg)
    assert (line, col) == (3, 1)
    assert 'no field named "max_batch_sze"' in rest


def test_bad_enum(tmp_path):
    text = (
        'name: "m"\n'
        "max_batch_size: 8\n"
        "input [\n"
        "  {\n"
        '    name: "x"\n'
        "    data_type: TYPE_FLOAT32\n"
        "    dims: [ 3 ]\n"
        "  }\n"
        "]\n"
    )
    path, msg = read_error(tmp_path, text)
    line, col, rest = location(path, msg)
    assert (line, col) == (6, 16)  # the value
    assert "TYPE_FLOAT32" in rest and "DataType" in rest


def test_unclosed_brace(tmp_path):
    # protobuf reports the end of input at the last token it read
    text = 'name: "m"\nmax_batch_size: 8\ndynamic_batching {\n  max_queue_delay_microseconds: 100\n'
    path, msg = read_error(tmp_path, text)
    line, col, rest = location(path, msg)
    assert (line, col) == (4, 33)
    assert 'Expected "}"' in rest


def test_unclosed_list(tmp_path):
    text = (
        'name: "m"\nmax_batch_size: 8\ninput [\n  {\n    name: "x"\n'
        "    data_type: TYPE_FP32\n    dims: [ 3 ]\n  }\n"
    )
    path, msg = read_error(tmp_path, text)
    line, col, rest = location(path, msg)
    assert (line, col) == (9, 1)
    assert "Expected" in rest


def test_binary_garbage_that_is_valid_utf8(tmp_path):
    path, msg = read_error(tmp_path, b'name: "m"\nmax_batch_size: 8\x00\x01\x02\x7f garbage\n')
    line, col, _ = location(path, msg)
    assert (line, col) == (2, 18)


def test_non_utf8_file_is_refused_saying_why(tmp_path):
    path, msg = read_error(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert msg.startswith(path + ":")
    assert "UTF-8" in msg


def test_non_utf8_file_error_has_line_and_col(tmp_path):
    # a config saved as Latin-1: the bad byte is the 'é' on line 3
    text = (
        'name: "classifier"\n'
        'platform: "onnxruntime_onnx"\n'
        'parameters { key: "note" value { string_value: "caf\xe9" } }\n'
    ).encode("latin-1")
    path, msg = read_error(tmp_path, text)
    line, col, rest = location(path, msg)
    assert (line, col) == (3, 52)
    assert "UTF-8" in rest

    path, msg = read_error(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", name="png.pbtxt")
    assert location(path, msg)[:2] == (1, 1)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no such file"):
        read_config(tmp_path / "nope" / "config.pbtxt")


BAD_DIMS = (
    'name: "m"\n'
    "max_batch_size: 8\n"
    "input [\n"
    "  {\n"
    '    name: "x"\n'
    "    data_type: TYPE_FP32\n"
    "    dims: [ 3, {dim} ]\n"
    "  }\n"
    "]\n"
)


@pytest.mark.parametrize("dim", [0, -2])
def test_bad_dims_are_refused_naming_tensor_and_dim(tmp_path, dim):
    path, msg = read_error(tmp_path, BAD_DIMS.replace("{dim}", str(dim)))
    assert msg.startswith(path + ":")
    assert f"input 'x' has dim {dim}" in msg


@pytest.mark.parametrize("dim", [0, -2])
def test_bad_dims_error_has_line_and_col(tmp_path, dim):
    path, msg = read_error(tmp_path, BAD_DIMS.replace("{dim}", str(dim)))
    line, col, rest = location(path, msg)
    assert line == 7
    assert col in (5, 16), "the dims field (col 5) or the bad value (col 16)"
    assert "'x'" in rest and str(dim) in rest


def test_bad_reshape_dims_are_refused():
    cfg = parse_config(
        'name: "m" max_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape { shape: [ 2, 0 ] } } ]\n'
    )
    with pytest.raises(ConfigError, match=r"input 'x' reshape has dim 0"):
        check_tunable(cfg)
