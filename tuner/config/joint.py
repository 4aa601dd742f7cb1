"""Joint candidates: one setting of several models tuned together (pure, protobuf only).

The models a run tunes together are the steps of an ensemble (read from its
`ensemble_scheduling`), the models a BLS model calls (the profile's
`[model] composing_models`), or several models sharing one server. A joint
candidate (`JointSpec`) names, for each model set away from its original
config, that model's `CandidateSpec`; every model it leaves out keeps its
original config. So a joint candidate's id depends only on what it changes:

    pipeline_model:mbs16-qd0-pbsauto-i1+pipeline_pre:mbs16-qd1000-pbsauto-i2

and a resumed sweep finds the same candidates again.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.config.candidates import CandidateSpec
from tuner.config.pbtxt import ModelConfig
from tuner.errors import ConfigError

STEP_SEP = "+"  # between the steps of a joint candidate's id
MODEL_SEP = ":"  # between a step's model name and its candidate id


@dataclass(frozen=True)
class JointSpec:
    """The tuned fields of several models: (model, spec) for each model changed, in the run's model order."""

    steps: tuple[tuple[str, CandidateSpec], ...] = ()

    @property
    def candidate_id(self) -> str:
        if not self.steps:
            return "original"
        return STEP_SEP.join(f"{model}{MODEL_SEP}{spec.candidate_id}" for model, spec in self.steps)

    @property
    def instance_count(self) -> int:
        # Per-instance goals are refused for several models (profile.py); recommend() only needs a count.
        return 1

    def spec_of(self, model: str) -> CandidateSpec | None:
        """The model's spec in this candidate; None: the model keeps its original config."""
        return dict(self.steps).get(model)

    def with_step(self, model: str, spec: CandidateSpec, original: CandidateSpec, order: list[str]) -> "JointSpec":
        """This candidate with `model` set to `spec` (dropped when that is its `original` spec)."""
        steps = dict(self.steps)
        steps.pop(model, None)
        if spec != original:
            steps[model] = spec
        return JointSpec(tuple((m, steps[m]) for m in order if m in steps))

    def to_dict(self) -> dict:
        return {"candidate_id": self.candidate_id,
                "steps": [{"model": model, **spec.to_dict()} for model, spec in self.steps]}

    @classmethod
    def from_dict(cls, d: dict) -> "JointSpec":
        return cls(tuple((str(s["model"]), CandidateSpec.from_dict(s)) for s in d.get("steps", [])))


def is_joint_dict(d: dict) -> bool:
    """Whether a stored spec (`to_dict`) is a joint one."""
    return "steps" in d


def ensemble_steps(cfg: ModelConfig) -> list[str]:
    """The models an ensemble's steps run, in step order, each once; [] for a model that is no ensemble."""
    if cfg.platform != "ensemble":
        return []
    out: list[str] = []
    for step in cfg.ensemble_scheduling.step:
        if step.model_name not in out:
            out.append(step.model_name)
    return out


def check_step_batch(ensemble: ModelConfig, model: str, spec: CandidateSpec) -> None:
    """Refuse a step's max_batch_size below its ensemble's, before sending it: Triton would load the
    step and then silently unload the ensemble (a step must take the ensemble's whole batch)."""
    if ensemble.platform != "ensemble" or model not in ensemble_steps(ensemble):
        return
    if 0 < spec.max_batch_size < ensemble.max_batch_size:
        raise ConfigError(
            f"{model}: max_batch_size {spec.max_batch_size} is below the max_batch_size "
            f"{ensemble.max_batch_size} of ensemble '{ensemble.name}', which Triton then unloads; list values "
            f">= {ensemble.max_batch_size} in [search] max_batch_size")
