"""The model server (``python -m pipeline serve-models``) over real HTTP on the built repository's
exported models: every route, answers checked against onnxruntime on the test split's own inputs,
every kind of bad request, a model missing on disk, micro-batching and graceful shutdown."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from PIL import Image

from curriculum.layout import ProcessedData
from curriculum.projects import get_project
from pipeline.serving.process import ServerProcess

EXAMPLES = 5  # test-split examples posted per model (one request: a batch)


def served_variants(root: Path) -> dict[str, dict]:
    """Every variant of a project with a serving interface (the others export files, no endpoint)."""
    variants = yaml.safe_load((root / "params.yaml").read_text())["variants"]
    return {name: spec for name, spec in variants.items() if get_project(spec["project"]).serving is not None}


def predict(server: ServerProcess, name: str, body=None, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/models/{name}/predict", json=body, timeout=60, **kwargs)


def exported(root: Path, project: str, variant: str, x: np.ndarray) -> np.ndarray:
    """The exported graph's first output on ``x``, in this process."""
    session = ort.InferenceSession(str(root / f"data/{project}/export/{variant}/model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_every_exported_model_is_listed_ready_with_its_provenance_and_test_metrics(model_server, built_repo):
    variants = served_variants(built_repo)
    assert httpx.get(f"{model_server.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{model_server.url}/ready")
    assert ready.status_code == 200 and ready.json()["models"] == sorted(variants) and ready.json()["failed"] == {}

    lock = yaml.safe_load((built_repo / "dvc.lock").read_text())["stages"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=built_repo, capture_output=True, text=True).stdout.strip()
    # the smoke copy was committed before its `dvc repro`: HEAD's dvc.lock records other exports
    committed_lock = yaml.safe_load(subprocess.run(["git", "show", "HEAD:dvc.lock"], cwd=built_repo,
                                                   capture_output=True, text=True).stdout)["stages"]
    listed = {model["name"]: model for model in model_server.get("/v1/models")["models"]}
    assert set(listed) == set(variants)
    for name, spec in variants.items():
        model = listed[name]
        assert (model["status"], model["project"], model["variant"], model["framework"]) == (
            "ready", spec["project"], spec["variant"], spec["framework"])
        export_dir = built_repo / f"data/{spec['project']}/export/{spec['variant']}"
        provenance = model["provenance"]
        assert provenance["dvc_md5"] == lock[f"export@{name}"]["outs"][0]["md5"]
        assert provenance["git_commit"] == head
        assert provenance["committed"] == (committed_lock.get(f"export@{name}", {}).get("outs", [{}])[0].get("md5")
                                           == provenance["dvc_md5"])
        assert provenance["onnx_sha256"] == hashlib.sha256((export_dir / "model.onnx").read_bytes()).hexdigest()
        metrics = json.loads((built_repo / f"reports/{spec['project']}/{spec['variant']}/metrics.json").read_text())
        assert model["test_metrics"] and all(metrics[key] == value for key, value in model["test_metrics"].items())
        assert model["input"]["request_schema"]["additionalProperties"] is False
        assert model_server.get(f"/v1/models/{name}") == model

    assert httpx.get(f"{model_server.url}/docs").status_code == 200
    openapi = httpx.get(f"{model_server.url}/openapi.json").json()
    text = json.dumps(openapi)
    for name in variants:
        body = openapi["paths"][f"/v1/models/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["properties"] and body["example"] == listed[name]["input"]["example"]
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}:
        assert ref in openapi["components"]["schemas"], ref  # every reference resolves


def test_answers_are_the_exported_models_on_the_test_splits_own_inputs(model_server, built_repo):
    """What a user sends (raw pixels 0-255, raw feature rows, review texts, a date) becomes exactly
    the input the pipeline scored: the answers equal onnxruntime on the processed test split."""
    data = {project: ProcessedData.read(built_repo / f"data/{project}/processed")
            for project in {spec["project"] for spec in served_variants(built_repo).values()}}
    for name, spec in served_variants(built_repo).items():
        project, test = spec["project"], data[spec["project"]].split("test")
        card = json.loads((built_repo / f"data/{project}/export/{spec['variant']}/serving.json").read_text())
        if card["widget"] == "image":
            pixels = np.rint(test["x"][:EXAMPLES] * 255).astype(int)
            body = {"images": [image[..., 0].tolist() if card["channels"] == 1 else image.tolist() for image in pixels]}
            expected = exported(built_repo, project, spec["variant"], (pixels / 255.0).astype(np.float32))
        elif card["widget"] == "features":
            rows = data[project].raw_inputs(test["x"][:EXAMPLES]).astype(np.float64)
            body = {"rows": [dict(zip((f["name"] for f in card["features"]), map(float, row))) for row in rows]}
            expected = exported(built_repo, project, spec["variant"], rows.astype(np.float32))
        elif card["widget"] == "text":
            body = {"texts": [str(text) for text in test["text"][:EXAMPLES]]}
            from curriculum.projects import get_project

            ids = get_project(project).model_data(data[project], card["model"]).split("test")["x"][:EXAMPLES]
            expected = exported(built_repo, project, spec["variant"], ids)
        else:
            assert card["widget"] == "forecast"
            origin = str(test["date"][-1])  # the last test window: its forecast is in the evaluation
            response = predict(model_server, name, {"origin": origin})
            assert response.status_code == 200, response.text
            answer = response.json()["predictions"][0]
            window = data[project].raw_inputs(test["x"][-1:]).astype(np.float32)
            np.testing.assert_allclose([step["value"] for step in answer["forecast"]],
                                       exported(built_repo, project, spec["variant"], window)[0], rtol=1e-5, atol=1e-4)
            assert [step["actual"] for step in answer["forecast"]] == pytest.approx(test["y_true"][-1].tolist())
            assert answer["history"][-1]["date"] == origin and len(answer["history"]) == card["lookback"]
            continue
        response = predict(model_server, name, body)
        assert response.status_code == 200, f"{name}: {response.text}"
        answers = response.json()["predictions"]
        proba = np.array([list(answer["probabilities"].values()) for answer in answers])
        if expected.shape[1] == 1:  # binary: the positive class's probability
            proba = proba[:, 1:]
        np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        assert [answer["label"] for answer in answers] == [
            card["class_names"][int(p[0] >= 0.5) if expected.shape[1] == 1 else int(np.argmax(p))] for p in expected]


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_image_files_are_read_as_pixels_and_uploads_work(model_server, built_repo):
    name = "image_classification-torch"
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:16] = 255
    as_pixels = predict(model_server, name, {"images": [digit.tolist()]}).json()["predictions"]
    as_file = predict(model_server, name, {"files": [png_base64(digit)]}).json()["predictions"]
    assert as_file == as_pixels
    # a photo of another size and mode is centre-cropped, resized and turned grey
    photo = np.zeros((90, 60, 3), np.uint8)
    photo[10:80, 25:35] = 255
    upload = httpx.post(f"{model_server.url}/v1/models/{name}/predict/upload", timeout=60,
                        files=[("files", ("digit.png", base64.b64decode(png_base64(digit)), "image/png")),
                               ("files", ("photo.png", base64.b64decode(png_base64(photo)), "image/png"))])
    assert upload.status_code == 200, upload.text
    assert upload.json()["predictions"][0] == as_pixels[0] and len(upload.json()["predictions"]) == 2


BAD_REQUESTS = [
    # (model, body or raw bytes, status, the error's location, words its message must hold)
    ("simple_nn-torch", b"{not json", 422, ["body"], "Invalid JSON"),
    ("simple_nn-torch", {}, 422, ["body", "rows"], "Field required"),
    ("simple_nn-torch", {"rows": []}, 422, ["body", "rows"], "at least 1 item"),
    ("simple_nn-torch", {"rows": [{"mean radius": 1.0}]}, 422, ["body", "rows", 0, "mean texture"], "Field required"),
    ("simple_nn-torch", "NEGATIVE", 422, ["body", "rows", 0, "mean radius"], "greater than or equal to 0"),
    ("simple_nn-torch", "TEXT_VALUE", 422, ["body", "rows", 0, "worst area"], "valid number"),
    ("simple_nn-torch", {"rows": [], "extra": 1}, 422, ["body", "extra"], "Extra inputs are not permitted"),
    ("image_classification-torch", {"images": [[[0] * 28] * 27]}, 422, ["body", "images", 0], "at least 28 items"),
    ("image_classification-torch", {"images": [[[0] * 28] * 27 + [[0] * 27 + [256]]]}, 422,
     ["body", "images", 0, 27, 27], "less than or equal to 255"),
    ("image_classification-torch", {"images": [[[0] * 28] * 28] * 65}, 422, ["body", "images"], "at most 64 items"),
    ("image_classification-torch", {}, 422, ["body"], "exactly one of `images`"),
    ("image_classification-torch", {"files": ["%%%"]}, 422, ["body", "files", 0], "not valid base64"),
    ("image_classification-torch", {"files": [base64.b64encode(b"plain text").decode()]}, 422,
     ["body", "files", 0], "not an image file"),
    ("sentiment-lstm-keras", {"texts": ["   "]}, 422, ["body", "texts", 0], "at least one word"),
    ("sentiment-lstm-keras", {"texts": ["x" * 20_001]}, 422, ["body", "texts", 0], "at most 20000 characters"),
    ("sentiment-lstm-keras", {"texts": "one review"}, 422, ["body", "texts"], "valid array"),
    ("forecasting-gru-torch", {"origin": "1999-01-01"}, 422, ["body", "origin"], "not a date the served series can forecast from"),
    ("forecasting-gru-torch", {"origin": "2015-02-30"}, 422, ["body", "origin"], "valid date"),
    ("forecasting-gru-torch", {"origin": "2020-01-01", "window": [[1.0, 2.0, 3.0, 4.0]]}, 422, ["body", "window"],
     "at least 56 items"),
    ("forecasting-gru-torch", {"origin": "2020-01-01", "window": [[1.0, 2.0]] * 56}, 422, ["body", "window", 0],
     "at least 4 items"),
    ("forecasting-gru-torch", "INFINITE_WINDOW", 422, ["body", "window", 0, 0], "finite number"),
]


def bad_body(name: str, body, example: dict):
    """The table's symbolic bodies: the model's own example with one value broken."""
    if body == "NEGATIVE":
        return {"rows": [{**example["rows"][0], "mean radius": -1.0}]}
    if body == "TEXT_VALUE":
        return {"rows": [{**example["rows"][0], "worst area": "large"}]}
    if body == "INFINITE_WINDOW":
        return b'{"origin": "2020-01-01", "window": [' + b", ".join([b"[1e999, 1, 1, 1]"] * 56) + b"]}"
    return body


@pytest.mark.parametrize("name, body, status, loc, words", BAD_REQUESTS,
                         ids=[f"{case[0]}-{case[3][-1]}-{case[4][:20]}" for case in BAD_REQUESTS])
def test_bad_requests_get_422_naming_the_field_and_the_rule(model_server, name, body, status, loc, words):
    body = bad_body(name, body, model_server.get(f"/v1/models/{name}")["input"]["example"])
    response = (httpx.post(f"{model_server.url}/v1/models/{name}/predict", content=body, timeout=60,
                           headers={"Content-Type": "application/json"}) if isinstance(body, bytes)
                else predict(model_server, name, body))
    assert response.status_code == status, response.text
    details = response.json()["detail"]
    assert any(detail["loc"] == loc and words in detail["msg"] for detail in details), details
    assert not any(detail["loc"] == ["body", "origin"] for detail in details if loc[:2] == ["body", "window"])
    assert httpx.get(f"{model_server.url}/health").status_code == 200


def test_other_bad_calls_are_refused_clearly(model_server):
    assert predict(model_server, "no-such-model", {}).status_code == 404
    missing = httpx.get(f"{model_server.url}/v1/models/no-such-model")
    assert missing.status_code == 404 and "GET /v1/models lists them" in missing.json()["detail"]
    upload = httpx.post(f"{model_server.url}/v1/models/sentiment-lstm-keras/predict/upload",
                        files=[("files", ("a.txt", b"good", "text/plain"))])
    assert upload.status_code == 422 and "takes text input, not uploaded files" in upload.text
    too_big = httpx.post(f"{model_server.url}/v1/models/simple_nn-torch/predict", content=b" " * (8 * 1024 * 1024 + 1),
                         headers={"Content-Type": "application/json"}, timeout=60)
    assert too_big.status_code == 413 and "at most" in too_big.json()["detail"]


def partial_copy(built_repo: Path, target: Path, projects: tuple[str, ...]) -> Path:
    """The serving-relevant files of ``projects`` only: params (their variants), dvc.lock, exports, metrics."""
    params = yaml.safe_load((built_repo / "params.yaml").read_text())
    params["variants"] = {name: spec for name, spec in params["variants"].items() if spec["project"] in projects}
    target.mkdir(parents=True)
    (target / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy2(built_repo / "dvc.lock", target / "dvc.lock")
    for project in projects:
        shutil.copytree(built_repo / f"data/{project}/export", target / f"data/{project}/export")
        shutil.copytree(built_repo / f"reports/{project}", target / f"reports/{project}")
    return target


def test_a_missing_model_is_reported_the_others_serve_batch_and_shut_down_gracefully(built_repo, tmp_path):
    root = partial_copy(built_repo, tmp_path / "repo", ("simple_nn", "image_classification"))
    (root / "data/simple_nn/export/keras/model.onnx").unlink()
    with ServerProcess(root, "--watch", "0", "--max-wait-ms", "1000", "--micro-batch", "64",
                       log_path=tmp_path / "server.log") as server:
        ready = server.get("/ready")
        assert ready["ready"] and "simple_nn-torch" in ready["models"]
        assert "data/simple_nn/export/keras/model.onnx is missing" in ready["failed"]["simple_nn-keras"]
        listed = {model["name"]: model for model in server.get("/v1/models")["models"]}
        assert listed["simple_nn-keras"]["status"] == "failed" and "missing" in listed["simple_nn-keras"]["error"]
        refused = predict(server, "simple_nn-keras", {"rows": []})
        assert refused.status_code == 503 and "failed to load" in refused.json()["detail"]
        assert predict(server, "simple_nn-torch", listed["simple_nn-torch"]["input"]["example"]).status_code == 200
        # The file is back (as `dvc checkout` would put it): an explicit reload loads it, the rest stay as they are.
        shutil.copy2(built_repo / "data/simple_nn/export/keras/model.onnx", root / "data/simple_nn/export/keras/model.onnx")
        reloaded = httpx.post(f"{server.url}/v1/reload", timeout=60).json()
        assert reloaded["loaded"] == ["simple_nn-keras"] and reloaded["failed"] == []
        assert server.get("/ready")["failed"] == {} and server.get("/v1/models/simple_nn-keras")["status"] == "ready"
        assert server.get("/v1/models/simple_nn-torch")["loaded_at"] == listed["simple_nn-torch"]["loaded_at"]

        # Requests that arrive within the wait (1 s here) are scored in one onnxruntime call.
        name, example = "image_classification-torch", listed["image_classification-torch"]["input"]["example"]
        start = threading.Barrier(3)
        responses: list[httpx.Response] = []

        def post_together() -> None:
            with httpx.Client(timeout=60) as client:  # connected before the barrier: the posts leave together
                client.get(f"{server.url}/health")
                start.wait()
                responses.append(client.post(f"{server.url}/v1/models/{name}/predict", json=example))

        threads = [threading.Thread(target=post_together) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [response.status_code for response in responses] == [200] * 3
        assert len({json.dumps(response.json()) for response in responses}) == 1
        assert server.get(f"/v1/models/{name}")["micro_batching"] == {
            "batches": 1, "examples": 3, "mean_batch": 3.0, "waiting": 0}

        # SIGTERM while a request waits in its batch: it is still answered, then the server exits cleanly.
        late: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: late.append(predict(server, name, example)))
        thread.start()
        deadline = time.monotonic() + 30
        while server.get(f"/v1/models/{name}")["micro_batching"]["waiting"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.stop() == -signal.SIGTERM  # uvicorn re-raises the signal once it has shut down
        thread.join()
        assert late[0].status_code == 200
        assert "every queued request was answered" in server.log()
