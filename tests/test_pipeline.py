"""The whole DVC pipeline, end to end, on a tiny slice in a temporary copy of the repo."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from curriculum.io import load_npz, save_npz
from curriculum.layout import RawData
from pipeline.serving.models import Registry, Revision
from pipeline.serving.process import ServerProcess
from tests.smoke import REPO_ROOT, build_smoke_repo, commit, dvc, stages_run

IC = "image_classification"


def read_metrics(root: Path, framework: str) -> dict:
    return json.loads((root / f"reports/{IC}/{framework}/metrics.json").read_text())


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under a directory output (e.g. processed data), by relative path."""
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def test_dag_has_every_stage_in_order(built_repo):
    dag = dvc(built_repo, "dag", "--md").stdout
    for upstream, downstream in [
        ("download", "validate"), ("validate", "preprocess"), ("preprocess", "baselines"), ("preprocess", "train"),
        ("baselines", "evaluate"), ("train", "evaluate"), ("train", "export"),
    ]:
        assert f"{upstream}@{IC}" in dag and f"{downstream}@{IC}" in dag


def test_repro_builds_every_output_and_is_then_up_to_date(built_repo):
    baselines = json.loads((built_repo / f"reports/{IC}/baselines.json").read_text())
    assert {"most_frequent", "logistic_regression"} <= baselines.keys()
    assert all(0.0 <= scores["accuracy"] <= 1.0 for scores in baselines.values())
    for framework in ("keras", "torch"):
        metrics = read_metrics(built_repo, framework)
        assert {"accuracy", "loss", "macro_f1", "per_class"} <= metrics.keys()
        assert 0.0 <= metrics["accuracy"] <= 1.0
        assert set(metrics["vs_baselines"]) == set(baselines)  # every model is compared with every baseline
        export = json.loads((built_repo / f"reports/{IC}/{framework}/export.json").read_text())
        assert export["identical_argmax"] and export["max_abs_diff"] < 1e-4 and export["passed"]
        assert (built_repo / f"data/{IC}/export/{framework}/model.onnx").stat().st_size > 0
        assert (built_repo / f"reports/{IC}/{framework}/plots/misclassified.png").stat().st_size > 0
        assert (built_repo / f"reports/{IC}/{framework}/train/plots/metrics/eval/loss.tsv").exists()
    assert (built_repo / f"reports/{IC}/data_docs/index.html").exists()
    validation = json.loads((built_repo / f"reports/{IC}/validation.json").read_text())
    assert validation["success"] and validation["unsuccessful_expectations"] == 0

    again = dvc(built_repo, "repro")
    assert stages_run(again.stdout) == []
    assert "Data and pipelines are up to date" in again.stdout


def served(server: ServerProcess) -> dict[str, dict]:
    return {model["name"]: model for model in server.get("/v1/models")["models"]}


