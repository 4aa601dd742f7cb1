"""Model configurations (pure, protobuf only): `pbtxt` reads and writes
config.pbtxt, `candidates` makes candidate configs from the tuned fields.

`from tuner import config as cfgmod` gives both modules' public names.
"""

from tuner.config.candidates import (PREFERRED_RULES, CandidateSpec, check_tunable, current_spec,  # noqa: F401
                                     expand_specs, make_candidate, preferred_sizes, validate_spec,
                                     write_candidates)
from tuner.config.pbtxt import (ModelConfig, config_from_json, config_to_json, copy_config,  # noqa: F401
                                diff_configs, format_config, parse_config, read_config)
