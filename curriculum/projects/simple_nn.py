"""Simple neural network: the curriculum's first network, a feed-forward binary classifier.

``Linear(inputs, hidden) -> ReLU -> Linear(hidden, 1) -> Sigmoid``, BCE loss, Adam, trained
full-batch, in PyTorch, Keras 3 and NumPy from scratch (``curriculum.models.numpy_mlp``).

Data (both real):

* ``breast_cancer`` (default, offline): scikit-learn's copy of the Wisconsin Diagnostic Breast
  Cancer set, 569 rows x 30 features. scikit-learn encodes 0 = malignant, 1 = benign; here the
  label is flipped so that the positive class (1) is the one to detect: 0 = benign, 1 = malignant
  (212 positives).
* ``caravan``: the CoIL 2000 insurance data (5,822 rows x 85 integer-coded features, 348 buyers,
  about 6 % positives) as shipped in the ISLP 0.6.0 wheel; the wheel is fetched as a file with
  ``pip download --no-deps`` (pinned name and sha256) and ``ISLP/data/Caravan.csv`` is read out
  of it -- the package is never installed. Set ``train.pos_weight`` (about 15.7 = negatives /
  positives) for this source; evaluation reports ROC-AUC, PR-AUC and balanced accuracy beside
  accuracy.

Preprocessing standardises with a mean and scale fitted on the training split only and keeps
them as the fitted ``input_scaler`` artifact; the export stage folds it into every exported model,
so the exported graphs and the ``.npz`` take raw feature rows.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Mapping

import numpy as np
from pydantic import BaseModel, Field, create_model

from curriculum.config import DownloadConfig, Fraction, PositiveFloat, PositiveInt, ProjectConfig, Section, TrainConfig
from curriculum.download import fetch_pypi_file, read_archive_member
from curriculum.layout import Arrays, ProcessedData
from curriculum.projects.base import DataSource, Project
from curriculum.serving import Interface, Strict, batch_of
from curriculum.splits import stratified_split
from curriculum.tasks.classification import Classification, ClassificationBaselines, limit_raw_per_class

if TYPE_CHECKING:
    import pandas as pd  # imported by the functions that read or check tables (download, validate)

# --------------------------------------------------------------------------- the sources' schemas

# WDBC: ten measurements of the cell nuclei, each as mean, standard error and worst (largest)
# value, named as scikit-learn names them ("mean radius", "radius error", "worst radius").
WDBC_MEASUREMENTS = (
    "radius", "texture", "perimeter", "area", "smoothness",
    "compactness", "concavity", "concave points", "symmetry", "fractal dimension",
)
BREAST_CANCER_FEATURES = (
    *(f"mean {m}" for m in WDBC_MEASUREMENTS),
    *(f"{m} error" for m in WDBC_MEASUREMENTS),
    *(f"worst {m}" for m in WDBC_MEASUREMENTS),
)

# CoIL 2000 (Caravan) columns in file order, with their ranges from the published data dictionary
# (van der Putten & van Someren, TicDataDescr): 1-5 socio-demographic codes with their own ranges,
# 6-43 "M" percentage classes L3 0-9, 44-64 "P" contribution classes L4 0-9, 65-85 "A" policy counts.
CARAVAN_CODED = {
    "MOSTYPE": (1, 41),   # customer subtype, L0
    "MAANTHUI": (1, 10),  # number of houses
    "MGEMOMV": (1, 6),    # average household size
    "MGEMLEEF": (1, 6),   # average age class, L1
    "MOSHOOFD": (1, 10),  # customer main type, L2
}
CARAVAN_PERCENTAGES = (
    "MGODRK", "MGODPR", "MGODOV", "MGODGE", "MRELGE", "MRELSA", "MRELOV", "MFALLEEN", "MFGEKIND", "MFWEKIND",
    "MOPLHOOG", "MOPLMIDD", "MOPLLAAG", "MBERHOOG", "MBERZELF", "MBERBOER", "MBERMIDD", "MBERARBG", "MBERARBO",
    "MSKA", "MSKB1", "MSKB2", "MSKC", "MSKD", "MHHUUR", "MHKOOP", "MAUT1", "MAUT2", "MAUT0", "MZFONDS", "MZPART",
    "MINKM30", "MINK3045", "MINK4575", "MINK7512", "MINK123M", "MINKGEM", "MKOOPKLA",
)
CARAVAN_CONTRIBUTIONS = (
    "PWAPART", "PWABEDR", "PWALAND", "PPERSAUT", "PBESAUT", "PMOTSCO", "PVRAAUT", "PAANHANG", "PTRACTOR", "PWERKT",
    "PBROM", "PLEVEN", "PPERSONG", "PGEZONG", "PWAOREG", "PBRAND", "PZEILPL", "PPLEZIER", "PFIETS", "PINBOED",
    "PBYSTAND",
)
CARAVAN_COUNTS = tuple("A" + name[1:] for name in CARAVAN_CONTRIBUTIONS)  # number of policies of each kind
CARAVAN_FEATURES = (*CARAVAN_CODED, *CARAVAN_PERCENTAGES, *CARAVAN_CONTRIBUTIONS, *CARAVAN_COUNTS)

ISLP_WHEEL = {
    "package": "ISLP",
    "version": "0.6.0",
    "filename": "islp-0.6.0-py3-none-any.whl",
    "sha256": "ca772cecca1747a2f84ee799a5503ddddbdf0e98f90c235494790c1d036c694b",
}
CARAVAN_MEMBER = "ISLP/data/Caravan.csv"


@dataclass(frozen=True)
class TableSpec:
    """What a source's table must look like: ordered feature columns, their dtype and ranges,
    the target column's name and what 0 and 1 mean."""

    features: tuple[str, ...]
    dtype: str
    ranges: dict[str, tuple[float | None, float | None]]
    target: str
    class_names: tuple[str, str]


