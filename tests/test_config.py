"""tuner.config and `tuner candidates`: parse, rewrite, validate, diff (no server).

The fixtures in tests/configs/ are realistic Triton config.pbtxt files; every
tunable one goes through make_candidate and must come out with only the tuned
fields changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonclient.grpc import model_config_pb2 as mc

from tuner import config as cfgmod
from tuner.cli import app
from tuner.config import (CandidateSpec, ModelConfig, check_kind, check_tunable, config_from_json, config_to_json,
                          copy_config, diff_configs, format_config, make_candidate, parse_config, read_config,
                          validate_spec)
from tuner.errors import ConfigError

CONFIGS = Path(__file__).parent / "configs"

TUNABLE = [
    "image_classifier_onnx",
    "tensorrt_plan",
    "warmup_priority",
    "onnx_variable_length",
    "python_decoupled",
    "string_tokenizer",
]
UNBATCHED = "torchscript_unbatched"
REFUSED = {
    "ensemble": r"ensemble.*composing model",
}

SPECS = [
    CandidateSpec(max_batch_size=8),
    CandidateSpec(max_batch_size=16, max_queue_delay_us=500, preferred_batch_size=(8, 16), instance_count=2),
    CandidateSpec(max_batch_size=64, max_queue_delay_us=100, preferred_batch_size=(4,), instance_count=3),
    CandidateSpec(max_batch_size=1, max_queue_delay_us=0, preferred_batch_size=(1,), instance_count=1),
]
SPEC_IDS = [s.candidate_id for s in SPECS]


def load(name: str) -> ModelConfig:
    return read_config(CONFIGS / f"{name}.pbtxt")


# Fixtures whose warmup batch a smaller max_batch_size cannot run: Triton refuses such a candidate.
WARMUP_BATCH = {"warmup_priority": 8}


def refused_below_warmup(name: str, spec: CandidateSpec) -> bool:
    """True (after checking the refusal) when `spec` is below the fixture's warmup batch."""
    if spec.max_batch_size >= WARMUP_BATCH.get(name, 0):
        return False
    with pytest.raises(ConfigError, match=rf"model_warmup '\w+' has batch_size {WARMUP_BATCH[name]}"):
        make_candidate(load(name), spec)
    return True


def strip_tuned(cfg: ModelConfig, *, added_group: bool) -> ModelConfig:
    """A copy of `cfg` with the tuned fields cleared.

    added_group: the original had no instance_group, so make_candidate added
    one that must carry nothing but its count; drop it.
    """
    out = copy_config(cfg)
    out.ClearField("max_batch_size")
    if out.HasField("dynamic_batching"):
        out.dynamic_batching.ClearField("max_queue_delay_microseconds")
        out.dynamic_batching.ClearField("preferred_batch_size")
        if out.dynamic_batching.ByteSize() == 0:
            out.ClearField("dynamic_batching")
    for g in out.instance_group:
        g.ClearField("count")
    if added_group:
        assert len(out.instance_group) == 1 and out.instance_group[0].ByteSize() == 0, out.instance_group
        out.ClearField("instance_group")
    return out


def assert_tuned(cand: ModelConfig, spec: CandidateSpec) -> None:
    assert cand.max_batch_size == spec.max_batch_size
    assert cand.HasField("dynamic_batching") == spec.dynamic_batching
    if spec.dynamic_batching:
        assert cand.dynamic_batching.max_queue_delay_microseconds == spec.max_queue_delay_us
        assert tuple(cand.dynamic_batching.preferred_batch_size) == spec.preferred_batch_size
    assert cand.instance_group, "a candidate always states its instance count"
    assert [g.count for g in cand.instance_group] == [spec.instance_count] * len(cand.instance_group)


# ------------------------------------------------------------- fixtures ---

