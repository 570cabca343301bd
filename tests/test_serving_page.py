"""The try-it page in real headless Chromium (Debian's, driven by Playwright): draw a digit and read
the answer, paste a review, pick a forecast date, fill in a table row, see a bad value refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is missing: sh scripts/install_browser.sh")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


def open_model(browser, model_server, name: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{model_server.url}/?model={name}")
    page.wait_for_selector("body[data-ready='true']")
    assert page.input_value("#model") == name
    return page, errors


def test_draw_a_digit_and_read_the_answer(browser, model_server, built_repo):
    name = "image_classification-torch"
    page, errors = open_model(browser, model_server, name)
    pad = page.locator("#pad").bounding_box()
    # a "1": one stroke down the middle of the pad
    page.mouse.move(pad["x"] + 140, pad["y"] + 40)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(pad["x"] + 140 + step * 0.5, pad["y"] + 40 + step * 10)
    page.mouse.up()
    with page.expect_response(f"**/v1/models/{name}/predict") as answered:
        page.click("#predict-drawing")
    response = answered.value
    image = np.array(json.loads(response.request.post_data)["images"][0], dtype=np.float32)
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")

    # What the page sent looks like an MNIST digit: 28x28, ink 20 px tall, centred by mass.
    assert image.shape == (28, 28) and image.max() > 200 and image.min() == 0
    rows = np.flatnonzero(image.max(axis=1) > 50)
    assert 17 <= rows[-1] - rows[0] + 1 <= 21
    mass_row, mass_col = (np.indices(image.shape) * image).sum(axis=(1, 2)) / image.sum()
    assert abs(mass_row - 13.5) <= 1 and abs(mass_col - 13.5) <= 1
    # The answer shown is the model's: onnxruntime on those pixels, here.
    session = ort.InferenceSession(str(built_repo / "data/image_classification/export/torch/model.onnx"),
                                   providers=["CPUExecutionProvider"])
    proba = session.run(None, {session.get_inputs()[0].name: (image / 255.0)[None, ..., None]})[0][0]
    assert page.text_content("#answer") == str(int(np.argmax(proba))) == response.json()["predictions"][0]["label"]
    assert page.locator("#chart .bar").count() == 10 and page.locator("#chart .bar.top").count() == 1
    assert errors == []


def test_review_forecast_and_table_row_forms(browser, model_server):
    page, errors = open_model(browser, model_server, "sentiment-lstm-keras")
    page.fill("#text", "A warm, funny and beautifully acted film.")
    page.click("#predict-text")
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")
    assert page.text_content("#answer") in {"negative", "positive"} and page.locator("#chart .bar").count() == 2

    page.select_option("#model", "forecasting-gru-torch")
    assert page.get_attribute("#origin", "min") < page.get_attribute("#origin", "max")
    page.fill("#origin", "2015-06-01")
    page.click("#predict-forecast")
    page.wait_for_selector("#chart svg polyline")
    assert page.text_content("#answer").startswith("temp_max on 2015-06-02:")
    assert page.locator("#chart svg polyline").count() == 3  # history, actual, forecast

    page.select_option("#model", "simple_nn-torch")
    page.fill("input[data-feature='mean radius']", "-5")
    page.click("#predict-features")
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    assert "422" in page.text_content("#error") and "rows.0.mean radius" in page.text_content("#error")
    page.fill("input[data-feature='mean radius']", "12")
    page.click("#predict-features")
    page.wait_for_function("document.getElementById('answer').textContent.length > 0")
    assert page.text_content("#answer") in {"benign", "malignant"} and page.text_content("#error") == ""
    assert errors == []
