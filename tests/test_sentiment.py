"""The sentiment project's own logic: tokenizer, leak check, GloVe alignment, the LSTM in both
frameworks and the confidently-wrong table."""
from __future__ import annotations

import numpy as np
import pytest

from curriculum.projects.sentiment import nets, text_data, tokenizer


def test_words_follow_glove_rules():
    assert tokenizer.words("Don't miss it -- it's the year's best sci-fi... I can't wait!") == [
        "do", "n't", "miss", "it", "--", "it", "'s", "the", "year", "'s", "best", "sci", "-", "fi", "...",
        "i", "ca", "n't", "wait", "!"]
    assert tokenizer.words("The U.S. release") == ["the", "u.s", ".", "release"]
    assert tokenizer.words("A \u201cnaïve\u201d film\u2019s charm") == ['a', '"', 'naïve', '"', 'film', "'s", 'charm']


def test_tokenizer_is_fitted_on_its_texts_only_and_pads_in_front():
    fitted = tokenizer.fit(["a good film", "a bad film", "good good"], vocabulary_size=3, max_length=4)
    assert fitted["vocabulary"] == ["good", "a", "film"]  # by frequency, ties alphabetical; "bad" cut
    ids = tokenizer.encode(["good film", "bad", "a a a a a a", "", "unseen words only"], fitted)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [
        [0, 0, 2, 4],
        [0, 0, 0, 1],  # "bad" is outside the vocabulary
        [3, 3, 3, 3],  # cut to max_length, keeping the first tokens
        [0, 0, 0, 0],
        [0, 1, 1, 1],
    ])
    assert tokenizer.n_ids(fitted) == 5


def test_tokenizer_refuses_an_artifact_it_did_not_write():
    with pytest.raises(ValueError, match="not a tokenizer of this pipeline"):
        tokenizer.encode(["x"], {"vocabulary": ["x"], "max_length": 3})
    with pytest.raises(ValueError, match="duplicated"):
        tokenizer.encode(["x"], {"format": tokenizer.FORMAT, "vocabulary": ["x", "x"], "max_length": 3})


def test_embedding_rows_follow_the_tokenizer_ids():
    fitted = tokenizer.fit(["good film", "good plot"], vocabulary_size=10, max_length=4)  # good, film, plot
    vectors = np.arange(6, dtype=np.float32).reshape(3, 2)
    matrix = tokenizer.embedding_from_vectors(fitted, ["plot", "good", "zebra"], vectors, seed=1)
    assert matrix.shape == (5, 2)
    np.testing.assert_array_equal(matrix[tokenizer.PAD], [0, 0])
    np.testing.assert_array_equal(matrix[2], vectors[1])  # good
    np.testing.assert_array_equal(matrix[4], vectors[0])  # plot
    assert np.all(np.abs(matrix[3]) <= 0.05)  # film: not in the vectors, a small random start
    np.testing.assert_array_equal(matrix, tokenizer.embedding_from_vectors(fitted, ["plot", "good", "zebra"], vectors, seed=1))
    assert tokenizer.coverage(["good film", "good"], ["good"]) == {"types": 0.5, "tokens": 2 / 3}


def test_shared_review_between_splits_is_refused_by_name():
    texts = {"train": np.array(["A fine film.", "dull"]), "val": np.array(["other"]),
             "test": np.array(["a  FINE film ."])}
    with pytest.raises(ValueError, match=r"1 reviews are in two splits: train/0 = test/0"):
        text_data.check_no_shared_text(texts)
    text_data.check_no_shared_text({"train": np.array(["a", "b"]), "test": np.array(["c"])})


def test_validation_tables_count_copies_across_splits():
    reviews = {"x": np.array(["Good.", "bad", "fine"]), "y": np.array([1, 0, 1]),
               "x_test": np.array(["good .", "meh"]), "y_test": np.array([1, 0])}
    tables = text_data.review_tables(reviews)
    table = tables["reviews"]
    assert list(table.index) == ["train/0", "train/1", "train/2", "test/0", "test/1"]
    assert table["copies"].tolist() == [2, 1, 1, 2, 1]
    assert table["tokens"].tolist() == [2, 1, 1, 2, 1]