def test_every_fixture_parses_and_has_the_features_it_is_for():
    cfgs = {p.stem: read_config(p) for p in sorted(CONFIGS.glob("*.pbtxt"))}
    assert set(TUNABLE) | {UNBATCHED} | set(REFUSED) <= set(cfgs)

    ic = cfgs["image_classifier_onnx"]
    assert ic.platform == "onnxruntime_onnx"
    assert ic.input[0].format == ModelConfig().input.add().FORMAT_NHWC
    assert ic.output[0].label_filename == "imagenet_labels.txt"
    assert ic.response_cache.enable
    assert list(ic.instance_group[0].gpus) == [0]

    trt = cfgs["tensorrt_plan"]
    assert trt.platform == "tensorrt_plan"
    assert list(trt.version_policy.specific.versions) == [1, 3]
    assert trt.optimization.cuda.graphs
    assert len(trt.instance_group) == 2

    wp = cfgs["warmup_priority"]
    assert wp.backend == "onnxruntime"
    assert [w.name for w in wp.model_warmup] == ["zeros_batch8", "random_batch1"]
    assert wp.dynamic_batching.priority_levels == 2
    assert wp.dynamic_batching.default_priority_level == 2
    assert wp.dynamic_batching.default_queue_policy.max_queue_size == 256
    assert wp.dynamic_batching.priority_queue_policy[1].max_queue_size == 64

    ts = cfgs[UNBATCHED]
    assert ts.platform == "pytorch_libtorch" and ts.max_batch_size == 0
    assert [t.name for t in ts.input] == ["INPUT__0"] and [t.name for t in ts.output] == ["OUTPUT__0"]
    assert all(t.dims[0] == -1 for t in list(ts.input) + list(ts.output))

    vl = cfgs["onnx_variable_length"]
    assert [t.optional for t in vl.input] == [False, False, True, True]
    assert vl.input[3].HasField("reshape") and list(vl.input[3].reshape.shape) == []

    assert cfgs["python_decoupled"].model_transaction_policy.decoupled
    assert cfgs["string_tokenizer"].input[0].data_type == mc.TYPE_STRING
    assert cfgs["string_tokenizer"].parameters["vocab"].string_value == "vocab-été.txt"
    assert len(cfgs["sequence_model"].sequence_batching.control_input) == 4
    assert len(cfgs["ensemble"].ensemble_scheduling.step) == 2


# ------------------------------------------------------------ candidates ---

@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("name", TUNABLE)
def test_candidate_changes_only_the_tuned_fields(name, spec):
    if refused_below_warmup(name, spec):
        return
    original = load(name)
    before = copy_config(original)
    cand = make_candidate(original, spec)

    assert original == before, "make_candidate must not modify its input"
    assert_tuned(cand, spec)
    added = not original.instance_group
    assert strip_tuned(cand, added_group=added) == strip_tuned(original, added_group=False)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("name", TUNABLE)
def test_candidate_round_trips_through_text_and_json(name, spec):
    if refused_below_warmup(name, spec):
        return
    cand = make_candidate(load(name), spec)
    assert parse_config(format_config(cand)) == cand
    assert config_from_json(config_to_json(cand)) == cand
    # what `tuner candidates` writes is what read_config reads back
    assert parse_config(format_config(parse_config(format_config(cand)))) == cand


def test_candidate_keeps_priority_queues_and_warmup():
    original = load("warmup_priority")
    cand = make_candidate(original, SPECS[1])
    db = cand.dynamic_batching
    assert db.priority_levels == 2 and db.default_priority_level == 2
    assert db.preserve_ordering == original.dynamic_batching.preserve_ordering
    assert db.default_queue_policy == original.dynamic_batching.default_queue_policy
    assert dict(db.priority_queue_policy) == dict(original.dynamic_batching.priority_queue_policy)
    assert list(cand.model_warmup) == list(original.model_warmup)


def test_candidate_adds_dynamic_batching_and_instance_group_when_absent():
    original = load("string_tokenizer")
    assert not original.HasField("dynamic_batching")
    cand = make_candidate(original, CandidateSpec(32))  # delay 0, no preferred sizes: all defaults
    assert cand.HasField("dynamic_batching"), "dynamic batching must be switched on even with defaults"
    assert "dynamic_batching {" in format_config(cand)
    assert '"dynamic_batching": {}' in config_to_json(cand)

    original = load("python_decoupled")
    original.ClearField("instance_group")
    cand = make_candidate(original, CandidateSpec(8, instance_count=3))
    assert [g.count for g in cand.instance_group] == [3]


