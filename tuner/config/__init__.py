"""Model configurations (pure, protobuf only): `pbtxt` reads and writes
config.pbtxt, `candidates` makes candidate configs from the tuned fields,
`sequence` the sequence batcher's tuned fields (stateful models),
`validate` (+ `validate_io`) checks a config with Triton's own rules,
`locate` finds a field's line and column in a file, `joint` the candidates of
several models tuned together (ensemble steps, BLS callees, models sharing a server).

`from tuner import config as cfgmod` gives their public names.
"""

from tuner.config.candidates import (CLI_SWITCH, PREFERRED_RULES, PROFILE_SWITCH, CandidateSpec,  # noqa: F401
                                     check_tunable, current_spec, expand_sequence_specs, expand_specs,
                                     make_candidate, preferred_sizes, validate_spec, write_candidates)
from tuner.config.sequence import SequenceSpace, SequenceSpec, check_kind  # noqa: F401
from tuner.config.joint import JointSpec, check_step_batch, ensemble_steps, is_joint_dict  # noqa: F401
from tuner.config.pbtxt import (ModelConfig, config_from_json, config_to_json, copy_config,  # noqa: F401
                                diff_configs, format_config, parse_config, read_config,
                                read_config_text)
from tuner.config.validate import check_config, refusals  # noqa: F401
