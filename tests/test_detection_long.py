"""The detection project's `long` training profile, full size, as a DVC experiment (slow: about
half an hour on 2 cores): the best detector reaches the bars the default schedule is too short for."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.smoke import REPO_ROOT, build_smoke_repo, commit, dvc, write_params

PROJECT = "detection"


@pytest.mark.slow
def test_the_long_profile_reaches_map_030_and_recall_05(tmp_path):
    root = build_smoke_repo(tmp_path / "repo")
    params_path = root / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params[PROJECT] = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())[PROJECT]  # undo the shrinking
    write_params(root, params)  # the variant lists below sync's marker: every detection variant again
    commit(root, "full-size detection")

    subprocess.run([sys.executable, "-m", "pipeline", "--repo", str(root), "experiment", PROJECT, "long"],
                   cwd=root, check=True)
    assert f"{PROJECT}-long" in dvc(root, "exp", "list", "--name-only").stdout.split()
    results = {}
    for variant in params[PROJECT]["variants"]:
        metrics = json.loads((root / f"reports/{PROJECT}/{variant}/metrics.json").read_text())
        results[variant] = (metrics["map_50"], metrics["recall_40"])
    best = max(results, key=lambda variant: results[variant][0])
    print("long profile, test split (OSBS_029 + SOAP_061):", results)
    assert results[best][0] >= 0.30 and results[best][1] >= 0.5, results
