"""Pre-flight validation (tuner/config/validate*.py): the rules Triton applies to a config alone.

tests/configs/invalid/ holds one small config per rule, each breaking exactly
that rule; its header says what the refusal must say (`# expect:` a regex)
and where it must point (`# at:` the text found at the reported line:col).
Every file there was loaded into the embedded Triton 2.51 while writing these
rules and refused for the same reason, except where that needs a backend or a
GPU the embedded server lacks. Pure tests, except the two sweeps at the end.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.config import (CandidateSpec, check_tunable, make_candidate, parse_config, read_config, read_config_text,
                          refusals)
from tuner.config.locate import FieldPositions
from tuner.config.validate import completed_platform_backend
from tuner.errors import ConfigError

from .conftest import write_profile

CONFIGS = Path(__file__).parent / "configs"
INVALID = sorted((CONFIGS / "invalid").glob("*.pbtxt"))

PY_IO = ('input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
         'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]\n')
PY = 'name: "m" backend: "python" max_batch_size: 8\n' + PY_IO + 'instance_group [ { count: 1, kind: KIND_CPU } ]\n'


def header(text: str, key: str) -> str:
    return re.search(rf"^# {key}: (.*)$", text, re.M).group(1)


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes them by default
    except TypeError:
        return CliRunner()


# ------------------------------------------------------- the invalid corpus ---

@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_each_broken_config_is_refused_with_its_rule_at_its_field(path):
    text = path.read_text()
    assert len(list(refusals(parse_config(text)))) == 1, "a corpus config breaks exactly one rule"
    with pytest.raises(ConfigError) as exc:
        read_config(path)
    msg = str(exc.value)
    m = re.match(re.escape(str(path)) + r":(\d+):(\d+): ", msg)
    assert m, f"no path:line:col in {msg!r}"
    line, col = int(m.group(1)), int(m.group(2))
    assert text.splitlines()[line - 1][col - 1:].startswith(header(text, "at")), (line, col, msg)
    assert re.search(header(text, "expect"), msg), msg
    assert "Triton" in msg and "\n" not in msg


# One file per rule class the issue lists, and per rule family Triton's code states.
RULE_CLASSES = {
    "max_batch_size negative": ["max_batch_size_negative"],
    "input/output without data_type": ["input_no_data_type", "output_no_data_type"],
    "reshape element count": ["reshape_element_count"],
    "variable dims in a reshape": ["reshape_variable_dim_count", "reshape_variable_dim_moved"],
    "preserve_ordering with DELAY": ["preserve_ordering_delay_default", "preserve_ordering_delay_priority_policy"],
    "priority levels out of range or inconsistent": ["default_priority_level_out_of_range",
                                                     "default_priority_level_missing",
                                                     "preserve_ordering_priority_levels"],
    "policy for a level that does not exist": ["priority_policy_unknown_level"],
    "KIND_CPU with gpus": ["instance_cpu_with_gpus", "instance_model_with_gpus"],
    "negative GPU id": ["instance_gpu_negative_id", "instance_auto_gpu_negative_id"],
    "platform/backend mismatch": ["platform_backend_mismatch", "platform_backend_mismatch_filled",
                                  "platform_unknown", "ensemble_with_backend"],
    "runtime escapes the backend dir": ["runtime_escapes_backend_dir"],
    "ensemble_scheduling without platform ensemble": ["ensemble_scheduling_not_ensemble"],
    "batch input/output source count": ["batch_input_source_count", "batch_output_source_count"],
    "sequence batching": ["sequence_control_no_name", "sequence_corrid_data_type", "sequence_response_cache"],
    "ensembles": ["ensemble_no_step", "ensemble_tensor_unused", "ensemble_output_unwritten"],
    "warmup": ["warmup_variable_dim", "warmup_no_data", "warmup_batch_above_max"],
}


def test_the_corpus_covers_every_rule_class():
    have = {p.stem for p in INVALID}
    missing = {cls: [n for n in names if n not in have] for cls, names in RULE_CLASSES.items()}
    assert not any(missing.values()), missing


# ------------------------------------------------ what Triton does accept ---

ACCEPTED = {  # each loaded by the embedded Triton 2.51 (backend python) or a documented form
    "delay_without_timeout": PY + "dynamic_batching { preserve_ordering: true "
                                  "default_queue_policy { timeout_action: DELAY } }\n",
    "policies_without_levels": PY + "dynamic_batching { priority_queue_policy { key: 7 value { max_queue_size: 4 } } }\n",
    "default_level_without_levels": PY + "dynamic_batching { default_priority_level: 3 }\n",
    "reshape_across_variable_dim": PY.replace("dims: [ 16 ] } ]\noutput", "dims: [ 2, 8, -1 ] "
                                              "reshape { shape: [ 16, -1 ] } } ]\noutput"),
    "scalar_per_item": PY.replace("dims: [ 16 ] } ]\noutput", "dims: [ 1 ] reshape { shape: [ ] } } ]\noutput"),
    "reserved_platform_on_python": PY.replace('backend: "python"', 'platform: "tensorrt_plan" backend: "python"'),
    "runtime_back_into_its_folder": PY.replace('backend: "python"',
                                               'backend: "python" runtime: "../python/libtriton_python.so"'),
    "runtime_plain": PY.replace('backend: "python"', 'backend: "python" runtime: "model.py"'),
    "warmup_batch_at_max": PY + 'model_warmup [ { name: "w" batch_size: 8 inputs { key: "INPUT0" value { '
                                'data_type: TYPE_FP32 dims: [ 16 ] zero_data: true } } } ]\n',
    "warmup_batch_zero_is_skipped": PY + 'model_warmup [ { name: "w" batch_size: 0 inputs { key: "INPUT0" value { '
                                         'data_type: TYPE_FP32 dims: [ -1 ] } } } ]\n',
    "negative_count_defaults": PY.replace("count: 1", "count: -1"),
    "gpu_group_without_gpus": PY.replace("kind: KIND_CPU", "kind: KIND_GPU"),  # needs a GPU, not a rule
    "auto_kind_with_gpus": PY.replace("kind: KIND_CPU", "gpus: [ 0 ]"),
    "platform_only": 'name: "m" platform: "onnxruntime_onnx" max_batch_size: 8\n' + PY_IO,
    "backend_only": 'name: "m" backend: "tensorrt" max_batch_size: 8\n' + PY_IO,
    "tensorflow_platform": 'name: "m" platform: "tensorflow_savedmodel" max_batch_size: 8\n' + PY_IO,
    "custom_backend": 'name: "m" backend: "my_backend" max_batch_size: 8\n' + PY_IO,
    "files_decide": 'name: "m" max_batch_size: 8\n' + PY_IO,
    "max_batch_size_left_out": 'name: "m" backend: "python"\n' + PY_IO,
    "nothing_but_a_name": 'name: "m"\n',
    "trt_profiles": 'name: "m" platform: "tensorrt_plan" max_batch_size: 8\n' + PY_IO
                    + 'instance_group [ { kind: KIND_GPU gpus: [ 0 ] profile: [ "0", "1" ] } ]\n',
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_configs_triton_accepts_pass(name):
    assert list(refusals(parse_config(ACCEPTED[name]))) == []


def test_every_fixture_passes_triton_rules():
    for path in sorted(CONFIGS.glob("*.pbtxt")):
        assert list(refusals(read_config(path))) == [], path.name


@pytest.mark.parametrize("platform,backend,filename,completed", [
    ("", "", "", None),
    ("onnxruntime_onnx", "", "", ("onnxruntime_onnx", "onnxruntime")),
    ("", "pytorch", "", ("pytorch_libtorch", "pytorch")),
    ("", "", "model.plan", ("tensorrt_plan", "tensorrt")),
    ("", "", "model.savedmodel", ("tensorflow_savedmodel", "tensorflow")),
    ("", "tensorflow", "", None),
    ("", "", "model.py", ("", "python")),
    ("foo", "", "", ("foo", "")),
])
def test_platform_and_backend_as_triton_fills_them(platform, backend, filename, completed):
    cfg = parse_config(f'platform: "{platform}" backend: "{backend}" default_model_filename: "{filename}"')
    assert completed_platform_backend(cfg) == completed


# ------------------------------------------------------ positions in a file ---

POSITIONS = """# a comment
name: "m"
input [
  { name: "a" dims: [ 1, 2 ] },
  { name: "b" dims: 3 dims: 4 }
]
input { name: "c" }
dynamic_batching {
  priority_queue_policy { key: 2 value { max_queue_size: 1 } }
  preferred_batch_size: [ ]
}
"""


@pytest.mark.parametrize("path,pos", [
    (("name",), (2, 1)),
    (("input", 0), (4, 3)),
    (("input", 0, "dims", 1), (4, 26)),
    (("input", 1, "dims", 1), (5, 23)),  # `dims: 3 dims: 4`: the second one
    (("input", 2), (7, 1)),
    (("input", 1, "data_type"), (5, 3)),  # not stated: its element
    (("dynamic_batching", "priority_queue_policy", ("key", 2), "value", "max_queue_size"), (9, 42)),
    (("dynamic_batching", "priority_queue_policy", ("key", 5)), (9, 3)),
    (("dynamic_batching", "preferred_batch_size", 0), (10, 3)),  # an empty list: its name
    (("output", 0), None),
])
def test_field_positions(path, pos):
    assert FieldPositions(POSITIONS).find(path) == pos


def test_field_positions_never_fail():
    assert FieldPositions('name: "unterminated').find(("name",)) in (None, (1, 1))
    assert FieldPositions("").has("max_batch_size") is False


# ----------------------------------- tunability: right reason, right switch ---

def test_ensemble_scheduling_on_a_non_ensemble_is_triton_s_rule_not_an_ensemble():
    cfg = parse_config(PY + 'ensemble_scheduling { step [ { model_name: "a" input_map { key: "x" value: "INPUT0" } '
                       'output_map { key: "y" value: "OUTPUT0" } } ] }')
    with pytest.raises(ConfigError) as exc:
        check_tunable(cfg)
    assert "ensemble_scheduling is set but platform is not set, not 'ensemble'" in str(exc.value)
    assert "is an ensemble" not in str(exc.value)


def test_batch_input_source_count_is_triton_s_rule_not_cannot_be_batched(tmp_path):
    src = CONFIGS / "invalid" / "batch_input_source_count.pbtxt"
    for first_dim_is_batch in ([], ["--first-dim-is-batch"]):
        res = runner().invoke(app, ["candidates", str(src), *first_dim_is_batch, "--out", str(tmp_path / "o")])
        assert res.exit_code == 2
        assert "names 2 source inputs" in res.stderr and "cannot be batched" not in res.stderr
    assert not (tmp_path / "o").exists()


def test_max_batch_size_zero_names_the_switch_of_the_command(tmp_path):
    src = CONFIGS / "torchscript_unbatched.pbtxt"
    res = runner().invoke(app, ["candidates", str(src), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert re.search(re.escape(str(src)) + r":4:1: has max_batch_size 0 .*pass --first-dim-is-batch", res.stderr)
    assert "profile" not in res.stderr
    with pytest.raises(ConfigError, match=r"set first_dim_is_batch = true in the profile"):
        check_tunable(read_config(src), where="resnet")


@pytest.mark.parametrize("text,missing", [
    ('name: "m" backend: "python"\n' + PY_IO, "max_batch_size"),
    ('name: "m" backend: "python" max_batch_size: 8\n', "inputs, outputs"),
    ('name: "m" backend: "python" max_batch_size: 8\n' + PY_IO.splitlines()[0], "outputs"),
    ("", "max_batch_size, inputs, outputs"),
])
def test_config_relying_on_auto_complete_says_so_and_how_to_proceed(tmp_path, text, missing):
    src = tmp_path / "config.pbtxt"
    src.write_text(text)
    for flag in ([], ["--first-dim-is-batch"]):
        res = runner().invoke(app, ["candidates", str(src), *flag, "--out", str(tmp_path / "o")])
        assert res.exit_code == 2, res.stdout
        assert f"leaves {missing} out" in res.stderr and "auto-complete" in res.stderr
        assert "reads the completed config back" in res.stderr and f"set {missing} in the file" in res.stderr
        assert "cannot be batched" not in res.stderr
    assert not (tmp_path / "o").exists(), "nothing written: there is no tensor to check"


def test_read_back_config_without_text_is_not_taken_for_auto_complete():
    cfg, text = read_config_text(CONFIGS / "tensorrt_plan.pbtxt")
    check_tunable(cfg)  # no text: max_batch_size is what the server says
    check_tunable(cfg, text=text)
    with pytest.raises(ConfigError, match=r"leaves inputs, outputs out"):
        check_tunable(parse_config('name: "m" backend: "python" max_batch_size: 8'))


def test_tensorless_unbatched_config_with_first_dim_is_batch_writes_nothing(tmp_path):
    src = tmp_path / "config.pbtxt"
    src.write_text('name: "m" backend: "python" max_batch_size: 0\n')
    res = runner().invoke(app, ["candidates", str(src), "--first-dim-is-batch", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "leaves inputs, outputs out" in res.stderr
    assert not (tmp_path / "o").exists()


# -------------------------------------------- candidates are checked too ---

WARMUP8 = ('model_warmup [ { name: "zeros_batch8" batch_size: 8 inputs { key: "INPUT0" value { '
           'data_type: TYPE_FP32 dims: [ 16 ] zero_data: true } } } ]\n')


def test_candidate_below_the_warmup_batch_is_refused_naming_the_candidate():
    original = parse_config(PY + WARMUP8)
    make_candidate(original, CandidateSpec(8))
    with pytest.raises(ConfigError) as exc:
        make_candidate(original, CandidateSpec(4))
    assert str(exc.value).startswith("mbs4-qd0-pbsauto-i1: model_warmup 'zeros_batch8' has batch_size 8 but "
                                     "max_batch_size is 4")
    assert "keep max_batch_size >= 8" in str(exc.value)


def test_broken_original_is_refused_before_any_candidate():
    original = parse_config(PY.replace("max_batch_size: 8", "max_batch_size: -1"))
    with pytest.raises(ConfigError, match=r"^m: max_batch_size is -1"):
        make_candidate(original, CandidateSpec(8))


def test_preserve_ordering_survives_a_candidate():
    text = PY + "dynamic_batching { preserve_ordering: true default_queue_policy { timeout_action: REJECT " \
                "default_timeout_microseconds: 1000 } }\n"
    cand = make_candidate(parse_config(text), CandidateSpec(16, 100, (8, 16), 2))
    assert cand.dynamic_batching.preserve_ordering
    assert cand.dynamic_batching.default_queue_policy.default_timeout_microseconds == 1000


# ------------------------------------------------------------------ sweep ---

@pytest.mark.triton
@pytest.mark.timeout(240)
def test_sweep_records_a_refused_candidate_without_sending_it(remote_server, tmp_path, monkeypatch):
    from tuner.profile import load_profile
    from tuner.results.store import load_results
    from tuner.server.control import ServerControl
    from tuner.server.install import BUNDLED_MODELS_DIR
    from tuner.sweep import run_sweep

    config = tmp_path / "config.pbtxt"  # the synthetic model, warmed up with a batch of 8
    config.write_text((BUNDLED_MODELS_DIR / "synthetic" / "config.pbtxt").read_text() + WARMUP8)
    prof = load_profile(str(write_profile(tmp_path / "p.toml", url=remote_server.url, config=str(config),
                                          max_batch_size=(4, 16), concurrency=(1,), strategy="grid")))
    sent: list[int | None] = []
    load = ServerControl.load

    def spy(self, model, cfg=None):
        sent.append(None if cfg is None else cfg.max_batch_size)
        return load(self, model, cfg)

    monkeypatch.setattr(ServerControl, "load", spy)
    events = []
    outcome = run_sweep(prof, tmp_path / "run", on_event=lambda kind, **kw: events.append((kind, kw)))

    res = load_results(tmp_path / "run")
    refused = res.candidates["mbs4-qd0-pbsauto-i1"]
    assert refused.status == "failed" and not res.points_of("mbs4-qd0-pbsauto-i1")
    assert refused.reason.startswith("mbs4-qd0-pbsauto-i1: model_warmup 'zeros_batch8' has batch_size 8 but "
                                     "max_batch_size is 4")
    assert 4 not in sent, "the refused candidate reached the server"
    assert 16 in sent and res.candidates["mbs16-qd0-pbsauto-i1"].status == "loaded"
    assert ("failed", {"candidate_id": "mbs4-qd0-pbsauto-i1", "reason": refused.reason}) in events
    assert outcome.candidates_failed == 1 and outcome.candidates_measured == 1


@pytest.mark.triton
@pytest.mark.timeout(120)
def test_sweep_with_a_broken_original_aborts_with_its_line(remote_server, tmp_path):
    from tuner.profile import load_profile
    from tuner.sweep import run_sweep

    config = tmp_path / "config.pbtxt"
    config.write_text(PY.replace('name: "m"', 'name: "synthetic"')
                      + "dynamic_batching {\n  priority_levels: 2\n  default_priority_level: 4\n}\n")
    prof = load_profile(str(write_profile(tmp_path / "p.toml", url=remote_server.url, config=str(config),
                                          max_batch_size=(4,), concurrency=(1,))))
    with pytest.raises(ConfigError) as exc:
        run_sweep(prof, tmp_path / "run")
    assert str(exc.value).startswith(f"{config}:7:3: dynamic_batching default_priority_level is 4")
