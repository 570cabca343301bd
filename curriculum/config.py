"""Typed configuration: each project's section of ``params.yaml`` parsed once, at stage start.

Every section is a frozen pydantic model with no defaults and no extra keys, so a misspelled
key (``early_stoping``), a missing one, a wrong type (``learning_rate: "abc"``) or a value out
of range (``epochs: -1``, ``batch_size: 0``) stops the stage before it touches any output, with
one line per problem naming the key and what is allowed. Values come in strictly typed
(``"0.1"`` is not a number, ``true`` is not an int), as YAML wrote them.
"""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ConfigError", "Section", "Variant", "DownloadConfig", "EarlyStopping", "ReduceLR", "TrainConfig", "ExportConfig",
    "ProjectConfig", "TuneConfig", "FloatRange", "IntRange", "Choices", "SpaceEntry", "Fraction", "PositiveInt", "PositiveFloat", "NonNegativeInt", "read_params", "parse_section",
]

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class ConfigError(ValueError):
    """Bad params: the message has one line per problem, each naming the key."""


class Section(BaseModel):
    """A params section: every key declared, strictly typed, nothing else accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Variant(Section):
    """One trained model of a project: the framework that trains it, which of the project's models,
    and optionally its own ``train`` keys, which replace the project's (a whole key at a time:
    ``early_stopping: {patience: 3}`` replaces the project's ``early_stopping``). Variants that
    need different training -- a lower learning rate for fine-tuning, more epochs from scratch --
    share one ``train`` section and differ only where they say so.
    """

    framework: Literal["keras", "torch", "numpy"]
    model: str
    train: dict[str, Any] = Field(default_factory=dict)


class EarlyStopping(Section):
    patience: PositiveInt


class ReduceLR(Section):
    factor: Fraction
    patience: NonNegativeInt
    min_lr: NonNegativeFloat


class TrainConfig(Section):
    """What every training loop reads; projects extend it with their model's keys.

    ``log_every`` only changes what is printed, so it is left out of the model's identity
    (see :meth:`identity`).
    """

    epochs: PositiveInt
    batch_size: PositiveInt | None  # null = full batch
    learning_rate: PositiveFloat
    l2: NonNegativeFloat  # kernel L2 penalty (Keras' kernel_regularizer; added to the loss in the other loops)
    early_stopping: EarlyStopping | None
    reduce_lr: ReduceLR | None
    log_every: PositiveInt
    threads: PositiveInt  # CPU threads the framework may use (per process): pinned, since results depend on it
    # Data-parallel training processes: 1, or N for PyTorch DDP under torchrun (gloo on CPU, NCCL
    # on GPUs); each process takes 1/N of every batch, so the global batch stays ``batch_size``.
    processes: PositiveInt
    # Where PyTorch trains: ``auto`` is CUDA when torch sees a GPU, else the CPU. Keras ignores it:
    # TensorFlow places ops on a GPU by itself.
    device: Literal["auto", "cpu", "cuda"]
    # What picks the best epoch and drives early stopping and reduce-LR: the validation loss, or
    # the task's epoch metric on validation (accuracy...), for models whose loss keeps rising
    # with confidence while they still get more answers right.
    monitor: Literal["loss", "metric"]

    DISPLAY_ONLY: typing.ClassVar[frozenset[str]] = frozenset({"log_every"})

    def identity(self) -> dict[str, Any]:
        """The keys that change the trained model (recorded with it), without display-only ones."""
        return self.model_dump(mode="json", exclude=set(self.DISPLAY_ONLY))

    @classmethod
    def from_identity(cls, identity: dict[str, Any]) -> "TrainConfig":
        """Rebuild a config from :meth:`identity` (display-only keys get a neutral value)."""
        return cls.model_validate({**identity, "log_every": 1})


class DownloadConfig(Section):
    source: str


class ExportConfig(Section):
    parity_atol: PositiveFloat
    parity_examples: PositiveInt | None  # check parity on the first N test examples; null = all


# --------------------------------------------------------------------------- tuning (curriculum/tuning.py)


class _Range(Section):
    log: bool  # sample on a log scale (learning rates, widths)

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log scale needs low > 0, not {self.low}")
        return self


class FloatRange(_Range):
    type: Literal["float"]
    low: float
    high: float


class IntRange(_Range):
    type: Literal["int"]
    low: int
    high: int


class Choices(Section):
    type: Literal["categorical"]
    choices: Annotated[list[Union[bool, int, float, str, None]], Field(min_length=2)]


SpaceEntry = Annotated[Union[FloatRange, IntRange, Choices], Field(discriminator="type")]


class MedianPruning(Section):
    """Optuna's median pruner: a trial stops at an epoch when its value of the study's metric is worse
    than the median of the earlier trials at that epoch, once ``startup_trials`` trials have finished and
    after ``warmup_epochs`` epochs of its own."""

    startup_trials: NonNegativeInt
    warmup_epochs: NonNegativeInt


class TuneConfig(Section):
    """A project's hyperparameter study: which variant, how many trials, how many side by side,
    where the study is stored, the validation value it optimises, the pruner, and the search space
    over the variant's train keys."""

    variant: str
    # What the study optimises: ``val_loss`` or ``val_<the task's epoch metric>``, at the epoch the
    # trial's model keeps; null: the value the training loop itself monitors.
    metric: str | None
    trials: PositiveInt
    workers: PositiveInt  # trials run side by side
    storage: str | None  # an Optuna storage URL; null: a SQLite file beside the repository's other state
    pruning: MedianPruning
    space: Annotated[dict[str, SpaceEntry], Field(min_length=1)]