def test_candidate_without_dynamic_batching_removes_it_and_nothing_else():
    original = load("warmup_priority")
    spec = CandidateSpec(16, instance_count=2, dynamic_batching=False)
    cand = make_candidate(original, spec)
    assert_tuned(cand, spec)
    expected = strip_tuned(original, added_group=False)
    expected.ClearField("dynamic_batching")
    assert strip_tuned(cand, added_group=False) == expected


def test_candidate_spec_dict_round_trip():
    for spec in SPECS + [CandidateSpec(4, dynamic_batching=False)]:
        assert CandidateSpec.from_dict(spec.to_dict()) == spec
    assert SPECS[1].candidate_id == "mbs16-qd500-pbs8_16-i2"


# ---------------------------------------------- max_batch_size 0 models ---

def test_unbatched_model_is_refused_without_first_dim_is_batch():
    original = load(UNBATCHED)
    with pytest.raises(ConfigError, match=r"max_batch_size 0.*first_dim_is_batch"):
        check_tunable(original)
    with pytest.raises(ConfigError, match=r"max_batch_size 0.*first_dim_is_batch"):
        make_candidate(original, SPECS[1])


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_unbatched_model_with_first_dim_is_batch_drops_the_batch_dim(spec):
    original = load(UNBATCHED)
    check_tunable(original, first_dim_is_batch=True)
    cand = make_candidate(original, spec, first_dim_is_batch=True)
    assert_tuned(cand, spec)
    assert [list(t.dims) for t in cand.input] == [[3, 224, 224]]
    assert [list(t.dims) for t in cand.output] == [[1000]]
    # everything else survives
    a, b = strip_tuned(cand, added_group=False), strip_tuned(original, added_group=False)
    for t in list(a.input) + list(a.output) + list(b.input) + list(b.output):
        t.ClearField("dims")
    assert a == b
    assert parse_config(format_config(cand)) == cand


def test_first_dim_is_batch_needs_a_variable_first_dim():
    cfg = parse_config(
        'name: "m" max_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4, 3 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]\n'
    )
    with pytest.raises(ConfigError, match=r"first dim to be -1.*'x' has dims \[4, 3\]"):
        check_tunable(cfg, first_dim_is_batch=True)


def test_unbatched_one_dim_tensor_does_not_become_dimensionless():
    # dims [-1] with the batch dim removed leaves dims []; Triton refuses that
    # ("model input 'x' must specify 'dims'"); per-item scalars are written
    # dims [1] with reshape { shape: [] }.
    cfg = parse_config(
        'name: "m" max_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]\n'
    )
    try:
        cand = make_candidate(cfg, CandidateSpec(8), first_dim_is_batch=True)
    except ConfigError as err:  # refusing, saying which tensor, is fine too
        assert "'x'" in str(err)
        return
    x = cand.input[0]
    assert list(x.dims) == [1], "x has no dims left: Triton refuses to load this candidate"
    assert x.HasField("reshape") and list(x.reshape.shape) == [], "the model still sees [batch]"
    assert list(cand.output[0].dims) == [3]


def test_unbatched_reshape_drops_the_batch_dim_too():
    # Without batching, dims and reshape both include the batch dim; with it,
    # neither does. Keeping reshape [-1, 2, 2] against dims [4] makes Triton
    # refuse: "has different size for dims and reshape".
    cfg = parse_config(
        'name: "m" max_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 4 ] reshape { shape: [ -1, 2, 2 ] } } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]\n'
    )
    cand = make_candidate(cfg, CandidateSpec(8), first_dim_is_batch=True)
    assert list(cand.input[0].dims) == [4]
    assert list(cand.input[0].reshape.shape) == [2, 2]


# -------------------------------------------------------- refused models ---

