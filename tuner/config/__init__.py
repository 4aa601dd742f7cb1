"""Model configurations (pure, protobuf only): `pbtxt` reads and writes
config.pbtxt, `candidates` makes candidate configs from the tuned fields,
`validate` (+ `validate_io`) checks a config with Triton's own rules,
`locate` finds a field's line and column in a file.

`from tuner import config as cfgmod` gives their public names.
"""

from tuner.config.candidates import (CLI_SWITCH, PREFERRED_RULES, PROFILE_SWITCH, CandidateSpec,  # noqa: F401
                                     check_tunable, current_spec, expand_specs, make_candidate, preferred_sizes,
                                     validate_spec, write_candidates)
from tuner.config.pbtxt import (ModelConfig, config_from_json, config_to_json, copy_config,  # noqa: F401
                                diff_configs, format_config, parse_config, read_config,
                                read_config_text)
from tuner.config.validate import check_config, refusals  # noqa: F401