def test_param_change_reruns_only_dependent_stages_and_diffs_show_it(repo_copy, tmp_path):
    """... and the model server, watching the workspace, serves the new models once `dvc repro` is done."""
    commit(repo_copy, "built")  # the smoke copy's outputs, committed: what HEAD~1 serves below
    with ServerProcess(repo_copy, "--watch", "0.5", log_path=tmp_path / "server.log") as server:
        before = served(server)
        assert all(model["provenance"]["committed"] for model in before.values())
        image = {"images": [(np.eye(28, dtype=int) * 255).tolist()]}
        answer_before = httpx.post(f"{server.url}/v1/models/{IC}-torch/predict", json=image).json()

        params_path = repo_copy / "params.yaml"
        params = yaml.safe_load(params_path.read_text())
        params[IC]["train"]["learning_rate"] = 0.002
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))

        ran = stages_run(dvc(repo_copy, "repro").stdout)
        assert sorted(ran) == sorted(
            [f"{kind}@{IC}-{framework}" for kind in ("train", "evaluate", "export") for framework in ("keras", "torch")]
            + [f"report@{IC}"]
        )
        lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())["stages"]
        new_hashes = {f"{IC}-{fw}": lock[f"export@{IC}-{fw}"]["outs"][0]["md5"] for fw in ("keras", "torch")}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(served(server)[name]["provenance"]["dvc_md5"] != md5
                                                  for name, md5 in new_hashes.items()):
            time.sleep(0.5)
        after = served(server)
        for name, model in after.items():
            if name in new_hashes:  # reloaded: the new export, not yet committed
                assert model["provenance"]["dvc_md5"] == new_hashes[name] != before[name]["provenance"]["dvc_md5"]
                assert not model["provenance"]["committed"] and model["loaded_at"] > before[name]["loaded_at"]
            else:  # untouched models are not reloaded
                assert model["loaded_at"] == before[name]["loaded_at"] and model["status"] == "ready"
        answer_after = httpx.post(f"{server.url}/v1/models/{IC}-torch/predict", json=image).json()
        assert answer_after["predictions"] != answer_before["predictions"]
        assert server.stop() == -signal.SIGTERM  # graceful: uvicorn re-raises the signal once it has shut down
    commit(repo_copy, "learning rate 0.002")
    # The previous commit's models, read through DVC's API from the cache: what `serve-models --rev HEAD~1` serves.
    previous = Registry(Revision(repo_copy, "HEAD~1"), max_batch=8, threads=1)
    previous.load()
    old_torch = previous.models[f"{IC}-torch"]
    assert old_torch.provenance["dvc_md5"] == before[f"{IC}-torch"]["provenance"]["dvc_md5"]
    request = old_torch.request_model.model_validate(image)
    proba = old_torch.score(old_torch.interface.model_inputs(request, old_torch.card, old_torch.prepared))["proba"][0]
    assert proba.tolist() == pytest.approx(list(answer_before["predictions"][0]["probabilities"].values()), abs=1e-7)

    params_diff = dvc(repo_copy, "params", "diff", "HEAD~1", "--json").stdout
    change = json.loads(params_diff)["params.yaml"][f"{IC}.train.learning_rate"]
    assert (change["old"], change["new"]) == (0.001, 0.002)
    metrics_diff = json.loads(dvc(repo_copy, "metrics", "diff", "HEAD~1", "--all", "--json").stdout)
    assert f"reports/{IC}/torch/metrics.json" in metrics_diff
    dvc(repo_copy, "plots", "diff", "HEAD~1", "-o", "plots_html")
    html = (repo_copy / "plots_html" / "index.html").read_text()
    assert "confusion" in html.lower() and "loss" in html


@pytest.mark.slow
def test_forced_rerun_gives_identical_metrics(repo_copy):
    """Slow suite since the server tests joined the default one: there, every framework's retrain
    to byte-identical models is test_keep_results' display-only param test, and the CNN's forced
    rerun at full size is test_default_image_classification_meets_the_targets_and_reruns_identically."""
    before = {framework: read_metrics(repo_copy, framework) for framework in ("keras", "torch")}
    dvc(repo_copy, "repro", "--force", "--downstream", f"train@{IC}-keras", f"train@{IC}-torch")
    after = {framework: read_metrics(repo_copy, framework) for framework in ("keras", "torch")}
    assert after == before


def test_corrupted_data_stops_the_pipeline_and_keeps_downstream_outputs(repo_copy):
    raw_path = repo_copy / f"data/{IC}/raw" / RawData.DATASET
    processed = repo_copy / f"data/{IC}/processed"
    processed_before = snapshot(processed)
    assert processed_before  # the built repo has processed data to lose
    raw = load_npz(raw_path)
    raw["y"] = raw["y"].copy()
    raw["y"][:3] = 11  # labels outside the ten digit classes
    raw_path.unlink()  # DVC's cache hard/sym-links outputs: replace the file, never write through it
    save_npz(raw_path, **raw)

    # A full `dvc repro` would first restore the download stage's output; run the next stage alone.
    result = dvc(repo_copy, "repro", "--single-item", f"validate@{IC}", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "validation failed" in output and "column='label'" in output and "11" in output
    assert snapshot(processed) == processed_before
    assert f"preprocess@{IC}" not in stages_run(result.stdout)


@pytest.mark.slow
def test_default_image_classification_meets_the_targets_and_reruns_identically(tmp_path):
    """The default image_classification params, full size, through DVC: both frameworks reach
    97% test accuracy, and a forced rerun reproduces every metric exactly (about 4 minutes)."""
    root = build_smoke_repo(tmp_path / "repo")
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params[IC] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())[IC]  # undo the shrinking
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    commit(root, "full-size image_classification")
    targets = [f"{kind}@{IC}-{fw}" for kind in ("evaluate", "export") for fw in ("keras", "torch")]

    dvc(root, "repro", *targets)
    first = {fw: read_metrics(root, fw) for fw in ("keras", "torch")}
    for framework, metrics in first.items():
        assert metrics["accuracy"] >= 0.97, (framework, metrics["accuracy"])
    dvc(root, "repro", "--force", *targets)
    assert {fw: read_metrics(root, fw) for fw in ("keras", "torch")} == first