@pytest.mark.parametrize("name,why", sorted(REFUSED.items()))
def test_untunable_models_are_refused_with_the_reason(name, why):
    original = load(name)
    for first_dim_is_batch in (False, True):
        with pytest.raises(ConfigError, match=why) as exc:
            check_tunable(original, first_dim_is_batch=first_dim_is_batch)
        assert original.name in str(exc.value)
        with pytest.raises(ConfigError, match=why):
            make_candidate(original, SPECS[1], first_dim_is_batch=first_dim_is_batch)


def test_sequence_model_refuses_dynamic_batching_candidates():
    # a stateful model is tuned through the sequence batcher (tests/test_sequence.py), never the dynamic one
    check_tunable(load("sequence_model"))
    with pytest.raises(ConfigError, match=r"^models/x/config\.pbtxt: uses sequence_batching.*\[search\.sequence\]"):
        check_kind(load("sequence_model"), False, "models/x/config.pbtxt")
    with pytest.raises(ConfigError, match=r"uses sequence_batching"):
        make_candidate(load("sequence_model"), SPECS[1])


# --------------------------------------------------------- invalid specs ---

@pytest.mark.parametrize(
    "spec,why",
    [
        (CandidateSpec(16, preferred_batch_size=(8, 32)), r"preferred batch size 32 .*max_batch_size 16"),
        (CandidateSpec(16, preferred_batch_size=(0,)), r"preferred batch size 0"),
        (CandidateSpec(0), r"max_batch_size must be >= 1, got 0"),
        (CandidateSpec(-4), r"max_batch_size must be >= 1, got -4"),
        (CandidateSpec(8, max_queue_delay_us=-1), r"max_queue_delay_us must be >= 0, got -1"),
        (CandidateSpec(8, instance_count=0), r"instance count must be >= 1, got 0"),
    ],
    ids=["preferred>mbs", "preferred0", "mbs0", "mbs-neg", "delay-neg", "instances0"],
)
def test_invalid_specs_are_refused(spec, why):
    with pytest.raises(ConfigError, match=why):
        validate_spec(spec)
    with pytest.raises(ConfigError, match=why) as exc:
        make_candidate(load("image_classifier_onnx"), spec)
    assert str(exc.value).startswith(spec.candidate_id + ": ")


def test_unknown_preferred_rule_is_refused():
    with pytest.raises(ConfigError, match=r"unknown preferred_batch_size rule 'double'.*none, max, halves"):
        cfgmod.expand_specs([8], [0], [1], "double")


# ------------------------------------------------------------------ diff ---

TUNED_LINE = re.compile(
    r"^[-+]\s*("
    r"max_batch_size: \d+"
    r"|preferred_batch_size: (\[[\d, ]*\]|\d+)"
    r"|max_queue_delay_microseconds: \d+"
    r"|count: \d+"
    r"|(dynamic_batching|instance_group) \{"
    r"|\}"
    r")$"
)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("name", TUNABLE + [UNBATCHED])
def test_diff_shows_only_tuned_lines(name, spec):
    if refused_below_warmup(name, spec):
        return
    original = load(name)
    fdb = name == UNBATCHED
    cand = make_candidate(original, spec, first_dim_is_batch=fdb)
    diff = diff_configs(original, cand)
    if cand == original:
        assert diff == ""
        return
    assert diff.startswith("--- original/config.pbtxt\n+++ recommended/config.pbtxt\n")
    changed = [ln for ln in diff.splitlines()[2:] if ln[:1] in "-+"]
    assert changed
    allowed = TUNED_LINE if not fdb else re.compile(TUNED_LINE.pattern + r"|^[-+]\s*dims: \[[-\d, ]*\]$")
    bad = [ln for ln in changed if not allowed.match(ln)]
    assert not bad, "untuned lines changed:\n" + "\n".join(bad) + "\n\nfull diff:\n" + diff
    if spec.max_batch_size != original.max_batch_size:
        if original.max_batch_size:  # 0 is the default, never written
            assert f"-max_batch_size: {original.max_batch_size}" in changed
        assert f"+max_batch_size: {spec.max_batch_size}" in changed