# Why a back end has no multi-process training here (see the README's "Beyond one machine").
DISTRIBUTED_REASONS = {
    "keras": "Keras 3's model.fit fails under tf.distribute.MultiWorkerMirroredStrategy (keras-team/keras#20585) "
             "and MirroredStrategy only splits batches between devices of one process: on GPUs, not CPU cores",
    "numpy": "the from-scratch loop is single-process by design",
}


class ProjectConfig(Section):
    """The keys every project section has; a project subclasses it (and these sections) with its own
    keys, and adds its ``validate`` and ``preprocess`` sections."""

    seed: NonNegativeInt
    schedule: str | None  # cron expression of the nightly Prefect deployment (UTC); null = none
    variants: dict[str, Variant]
    download: DownloadConfig
    train: TrainConfig
    baselines: Section
    evaluate: Section
    export: ExportConfig
    tune: TuneConfig | None  # the project's hyperparameter study (python -m pipeline tune); null: none

    @model_validator(mode="after")
    def _distributed_only_in_torch(self) -> "ProjectConfig":
        """Multi-process training is PyTorch DDP's; the other back ends train in one process."""
        for name, variant in self.variants.items():
            if variant.framework != "torch" and self.variant_train(name).processes > 1:
                raise ValueError(
                    f"variants.{name}: train.processes > 1 needs framework torch (DDP under torchrun); "
                    f"{variant.framework} trains in one process ({DISTRIBUTED_REASONS[variant.framework]})")
        return self

    def variant_train(self, variant: str) -> TrainConfig:
        """The train section one variant trains with: the project's, with the variant's own keys
        in place of the project's (checked like the section itself, named under the variant)."""
        overrides = self.variants[variant].train
        if not overrides:
            return self.train
        merged = {**self.train.model_dump(mode="python", by_alias=True), **overrides}
        return parse_section(type(self.train), merged, f"variants.{variant}.train")


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class _ParamsLoader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``1e-05`` (no dot) is a string; DVC writes params with a YAML
    1.2 library, which writes such floats so (``dvc exp run -S`` does), and people type them so.
    This loader reads them as the numbers they are."""


_ParamsLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+(?:[eE][-+]?[0-9]+)?)$"
    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"), list("-+0123456789."))


def read_params(params_path: str | Path) -> dict[str, Any]:
    path = Path(params_path)
    try:
        return yaml.load(path.read_text(), Loader=_ParamsLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def parse_section(model: type[ConfigT], values: Any, where: str) -> ConfigT:
    """Parse ``values`` into ``model``; on failure raise :class:`ConfigError` naming each key under ``where``."""
    if values is None:
        raise ConfigError(f"{where}: section missing; it needs keys {', '.join(_keys(model))}")
    try:
        return model.model_validate(values)
    except ValidationError as error:
        lines = [_describe(model, problem, where) for problem in error.errors()]
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None


def _describe(model: type[BaseModel], problem: dict[str, Any], where: str) -> str:
    loc = [str(part) for part in problem["loc"] if not _is_union_tag(part)]
    key = ".".join([where, *loc])
    kind = problem["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(model, loc[:-1])
        return f"{key}: unknown key; allowed here: {', '.join(allowed) if allowed else 'none'}"
    if kind == "missing":
        return f"{key}: missing (required, no default)"
    if kind == "value_error" and not loc:  # a check across keys: its message names them
        return f"{where}.{problem['msg'].removeprefix('Value error, ')}"
    return f"{key}: {problem['msg'][0].lower()}{problem['msg'][1:]} (got {problem.get('input')!r})"


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the union member it tried into the location (``EarlyStopping``, ``int``...)."""
    return isinstance(part, str) and (part[:1].isupper() or part in {"int", "float", "str", "bool", "none"})


def _fields_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys allowed at ``loc`` inside ``model`` (following nested sections, optional ones and dicts)."""
    current: Any = model
    for part in loc:
        annotation = _strip(current)
        if typing.get_origin(annotation) is dict:  # a dict of sections (variants): part is the entry's name
            current = typing.get_args(annotation)[1]
            continue
        section = _section_type(current)
        fields = _keys(section)
        if part not in fields:
            return []
        current = fields[part].annotation
    return sorted(_keys(_section_type(current)))


def _keys(section: type[BaseModel] | None) -> dict[str, Any]:
    """A section's fields by the key params.yaml uses (the alias, where a field has one)."""
    if section is None:
        return {}
    return {info.alias or name: info for name, info in section.model_fields.items()}


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _section_type(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None
