"""The fine-tuned MiniLM of the sentiment project: offline load, its tokenizer, its pooling and its export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from curriculum.frameworks import torch_backend
from curriculum.projects.sentiment import minilm

REPO_ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["a gripping, funny film.", "The plot is thin and the acting is wooden; I nearly walked out.", "meh"]
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return minilm.build_torch_minilm({"input_shape": [MAX_TOKENS], "n_outputs": 1}, SimpleNamespace(dropout=0.1)).eval()


def test_builds_with_the_network_unreachable():
    """Offline mode, a dead Hub endpoint, and every socket connection refused: nothing is fetched."""
    child = """
import json, socket
attempts = []
def refuse(self, address, *args):
    attempts.append(str(address))
    raise OSError("no network in this test")
socket.socket.connect = socket.socket.connect_ex = refuse
import torch
from types import SimpleNamespace
from curriculum.projects.sentiment import minilm
model = minilm.build_torch_minilm({"input_shape": [8], "n_outputs": 1}, SimpleNamespace(dropout=0.1)).eval()
with torch.no_grad():
    logits = model(torch.from_numpy(minilm.wordpiece_ids(["fine"], 8)))
print(json.dumps({"attempts": attempts, "shape": list(logits.shape)}))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "-c", child], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"attempts": [], "shape": [1, 1]}


def test_wordpiece_ids_are_the_models_own_pinned():
    ids = minilm.wordpiece_ids(["a gripping, funny film.", "a gripping, funny film."], 10)
    assert ids.dtype == np.int64 and ids.shape == (2, 10)
    # [CLS] a gripping , funny film . [SEP] [PAD] [PAD]
    assert ids.tolist() == [[101, 1037, 13940, 1010, 6057, 2143, 1012, 102, 0, 0]] * 2
    # Cut to fit, [SEP] kept last.
    assert minilm.wordpiece_ids(["a gripping, funny film."], 4).tolist() == [[101, 1037, 13940, 102]]


def test_builder_is_repeatable_and_gives_one_logit_per_review(model):
    torch.manual_seed(0)
    again = minilm.build_torch_minilm({"input_shape": [MAX_TOKENS], "n_outputs": 1}, SimpleNamespace(dropout=0.1))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    with torch.no_grad():
        logits = model(torch.from_numpy(minilm.wordpiece_ids(SENTENCES, MAX_TOKENS)))
    assert logits.shape == (len(SENTENCES), 1) and logits.dtype == torch.float32


def test_pooling_is_sentence_transformers_and_ignores_padding(model):
    """The embedding the head reads is the model's published sentence embedding, however long the padding."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(minilm.model_dir()), device="cpu").encode(
        SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    with torch.no_grad():
        # Lengths that cut none of them; the model takes any length up to its 512 positions.
        short = model.embed(torch.from_numpy(minilm.wordpiece_ids(SENTENCES, 2 * MAX_TOKENS)))
        long = model.embed(torch.from_numpy(minilm.wordpiece_ids(SENTENCES, 4 * MAX_TOKENS)))
    assert torch.nn.functional.cosine_similarity(short, reference).min().item() > 1 - 1e-6
    torch.testing.assert_close(short, long, atol=1e-5, rtol=0)


def test_onnx_export_matches_torch(model, tmp_path):
    import onnxruntime

    ids = minilm.wordpiece_ids(SENTENCES + ["An unexpectedly moving portrait of a family in crisis."], MAX_TOKENS)
    prediction = torch_backend.PredictionModel(model, torch.nn.Sigmoid(), ("proba",)).eval()
    files = torch_backend.export(prediction, tmp_path, ids)
    session = onnxruntime.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    exported = session.run(["proba"], {"x": ids})[0]
    np.testing.assert_allclose(exported, torch_backend.predict(prediction, ids)["proba"], atol=1e-4, rtol=0)