def test_diff_of_identical_configs_is_empty():
    cfg = load("tensorrt_plan")
    assert diff_configs(cfg, copy_config(cfg)) == ""


def test_diff_in_a_long_config_stays_local():
    # difflib treats lines that fill >1% of a 200+ line file as junk; the diff
    # must still show only the tuned lines.
    inputs = "\n".join(
        f'input {{ name: "feature_{i}" data_type: TYPE_FP32 dims: [ 1 ] }}' for i in range(60)
    )
    original = parse_config(f'name: "wide" backend: "onnxruntime" max_batch_size: 8\n{inputs}\n'
                            'output { name: "score" data_type: TYPE_FP32 dims: [ 1 ] }\n')
    assert len(format_config(original).splitlines()) > 200
    cand = make_candidate(original, SPECS[1])
    changed = [ln for ln in diff_configs(original, cand).splitlines()[2:] if ln[:1] in "-+"]
    assert all(TUNED_LINE.match(ln) for ln in changed), changed


# ------------------------------------------------------------------- CLI ---

def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click < 8.2 mixes them by default
    except TypeError:
        return CliRunner()  # stdout and stderr are kept apart


def test_cli_candidates_writes_every_combination(tmp_path):
    src = CONFIGS / "warmup_priority.pbtxt"
    out = tmp_path / "cands"
    res = runner().invoke(app, [
        "candidates", str(src), "--max-batch-size", "8,16", "--queue-delay-us", "0,500",
        "--instances", "1,2", "--out", str(out),
    ])
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    files = sorted(out.glob("*/config.pbtxt"))
    assert len(files) == 8
    original = read_config(src)
    listed = [ln.split("\t") for ln in res.stdout.strip().splitlines()]
    assert len(listed) == 8
    assert sorted(Path(p) for _, p in listed) == files
    combos = set()
    for cid, p in listed:
        assert Path(p).parent.name == cid
        cand = read_config(p)
        spec = cfgmod.current_spec(cand)
        assert spec.candidate_id == cid
        combos.add((spec.max_batch_size, spec.max_queue_delay_us, spec.instance_count))
        assert_tuned(cand, spec)
        assert strip_tuned(cand, added_group=False) == strip_tuned(original, added_group=False)
    assert combos == {(m, q, n) for m in (8, 16) for q in (0, 500) for n in (1, 2)}


def test_cli_candidates_unbatched_needs_flag(tmp_path):
    src = CONFIGS / f"{UNBATCHED}.pbtxt"
    r = runner()
    res = r.invoke(app, ["candidates", str(src), "--max-batch-size", "8", "--out", str(tmp_path / "a")])
    assert res.exit_code == 2
    assert "--first-dim-is-batch" in res.stderr and str(src) in res.stderr
    res = r.invoke(app, ["candidates", str(src), "--max-batch-size", "8", "--first-dim-is-batch",
                         "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.stderr
    assert len(list((tmp_path / "b").glob("*/config.pbtxt"))) == 1


def test_cli_candidates_broken_config_exits_2_with_location(tmp_path):
    src = tmp_path / "config.pbtxt"
    src.write_text('name: "m"\nmax_batch_size: 8\ninput [ { name: "x" data_type: TYPE_FLOAT32 } ]\n')
    res = runner().invoke(app, ["candidates", str(src), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert re.search(re.escape(str(src)) + r":3:\d+: ", res.stderr), (res.stdout, res.stderr)
    assert res.stderr.startswith("error: ")
    assert res.stdout == ""
    assert not (tmp_path / "out").exists()


def test_cli_candidates_bad_values(tmp_path):
    res = runner().invoke(app, ["candidates", str(CONFIGS / "tensorrt_plan.pbtxt"),
                                "--max-batch-size", "8,x", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "comma-separated integers" in res.stderr
    res = runner().invoke(app, ["candidates", str(CONFIGS / "tensorrt_plan.pbtxt"),
                                "--max-batch-size", "8", "--queue-delay-us", "-5", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "max_queue_delay_us must be >= 0" in res.stderr