class _Train:
    embedding_dim, units, embedding_dropout, dropout, embedding_trainable = 4, 3, 0.0, 0.0, False


def test_lstm_has_the_same_parameters_in_both_frameworks_and_starts_from_glove():
    import torch

    spec = {"input_shape": [6], "n_outputs": 1, "n_ids": 7}
    glove = {"weights": np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)}
    keras_model = nets.keras_glove_lstm(spec, _Train, glove)
    torch_model = nets.torch_glove_lstm(spec, _Train, glove)
    torch_count = sum(p.numel() for p in torch_model.parameters() if p.requires_grad) + glove["weights"].size
    assert keras_model.count_params() == torch_count  # the embedding is frozen in both
    np.testing.assert_array_equal(keras_model.get_layer("embedding").get_weights()[0], glove["weights"])
    np.testing.assert_array_equal(torch_model.embedding.weight.detach().numpy(), glove["weights"])
    assert not keras_model.get_layer("embedding").trainable and not torch_model.embedding.weight.requires_grad
    ids = torch.tensor([[0, 0, 2, 3, 4, 1]])
    assert torch_model(ids).shape == (1, 1)
    with pytest.raises(ValueError, match="embedding_dim"):
        nets.torch_glove_lstm({**spec, "n_ids": 8}, _Train, glove)


def test_confidently_wrong_table_is_a_png_of_the_surest_mistakes():
    from curriculum.plots import confidently_wrong_table

    png = confidently_wrong_table(["great", "awful", "fine"], np.array([0, 1, 1]), np.array([0.9, np.nan, 0.6]),
                                  ["negative", "positive"], limit=5)
    assert png.startswith(b"\x89PNG")


def test_exported_models_take_the_ids_their_tokenizer_beside_them_gives(built_repo):
    """Server path = training path: raw test reviews through :func:`text_encoder` with the artifact
    export wrote beside each model give the very ids the model was scored on, and the ONNX file
    scores them."""
    import json

    import onnxruntime as ort
    import yaml

    from curriculum.layout import ProcessedData
    from curriculum.projects.sentiment import PROJECT, text_encoder

    data = ProcessedData.read(built_repo / "data/sentiment/processed")
    test = data.split("test")
    texts = [str(text) for text in test["text"]]
    variants = yaml.safe_load((built_repo / "params.yaml").read_text())["sentiment"]["variants"]
    assert {variant["model"] for variant in variants.values()} == {"lstm", "glove_lstm", "minilm"}
    for name, variant in variants.items():
        export_dir = built_repo / "data/sentiment/export" / name
        artifacts = {path.stem: json.loads(path.read_text()) for path in export_dir.glob("*.json")}
        ids = text_encoder(variant["model"], artifacts)(texts)
        expected = PROJECT.model_data(data, variant["model"]).split("test")["x"]
        np.testing.assert_array_equal(ids, expected, err_msg=name)
        session = ort.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        proba = session.run(None, {session.get_inputs()[0].name: ids})[0]
        assert proba.shape == (len(texts), 1) and np.all((proba >= 0) & (proba <= 1)), name


def test_no_review_is_in_two_splits_of_the_built_data(built_repo):
    from curriculum.layout import ProcessedData

    data = ProcessedData.read(built_repo / "data/sentiment/processed")
    text_data.check_no_shared_text({name: data.split(name)["text"] for name in ("train", "val", "test")})
    tokenizer_artifact = data.fitted["tokenizer"]
    train_words = {word for text in data.split("train")["text"] for word in tokenizer.words(str(text))}
    assert set(tokenizer_artifact["vocabulary"]) <= train_words  # fitted on the training split only
