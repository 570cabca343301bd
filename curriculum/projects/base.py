"""What a project is: its data, its checks, its preprocessing, its models and its task."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Mapping, TypeVar

from curriculum.config import ConfigError, ProjectConfig, parse_section, read_params
from curriculum.layout import Arrays, ProcessedData
from curriculum.tasks.base import Predictions, Task

if TYPE_CHECKING:
    import pandas as pd

ConfigT = TypeVar("ConfigT", bound=ProjectConfig)


@dataclass(frozen=True)
class DataSource:
    """One way to obtain a project's dataset.

    ``fetch(work_dir, partial_dir)`` returns the raw arrays (the project decides their names);
    ``description`` says where the data comes from, and whether it is real.
    """

    description: str
    fetch: Callable[[Path, Path], Arrays]


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
    ``smoke``: dotted-key params overrides that shrink the project for the tiny-slice smoke test.
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
    smoke: Mapping[str, Any] = field(default_factory=dict)

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
        if problems:
            raise ConfigError("\n".join(problems))
        return config

    def source(self, name: str) -> DataSource:
        return self.sources[name]

    def model_builder(self, model: str, framework: str) -> Callable[..., Any]:
        module_name, _, function_name = self.models[model][framework].partition(":")
        return getattr(importlib.import_module(module_name), function_name)

    def baselines(self, data: ProcessedData, config: ConfigT) -> dict[str, Predictions]:
        if self.custom_baselines is not None:
            return self.custom_baselines(data, config)
        return self.task.baselines(data, config.baselines, config.seed)
