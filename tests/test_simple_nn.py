"""The simple-neural-network project: the from-scratch NumPy network against finite differences
and against PyTorch, its validation suite, and the Caravan source end to end on a small slice.

Everything is real: real data (scikit-learn's breast-cancer table, the ISLP wheel fetched with
pip), real Great Expectations, real training in every framework, real DVC.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from curriculum.layout import ProcessedData, RawData, read_model_meta
from curriculum.models import numpy_mlp
from curriculum.models.numpy_mlp import BinaryCrossEntropy
from curriculum.projects.simple_nn import CARAVAN_FEATURES, PROJECT, fetch_breast_cancer

PARAMS_PATH = Path(__file__).resolve().parent.parent / "params.yaml"
PARAMS = yaml.safe_load(PARAMS_PATH.read_text())["simple_nn"]
CONFIG = PROJECT.load_config(PARAMS_PATH)
FRAMEWORKS = ("torch", "keras", "numpy")  # the variants of params.yaml's simple_nn section
MLP_SPEC = {"input_shape": [30], "n_outputs": 1}


@pytest.fixture(scope="module")
def cancer_raw():
    return fetch_breast_cancer(Path("unused"), Path("unused"))


@pytest.fixture(scope="module")
def cancer_splits(cancer_raw):
    return PROJECT.preprocess(cancer_raw, CONFIG)


# --------------------------------------------------------------------------- data and preprocessing


def test_breast_cancer_is_the_real_table_with_malignant_as_positive(cancer_raw):
    assert cancer_raw["x"].shape == (569, 30) and cancer_raw["x"].dtype == np.float64
    assert list(cancer_raw["class_names"]) == ["benign", "malignant"]
    assert int(cancer_raw["y"].sum()) == 212  # WDBC: 212 malignant, 357 benign


def test_standardiser_is_fitted_on_the_training_split_only(cancer_raw, cancer_splits):
    s = cancer_splits.splits
    mean, scale = cancer_splits.fitted["input_scaler"]["mean"], cancer_splits.fitted["input_scaler"]["scale"]
    assert {key: len(s[key]["y"]) for key in ("train", "val", "test")} == {"train": 398, "val": 57, "test": 114}
    train_raw = s["train"]["x"].astype(np.float64) * scale + mean
    np.testing.assert_allclose(train_raw.mean(axis=0), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(train_raw.std(axis=0), scale, rtol=1e-5)
    np.testing.assert_allclose(s["train"]["x"].mean(axis=0), 0, atol=1e-5)
    # every raw row ends up in exactly one split, standardised with the training statistics
    all_rows = np.concatenate([s[k]["x"] for k in ("train", "val", "test")]).astype(np.float64)
    rebuilt = np.sort((all_rows * scale + mean)[:, 0])
    np.testing.assert_allclose(rebuilt, np.sort(cancer_raw["x"][:, 0]), rtol=1e-5)


# --------------------------------------------------------------------------- the from-scratch network


def _numeric_grads(params, x, y, pos_weight, l2, h=1e-6):
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][index] += h
            minus[name][index] -= h
            grad[index] = (numpy_mlp.loss_and_grads(plus, x, y, BinaryCrossEntropy(pos_weight), l2)[0]
                           - numpy_mlp.loss_and_grads(minus, x, y, BinaryCrossEntropy(pos_weight), l2)[0]) / (2 * h)
        grads[name] = grad
    return grads


@pytest.mark.parametrize("pos_weight, l2", [(None, 0.0), (3.5, 0.01)])
def test_gradient_check_against_central_differences(pos_weight, l2):
    """Manual backprop vs central finite differences in float64: relative error below 1e-6."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(11, 5))
    y = rng.integers(0, 2, size=(11, 1)).astype(np.float64)
    params = numpy_mlp.init_params(5, 6, 1, rng)
    params["b1"] = rng.normal(scale=0.1, size=6)  # non-zero biases, so their gradients are exercised
    params["b2"] = rng.normal(scale=0.1, size=1)
    z1 = x @ params["W1"] + params["b1"]
    assert np.abs(z1).min() > 1e-3  # no ReLU input near its kink, where finite differences are invalid

    _, analytic, _ = numpy_mlp.loss_and_grads(params, x, y, BinaryCrossEntropy(pos_weight), l2)
    numeric = _numeric_grads(params, x, y, pos_weight, l2)
    for name in numpy_mlp.PARAM_NAMES:
        a, n = analytic[name], numeric[name]
        relative_error = np.linalg.norm(a - n) / max(np.linalg.norm(a) + np.linalg.norm(n), 1e-12)
        assert relative_error < 1e-6, f"{name}: relative error {relative_error:.2e}"