TABLE_SPECS = {
    # Every WDBC feature is a length, area, ratio or dimension of a cell nucleus: never negative.
    # No upper bound is published, and none is fitted to the data here.
    "breast_cancer": TableSpec(
        features=BREAST_CANCER_FEATURES, dtype="float64",
        ranges={name: (0.0, None) for name in BREAST_CANCER_FEATURES},
        target="malignant", class_names=("benign", "malignant"),
    ),
    # Integer codes within the data dictionary's ranges; policy counts are non-negative (no maximum published).
    "caravan": TableSpec(
        features=CARAVAN_FEATURES, dtype="int64",
        ranges={**CARAVAN_CODED, **{name: (0, 9) for name in (*CARAVAN_PERCENTAGES, *CARAVAN_CONTRIBUTIONS)},
                **{name: (0, None) for name in CARAVAN_COUNTS}},
        target="Purchase", class_names=("No", "Yes"),
    ),
}

# --------------------------------------------------------------------------- params


class TableDownload(DownloadConfig):
    max_per_class: PositiveInt | None  # keep only the first N rows of each class (smoke runs)


class TableValidate(Section):
    min_class_fraction: Fraction  # each class must be at least this share of the rows


class TablePreprocess(Section):
    val_fraction: Fraction
    test_fraction: Fraction


class MLPTrain(TrainConfig):
    hidden_units: PositiveInt
    pos_weight: PositiveFloat | None  # weight of the positive class in the BCE loss


class SimpleNNConfig(ProjectConfig):
    download: TableDownload
    validate_: TableValidate = Field(alias="validate")  # `validate` is a pydantic method name
    preprocess: TablePreprocess
    train: MLPTrain
    baselines: ClassificationBaselines
    evaluate: Section  # nothing to set: binary metrics, ROC and PR curves are always written


# --------------------------------------------------------------------------- download


def fetch_breast_cancer(work_dir: Path, partial_dir: Path) -> Arrays:
    """scikit-learn's bundled WDBC table; labels flipped so that 1 = malignant."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    if list(data.target_names) != ["malignant", "benign"]:
        raise ValueError(f"unexpected scikit-learn target encoding {list(data.target_names)}")
    return {
        "x": np.asarray(data.data, dtype=np.float64),
        "y": (1 - np.asarray(data.target)).astype(np.int64),
        "class_names": np.array(TABLE_SPECS["breast_cancer"].class_names),
        "feature_names": np.array([str(name) for name in data.feature_names]),
    }


def fetch_caravan(work_dir: Path, partial_dir: Path) -> Arrays:
    """``Caravan.csv`` read out of the pinned ISLP wheel (fetched, verified, never installed)."""
    import pandas as pd

    wheel = fetch_pypi_file(dest_dir=work_dir, **ISLP_WHEEL)
    frame = pd.read_csv(io.BytesIO(read_archive_member(wheel, CARAVAN_MEMBER)))
    target = frame.pop("Purchase").astype(str)
    unknown = sorted(set(target) - {"No", "Yes"})
    if unknown:
        raise ValueError(f"{CARAVAN_MEMBER}: Purchase has values {unknown} besides No/Yes")
    return {
        "x": frame.to_numpy(),  # int64 codes, as published; validate checks the dtype
        "y": (target == "Yes").to_numpy().astype(np.int64),
        "class_names": np.array(TABLE_SPECS["caravan"].class_names),
        "feature_names": np.array([str(name) for name in frame.columns]),
    }


# --------------------------------------------------------------------------- validate


def raw_table(raw: Arrays, target: str) -> pd.DataFrame:
    """The raw arrays as one table: a column per feature (named as the source names it) and the
    target; the index is the row's position in the raw data, so failures name rows by it."""
    import pandas as pd

    table = pd.DataFrame(raw["x"], columns=[str(name) for name in raw["feature_names"]])
    table[target] = raw["y"]
    return table


