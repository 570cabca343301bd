"""What a project must provide to run through the generic stages."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

Arrays = dict[str, np.ndarray]
Params = Mapping[str, Any]


@dataclass(frozen=True)
class DataSource:
    """One way to obtain a project's dataset.

    ``fetch(work_dir, partial_dir)`` returns the raw arrays: ``x``, ``y`` and ``class_names``,
    plus ``x_test``/``y_test`` when the dataset publishes its own test split.
    ``description`` says where the data comes from, and whether it is real.
    """

    description: str
    fetch: Callable[[Path, Path], Arrays]


@dataclass(frozen=True)
class Project:
    """A curriculum project: its data, its checks, its preprocessing and its models.

    ``task`` picks the loss, the output layer and the evaluation metrics: ``multiclass``
    (softmax over classes) or ``binary`` (one sigmoid unit).
    ``validation`` turns raw arrays into great-expectations tables and expectations.
    ``preprocess`` turns raw arrays into ``{x,y}_{train,val,test}`` plus any fitted artifact
    (such as a standardiser) the exported model needs.
    ``models`` maps a framework name to its builder as ``"module:function"``, imported only when
    used so that a Keras stage never loads torch (and the reverse); a builder takes
    ``(input_shape, n_outputs, train_params)``.
    """

    name: str
    task: str
    sources: Mapping[str, DataSource]
    validation: Callable[[Arrays, Params], tuple[dict[str, pd.DataFrame], dict[str, list]]]
    preprocess: Callable[[Arrays, Params, int], Arrays]
    models: Mapping[str, str]

    def source(self, name: str) -> DataSource:
        try:
            return self.sources[name]
        except KeyError:
            raise KeyError(
                f"project {self.name!r} has no data source {name!r}; choose one of {', '.join(self.sources)}"
            ) from None

    def model_builder(self, framework: str) -> Callable[..., Any]:
        try:
            target = self.models[framework]
        except KeyError:
            raise KeyError(
                f"project {self.name!r} has no {framework!r} model; it has {', '.join(self.models)}"
            ) from None
        module_name, _, function_name = target.partition(":")
        return getattr(importlib.import_module(module_name), function_name)
