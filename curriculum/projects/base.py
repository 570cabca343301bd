"""What a project is: its data, its checks, its preprocessing, its models and its task."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar

from curriculum.config import ConfigError, ProjectConfig, parse_section, read_params
from curriculum.layout import Arrays, ProcessedData
from curriculum.serving import Interface
from curriculum.tasks.base import Predictions, Task

if TYPE_CHECKING:
    import pandas as pd

ConfigT = TypeVar("ConfigT", bound=ProjectConfig)


@dataclass(frozen=True)
class DataSource:
    """One way to obtain a project's dataset.

    ``fetch(work_dir, partial_dir, **settings)`` returns the raw arrays (the project decides their
    names); ``settings(download_config)``, when given, picks the source's own keyword arguments out
    of the project's ``download`` params (a folder's path...). ``description`` says where the data
    comes from, and whether it is real.
    """

    description: str
    fetch: Callable[..., Arrays]
    settings: Callable[[Any], dict[str, Any]] | None = None

    def __call__(self, work_dir: Path, partial_dir: Path, download: Any) -> Arrays:
        return self.fetch(work_dir, partial_dir, **(self.settings(download) if self.settings else {}))


@dataclass(frozen=True)
class FrozenStem:
    """A frozen, pretrained network in front of a model, run once instead of every epoch.

    The project's preprocess runs it over every split's raw inputs ``x`` and stores its output as
    the split array ``array`` (a DVC-cached artifact), so the model trains and is scored on that
    array; export puts the stem back in front, so the exported model takes the raw ``x``.
    ``builders``: framework -> ``"module:function"``; ``function(data, config)`` builds the stem in
    that framework from the processed data (its fitted artifacts, its raw inputs' shape) and the
    project's config.
    """

    array: str
    builders: Mapping[str, str]


def _imported(reference: str) -> Callable[..., Any]:
    """``"module:function"`` -> the function, imported only now."""
    module_name, _, function_name = reference.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


@dataclass(frozen=True)
class Project(Generic[ConfigT]):
    """A curriculum project, the unit the generic stages run.

    ``config``: the typed model of its ``params.yaml`` section (parsed and checked at every stage start).
    ``subsample(raw, config)``: the raw data after the download settings' slicing (smoke runs, quick looks).
    ``validation(raw, config)``: great-expectations tables and expectations for the raw data.
    ``preprocess(raw, config)``: the splits, info and fitted artifacts training needs.
    ``models``: model name -> framework -> ``"module:function"``, imported only when used so a
    Keras stage never loads torch; a builder takes ``(spec, train_config)`` with ``spec`` from
    :meth:`Task.model_spec`.
    ``baselines(data, config)``: test predictions of the reference methods; the task's by default.
    ``pretrained``: model -> framework -> the fitted artifact (see :class:`ProcessedData`) holding
    its starting weights; those models' builders take it as a third argument.
    ``stems``: model -> the :class:`FrozenStem` whose cached output the model takes as its input.
    ``inputs``: model -> the split array it takes as its input instead of ``x``, for a model that
    reads the data its own way (a pretrained transformer's own token ids); exported, it takes that
    array too.
    ``heads``: model -> framework -> ``"module:function"`` building the layers that turn the model's
    raw output into its prediction (a detector's decoding), from ``(spec, train)``: prediction,
    evaluation and export put them behind the trained model, in place of the task's head.
    ``serving_artifacts``: model -> the fitted artifacts its exported model needs beside it to turn
    a user's raw input into its input (a tokenizer); export writes them next to the model files.
    ``serving``: the :class:`~curriculum.serving.Interface` a user calls its exported models through
    (None: export writes no ``serving.json`` and the server skips the project).
    ``profiles``: named sets of dotted-key params overrides (``"long"``: a longer training schedule),
    each a params switch: ``python -m pipeline experiment <project> <profile>`` runs the project
    with them as a DVC experiment (:meth:`profile_overrides`).
    ``smoke``: dotted-key params overrides that shrink the project for the tiny-slice smoke test;
    ``smoke_variants``: the variants it runs there (None: all), for a project whose variants share
    their code paths two by two.
    """

    name: str
    task: Task
    config: type[ConfigT]
    sources: Mapping[str, DataSource]
    validation: Callable[[Arrays, ConfigT], tuple[dict[str, pd.DataFrame], dict[str, list]]]
    preprocess: Callable[[Arrays, ConfigT], ProcessedData]
    models: Mapping[str, Mapping[str, str]]
    subsample: Callable[[Arrays, ConfigT], Arrays] | None = None
    custom_baselines: Callable[[ProcessedData, ConfigT], dict[str, Predictions]] | None = None
    pretrained: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    stems: Mapping[str, FrozenStem] = field(default_factory=dict)
    inputs: Mapping[str, str] = field(default_factory=dict)
    heads: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    serving_artifacts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    serving: Interface | None = None
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    smoke: Mapping[str, Any] = field(default_factory=dict)
    smoke_variants: tuple[str, ...] | None = None

    def load_config(self, params_path: str | Path) -> ConfigT:
        """This project's params section, parsed and checked (:class:`ConfigError` names every bad key)."""
        config = parse_section(self.config, read_params(params_path).get(self.name), self.name)
        problems = [
            f"{self.name}.download.source: {config.download.source!r} is not a source of this project; "
            f"choose one of {', '.join(self.sources)}"
        ] if config.download.source not in self.sources else []
        for name, variant in config.variants.items():
            frameworks = self.models.get(variant.model)
            if frameworks is None:
                problems.append(f"{self.name}.variants.{name}.model: unknown model {variant.model!r}; "
                                f"this project has {', '.join(self.models)}")
            elif variant.framework not in frameworks:
                problems.append(f"{self.name}.variants.{name}.framework: model {variant.model!r} exists for "
                                f"{', '.join(frameworks)}, not {variant.framework!r}")
            try:
                config.variant_train(name)
            except ConfigError as error:
                problems.extend(f"{self.name}.{line}" for line in str(error).splitlines())
        if problems:
            raise ConfigError("\n".join(problems))
        return config

    def profile_overrides(self, profile: str) -> list[str]:
        """``dvc exp run --set-param`` values of a profile (YAML values, keys under this project's section)."""
        if profile not in self.profiles:
            raise KeyError(f"{self.name} has no profile {profile!r}; it has {', '.join(self.profiles) or 'none'}")
        import yaml

        return [f"{self.name}.{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"
                for key, value in self.profiles[profile].items()]

    def source(self, name: str) -> DataSource:
        return self.sources[name]

    def build_model(self, model: str, framework: str, spec: Mapping[str, Any], train: Any,
                    fitted: Mapping[str, Any]) -> Any:
        """A new, untrained model: ``builder(spec, train)``, or ``builder(spec, train, weights)`` for a
        pretrained model, ``weights`` being the fitted artifact :attr:`pretrained` names."""
        builder = _imported(self.models[model][framework])
        artifact = self.pretrained.get(model, {}).get(framework)
        if artifact is None:
            return builder(spec, train)
        if artifact not in fitted:
            raise KeyError(f"{self.name}: model {model!r} starts from the fitted artifact {artifact!r}, "
                           f"which preprocess did not write (it wrote {', '.join(fitted) or 'none'})")
        return builder(spec, train, fitted[artifact])

    def head(self, model: str, framework: str, spec: Mapping[str, Any], train: Any) -> Any | None:
        """The model's prediction head built in ``framework`` (see :attr:`heads`), or None."""
        reference = self.heads.get(model, {}).get(framework)
        return None if reference is None else _imported(reference)(spec, train)

    def model_spec(self, data: ProcessedData) -> dict[str, Any]:
        """What the builders know of the data: the task's spec, plus the facts preprocess recorded
        for them in ``info["model_spec"]`` (e.g. where a cached stem ends)."""
        return {**self.task.model_spec(data), **data.info.get("model_spec", {})}

    def model_data(self, data: ProcessedData, model: str) -> ProcessedData:
        """The data as ``model`` sees it: each split's ``x`` is its :class:`FrozenStem`'s cached output,
        or the array :attr:`inputs` names (the raw inputs stay in ``data``)."""
        stem = self.stems.get(model)
        array = stem.array if stem is not None else self.inputs.get(model)
        if array is None:
            return data
        return replace(data, splits={name: {**arrays, "x": arrays[array]} for name, arrays in data.splits.items()})

    def stem(self, model: str, framework: str, data: ProcessedData, config: ConfigT) -> Any | None:
        """The model's frozen stem built in ``framework`` (what export puts in front), or None."""
        stem = self.stems.get(model)
        return None if stem is None else _imported(stem.builders[framework])(data, config)

    def serving_card(self, data: ProcessedData, config: ConfigT, model: str) -> dict[str, Any] | None:
        """``serving.json`` for an export of ``model``: the page's widget, the task's and the
        interface's facts (None for a project without a :attr:`serving` interface)."""
        if self.serving is None:
            return None
        return {"project": self.name, "model": model, "widget": self.serving.widget,
                "batchable": self.serving.batchable, "outputs": list(self.task.output_names),
                **self.task.serving_card(data), **self.serving.card(data, config, model)}

    def baselines(self, data: ProcessedData, config: ConfigT) -> dict[str, Predictions]:
        if self.custom_baselines is not None:
            return self.custom_baselines(data, config)
        return self.task.baselines(data, config.baselines, config.seed)