@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_numpy_loss_curve_matches_pytorch_from_the_same_weights(cancer_splits, pos_weight):
    """Same weights, data and hyperparameters (float64, full batch, Adam lr 0.001, 100 epochs):
    the NumPy and PyTorch loss curves and final weights agree to 1e-12 (relative)."""
    import torch

    from curriculum.models.torch_mlp import build_mlp

    x = cancer_splits.split("train")["x"].astype(np.float64)
    y = cancer_splits.split("train")["y"].astype(np.float64).reshape(-1, 1)
    train = CONFIG.train.model_copy(update={"pos_weight": pos_weight})
    np.random.seed(0)
    start = numpy_mlp.build_mlp(MLP_SPEC, train)

    params, state, numpy_losses = start, numpy_mlp.adam_init(start), []
    objective = BinaryCrossEntropy(pos_weight)
    for _ in range(train.epochs):
        params, state, loss, _ = numpy_mlp.train_step(params, state, x, y, train.learning_rate, objective)
        numpy_losses.append(loss)

    net = build_mlp(MLP_SPEC, train).double()
    with torch.no_grad():
        for layer, (w, b) in ((net[0], ("W1", "b1")), (net[2], ("W2", "b2"))):
            layer.weight.copy_(torch.from_numpy(start[w].T))
            layer.bias.copy_(torch.from_numpy(start[b]))
    optimizer = torch.optim.Adam(net.parameters(), lr=train.learning_rate)
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=None if pos_weight is None else torch.tensor(pos_weight, dtype=torch.float64))
    x_t, y_t, torch_losses = torch.from_numpy(x), torch.from_numpy(y), []
    for _ in range(train.epochs):
        optimizer.zero_grad()
        loss = loss_fn(net(x_t), y_t)
        loss.backward()
        optimizer.step()
        torch_losses.append(loss.item())

    assert numpy_losses[-1] < 0.5 * numpy_losses[0]  # it did learn
    np.testing.assert_allclose(numpy_losses, torch_losses, rtol=1e-12)
    np.testing.assert_allclose(params["W1"], net[0].weight.detach().numpy().T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(params["W2"], net[2].weight.detach().numpy().T, rtol=1e-10, atol=1e-12)


def test_numpy_and_torch_back_ends_log_the_same_curves(cancer_splits, tmp_path):
    """The pipeline's own back ends (float32 torch, float64 NumPy), started from the same weights,
    log the same train/eval loss curves to DVCLive within 1e-5 (relative)."""
    import torch
    from dvclive import Live

    from curriculum.frameworks import numpy_backend, torch_backend
    from curriculum.models.torch_mlp import build_mlp

    train = CONFIG.train.model_copy(update={"epochs": 30})
    numpy_backend.seed_everything(1)
    start = numpy_mlp.build_mlp(MLP_SPEC, train)
    net = build_mlp(MLP_SPEC, train)
    with torch.no_grad():
        for layer, (w, b) in ((net[0], ("W1", "b1")), (net[2], ("W2", "b2"))):
            layer.weight.copy_(torch.from_numpy(start[w].T.astype(np.float32)))
            layer.bias.copy_(torch.from_numpy(start[b].astype(np.float32)))

    curves = {}
    for name, backend, model in (("numpy", numpy_backend, start), ("torch", torch_backend, net)):
        model_dir, live_dir = tmp_path / name / "model", tmp_path / name / "live"
        model_dir.mkdir(parents=True)
        with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
            backend.fit(model, cancer_splits, PROJECT.task, train, 1, model_dir, live)
        curves[name] = {
            metric: np.loadtxt(live_dir / "plots" / "metrics" / metric, skiprows=1, delimiter="\t", usecols=1)
            for metric in ("train/loss.tsv", "eval/loss.tsv")
        }
    for metric in curves["numpy"]:
        assert len(curves["numpy"][metric]) == train.epochs
        np.testing.assert_allclose(curves["numpy"][metric], curves["torch"][metric], rtol=1e-5)


# --------------------------------------------------------------------------- validation


def _validate(raw, docs_dir=None):
    from curriculum.validation import validate_tables

    tables, expectations = PROJECT.validation(raw, CONFIG)
    return validate_tables("simple_nn", tables, expectations, docs_dir)


def _failures(report) -> str:
    from curriculum.validation import DataValidationError, raise_for_failures

    assert not report["success"]
    with pytest.raises(DataValidationError) as info:
        raise_for_failures(report)
    return str(info.value)


def test_clean_breast_cancer_passes(cancer_raw):
    report = _validate(cancer_raw)
    assert report["success"] and report["evaluated_expectations"] == 2 + 31 + 31 + 1 + 30 + 3


def test_validation_rejects_a_missing_column(cancer_raw):
    raw = dict(cancer_raw)
    keep = [i for i, name in enumerate(raw["feature_names"]) if name != "mean area"]
    raw["x"], raw["feature_names"] = raw["x"][:, keep], raw["feature_names"][keep]
    message = _failures(_validate(raw))
    assert "missing columns ['mean area']" in message
    assert "column 'mean area' does not exist in the table" in message


def test_validation_rejects_a_null_naming_the_column_and_row(cancer_raw):
    raw = dict(cancer_raw)
    raw["x"] = raw["x"].copy()
    raw["x"][123, 1] = np.nan  # "mean texture"
    message = _failures(_validate(raw))
    assert "expect_column_values_to_not_be_null(column='mean texture') failed: 1 of 569 rows unexpected (row 123)" in message
    assert message.count("failed") == 2  # the header line and this one failure: nothing else is flagged


def test_validation_rejects_a_target_outside_0_1_naming_the_rows(cancer_raw):
    raw = dict(cancer_raw)
    raw["y"] = raw["y"].copy()
    raw["y"][[7, 300]] = [2, -1]
    message = _failures(_validate(raw))
    assert "expect_column_values_to_be_in_set(column='malignant', value_set=[0, 1]) failed: 2 of 569 rows" in message
    assert "(rows 7, 300)" in message


def test_validation_rejects_values_outside_the_published_ranges(cancer_raw):
    raw = dict(cancer_raw)
    raw["x"] = raw["x"].copy()
    raw["x"][42, 0] = -1.0  # a negative radius
    message = _failures(_validate(raw))
    assert "expect_column_values_to_be_between(column='mean radius', min_value=0) failed: 1 of 569 rows" in message
    assert "(row 42)" in message


def test_validate_stage_stops_with_the_column_and_row_named(cancer_raw, tmp_path):
    raw = dict(cancer_raw)
    raw["x"] = raw["x"].copy()
    raw["x"][5, 3] = np.nan  # "mean area"
    RawData.write(tmp_path / "raw", raw, {"source": "breast_cancer"})
    result = subprocess.run(
        [sys.executable, "-m", "stages.validate", "--project", "simple_nn", "--raw", str(tmp_path / "raw"),
         "--report", str(tmp_path / "validation.json"), "--docs", str(tmp_path / "docs")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode != 0
    assert "column='mean area'" in result.stderr and "(row 5)" in result.stderr
    assert json.loads((tmp_path / "validation.json").read_text())["success"] is False


# --------------------------------------------------------------------------- Caravan, end to end


@pytest.fixture(scope="module")
def caravan_repo(tmp_path_factory):
    """A copy of the repository with simple_nn on a Caravan slice (first 40 rows of each class),
    run through every simple_nn stage with the real DVC."""
    from tests.smoke import build_smoke_repo, commit, dvc

    root = build_smoke_repo(tmp_path_factory.mktemp("caravan") / "repo")
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    section = params["simple_nn"]
    section["download"].update(source="caravan", max_per_class=40)
    section["train"].update(epochs=20, pos_weight=2.0)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    commit(root, "simple_nn on a Caravan slice")
    dvc(root, "repro", *(f"{kind}@simple_nn-{fw}" for kind in ("evaluate", "export") for fw in FRAMEWORKS))
    return root


@pytest.mark.slow  # with the next: ~70 s for a second repository copy, its wheel fetched from PyPI
def test_caravan_is_the_real_coil_2000_table(caravan_repo):
    """The full table read out of the verified ISLP wheel: 5,822 rows, 85 integer features, 348 buyers."""
    from curriculum.projects.simple_nn import fetch_caravan

    downloads = caravan_repo / "downloads" / "simple_nn"  # dvc.yaml: --downloads downloads, one folder per project
    raw = fetch_caravan(downloads, downloads / "partial")  # the verified wheel is already there: no pip
    assert raw["x"].shape == (5822, 85) and raw["x"].dtype == np.int64
    assert int(raw["y"].sum()) == 348
    assert list(raw["feature_names"]) == list(CARAVAN_FEATURES)
    assert list(raw["class_names"]) == ["No", "Yes"]


@pytest.mark.slow
def test_caravan_slice_runs_end_to_end(caravan_repo):
    root = caravan_repo
    source = json.loads((root / "data/simple_nn/raw/source.json").read_text())
    assert source["source"] == "caravan" and source["arrays"]["y"] == [80] and source["arrays"]["x"] == [80, 85]
    validation = json.loads((root / "reports/simple_nn/validation.json").read_text())
    assert validation["success"] and validation["tables"]["table"]["rows"] == 80
    assert validation["evaluated_expectations"] == 2 + 2 * 86 + 1 + 85 + 3

    data = ProcessedData.read(root / "data/simple_nn/processed")
    assert data.split("train")["x"].shape[1] == 85 and len(data.split("test")["y"]) == 16
    scaler = data.fitted["input_scaler"]
    raw_test = data.split("test")["x"].astype(np.float64) * scaler["scale"] + scaler["mean"]
    assert np.abs(raw_test - np.round(raw_test)).max() < 1e-4  # the export input really is the integer codes

    for framework in FRAMEWORKS:
        meta = read_model_meta(root / f"data/simple_nn/models/{framework}")
        assert meta["train"]["pos_weight"] == 2.0 and meta["spec"]["input_shape"] == [85]
        assert meta["framework"] == framework
        loss_curve = (root / f"reports/simple_nn/{framework}/train/plots/metrics/train/loss.tsv").read_text()
        assert len(loss_curve.splitlines()) == 1 + 20
        metrics = json.loads((root / f"reports/simple_nn/{framework}/metrics.json").read_text())
        for name in ("accuracy", "roc_auc", "pr_auc", "balanced_accuracy", "loss"):
            assert 0.0 <= metrics[name] <= max(1.0, metrics["loss"]), (framework, name, metrics[name])
        for plot in ("roc.json", "precision_recall.json", "confusion.json"):
            assert json.loads((root / f"reports/simple_nn/{framework}/plots/{plot}").read_text())
        export = json.loads((root / f"reports/simple_nn/{framework}/export.json").read_text())
        assert export["raw_input"] and export["identical_argmax"] and export["max_abs_diff"] < 1e-4
        assert export["passed"]

    # Serving the NumPy export from raw integer codes, with NumPy alone, matches its ONNX graph.
    from curriculum.onnx_check import run_onnx

    bundle = root / "data/simple_nn/export/numpy/model.npz"
    served = numpy_mlp.score_raw_rows(bundle, raw_test)
    onnx_proba = run_onnx(root / "data/simple_nn/export/numpy/model.onnx", {"x": raw_test.astype(np.float32)})["proba"]
    np.testing.assert_allclose(served, onnx_proba.reshape(-1), atol=1e-5)
    assert served.shape == (16,)


# --------------------------------------------------------------------------- the full default run (slow)


@pytest.mark.slow
def test_breast_cancer_full_run_meets_the_targets_and_reruns_identically(tmp_path):
    """The default simple_nn params, full size, through DVC: every variant reaches ROC-AUC >= 0.99
    and test accuracy >= 0.95, and a forced rerun reproduces every metric exactly."""
    from tests.smoke import build_smoke_repo, commit, dvc

    root = build_smoke_repo(tmp_path / "repo")
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["simple_nn"] = PARAMS  # undo the smoke copy's shrinking for this project
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    commit(root, "full-size simple_nn")
    targets = [f"{kind}@simple_nn-{fw}" for kind in ("evaluate", "export") for fw in FRAMEWORKS]

    def read_metrics() -> dict:
        return {fw: {name: json.loads((root / f"reports/simple_nn/{fw}/{name}.json").read_text())
                     for name in ("metrics", "export", "train/metrics")} for fw in FRAMEWORKS}

    dvc(root, "repro", *targets)
    first = read_metrics()
    for framework, reports in first.items():
        assert reports["metrics"]["roc_auc"] >= 0.99, (framework, reports["metrics"])
        assert reports["metrics"]["accuracy"] >= 0.95, (framework, reports["metrics"])
        assert reports["export"]["identical_argmax"] and reports["export"]["raw_input"] and reports["export"]["passed"]
    dvc(root, "repro", "--force", *targets)
    assert read_metrics() == first