def validation(raw: Arrays, config: SimpleNNConfig):
    """The source's table held to its spec (columns and order, dtypes, no nulls, target in {0, 1},
    feature ranges), and both classes present with at least ``min_class_fraction`` of the rows.

    Great Expectations is imported here, not at module level: the other stages load this module
    too and should not pay for it.
    """
    from curriculum.validation import class_count_table, gxe, tabular_expectations

    spec = TABLE_SPECS[config.download.source]
    columns = {name: spec.dtype for name in spec.features}
    columns[spec.target] = "int64"
    expectations = tabular_expectations(columns, spec.ranges, target=spec.target, target_values=[0, 1])
    expectations["class_counts"] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=2, max_value=2),
        gxe.ExpectColumnValuesToBeBetween(column="count", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="fraction", min_value=config.validate_.min_class_fraction),
    ]
    tables = {"table": raw_table(raw, spec.target), "class_counts": class_count_table(raw["y"], n_classes=2)}
    return tables, expectations


# --------------------------------------------------------------------------- preprocess


def standardiser(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each feature over the training rows (float32, as stored).
    A feature constant in the training split gets scale 1, so it maps to 0 instead of dividing by 0."""
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale = np.where(scale > 1e-12 * np.maximum(np.abs(mean), 1.0), scale, 1.0)
    return mean.astype(np.float32), scale.astype(np.float32)


def preprocess(raw: Arrays, config: SimpleNNConfig) -> ProcessedData:
    """Seeded stratified split; standardise with the training split's mean/scale, kept as the fitted
    ``input_scaler`` (the export folds it into every exported model, which then takes raw rows)."""
    settings = config.preprocess
    data = {"x": np.asarray(raw["x"], dtype=np.float64), "y": np.asarray(raw["y"], dtype=np.int64)}
    splits = stratified_split(data, settings.val_fraction, settings.test_fraction, config.seed)
    mean, scale = standardiser(splits["x_train"])
    return ProcessedData(
        splits={
            name: {"x": ((splits[f"x_{name}"] - mean) / scale).astype(np.float32), "y": splits[f"y_{name}"]}
            for name in ("train", "val", "test")
        },
        info={"class_names": [str(n) for n in raw["class_names"]], "feature_names": [str(n) for n in raw["feature_names"]]},
        fitted={"input_scaler": {"mean": mean, "scale": scale}},
    )


# --------------------------------------------------------------------------- serving


class FeatureRows(Interface):
    """Raw feature rows, each an object keyed by the source's column names, held to the source's
    published ranges and dtype (the exported model standardises them itself)."""

    widget = "features"

    def card(self, data: ProcessedData, config: SimpleNNConfig, model: str) -> dict[str, Any]:
        spec = TABLE_SPECS[config.download.source]
        examples = data.raw_inputs(data.split("test")["x"][:3]).astype(np.float64)
        if spec.dtype.startswith("int"):
            examples = examples.round()
        return {
            "features": [{"name": name, "dtype": spec.dtype, "min": spec.ranges[name][0], "max": spec.ranges[name][1]}
                         for name in spec.features],
            "examples": [dict(zip(spec.features, map(float, row))) for row in examples],
        }

    def request_model(self, card: Mapping[str, Any], max_batch: int) -> type[BaseModel]:
        fields = {}
        for index, feature in enumerate(card["features"]):
            kind = int if feature["dtype"].startswith("int") else float
            constraints = {"ge": feature["min"], "le": feature["max"]}
            fields[f"feature_{index}"] = (Annotated[kind, Field(alias=feature["name"], allow_inf_nan=False,
                                                                **{k: v for k, v in constraints.items() if v is not None})],
                                          ...)
        row = create_model("FeatureRow", __base__=Strict, **fields)
        return create_model("FeatureRowsRequest", __base__=Strict,
                            rows=(batch_of(row, max_batch, "raw feature rows, keyed by feature name"), ...))

    def model_inputs(self, request: BaseModel, card: Mapping[str, Any], prepared: Any) -> np.ndarray:
        names = [f"feature_{index}" for index in range(len(card["features"]))]
        return np.array([[getattr(row, name) for name in names] for row in request.rows], dtype=np.float32)

    def example(self, card: Mapping[str, Any]) -> dict[str, Any]:
        return {"rows": card["examples"][:1]}


PROJECT = Project(
    name="simple_nn",
    task=Classification(binary=True),
    config=SimpleNNConfig,
    sources={
        "breast_cancer": DataSource(
            "real Wisconsin Diagnostic Breast Cancer data shipped in scikit-learn (569 rows, 30 features; "
            "1 = malignant)", fetch_breast_cancer),
        "caravan": DataSource(
            "real CoIL 2000 Caravan insurance data, ISLP/data/Caravan.csv from the ISLP 0.6.0 wheel "
            "(pip download, sha256-verified; 5,822 rows, 85 features, 348 buyers)", fetch_caravan),
    },
    validation=validation,
    preprocess=preprocess,
    models={"mlp": {
        "torch": "curriculum.models.torch_mlp:build_mlp",
        "keras": "curriculum.models.keras_mlp:build_mlp",
        "numpy": "curriculum.models.numpy_mlp:build_mlp",
    }},
    subsample=lambda raw, config: limit_raw_per_class(raw, config.download.max_per_class),
    serving=FeatureRows(),
    smoke={"download.max_per_class": 12, "train.epochs": 2},
)
