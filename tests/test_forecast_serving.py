"""What a served forecaster reads for a date: the very window the pipeline scored for that origin,
and nothing it cannot build in full (real Seattle data, with a horizon longer than the lookback so
the splits' windows leave rows uncovered)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from curriculum.projects.forecasting import PROJECT, series, sources
from tests.smoke import REPO_ROOT


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheels")
    config = PROJECT.load_config(REPO_ROOT / "params.yaml")
    config = config.model_copy(update={"preprocess": config.preprocess.model_copy(update={"lookback": 7, "horizon": 14})})
    data = PROJECT.preprocess(sources.fetch_seattle(work, work / "partial"), config)
    card = json.loads(json.dumps(PROJECT.serving_card(data, config, "gru")))  # as export writes and the server reads it
    return data, card, PROJECT.serving.prepare(card, {})


def test_a_date_reads_exactly_the_window_the_pipeline_scored_for_it(served):
    data, card, prepared = served
    request_model = PROJECT.serving.request_model(card, 8)
    for name in series.SPLITS:
        split = data.split(name)
        for i in (0, len(split["date"]) // 2, -1):
            request = request_model.model_validate({"origin": str(split["date"][i])})
            window = PROJECT.serving.model_inputs(request, card, prepared)
            np.testing.assert_allclose(window[0], data.raw_inputs(split["x"][[i]])[0], rtol=1e-6, atol=1e-5)


def test_dates_without_a_whole_window_are_refused_by_the_schema(served):
    data, card, _ = served
    assert any(value is None for row in card["rows"] for value in row)  # 14 > 7: rows no window reaches
    origins = set(card["origins"])
    between = [d for d in card["dates"] if card["first_origin"] < d < card["last_origin"] and d not in origins]
    assert between, "expected dates between the splits' windows that no whole window ends on"
    request_model = PROJECT.serving.request_model(card, 8)
    with pytest.raises(ValidationError, match="not a date the served series can forecast from"):
        request_model.model_validate({"origin": between[0]})
    # ... unless the user brings the window
    window = [[1.0] * len(card["columns"])] * card["lookback"]
    assert request_model.model_validate({"origin": between[0], "window": window}).window == window
