"""A project is its module and its params section: everything else is derived and checked."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from curriculum.projects import project_names
from pipeline.sync import MARKER, derived_params, stale_files, sync
from tests.smoke import REPO_ROOT


def test_derived_blocks_are_in_sync_with_the_project_sections():
    stale = stale_files(REPO_ROOT)
    assert not stale, f"run `python -m pipeline sync`: stale {stale}"


def test_every_project_has_stages_plots_and_a_deployment():
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    dvc_yaml = (REPO_ROOT / "dvc.yaml").read_text()
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    assert sorted(params["projects"]) == project_names()
    for project in project_names():
        variants = params[project]["variants"]
        assert {f"{project}-{v}" for v in variants} <= set(params["variants"])
        for variant in variants:
            assert f"reports/{project}/{variant}/train/plots/metrics/eval/loss.tsv" in dvc_yaml
        if params[project]["schedule"]:
            assert any(d["parameters"]["project"] == project for d in deployments)


@pytest.fixture
def repo_files(tmp_path):
    for name in ("params.yaml", "dvc.yaml", "prefect.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    return tmp_path


def test_a_forgotten_variant_fails_the_check_until_synced(repo_files):
    params_path = repo_files / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["simple_nn"]["variants"]["torch_wide"] = {"framework": "torch", "model": "mlp"}
    head = yaml.safe_dump({k: v for k, v in params.items() if k not in ("projects", "variants")}, sort_keys=False)
    params_path.write_text(f"{head}\n{MARKER}\n" + params_path.read_text().split(MARKER)[1])
    assert set(stale_files(repo_files)) == {params_path, repo_files / "dvc.yaml"}
    sync(repo_files)
    assert stale_files(repo_files) == []
    synced = yaml.safe_load(params_path.read_text())
    assert synced["variants"]["simple_nn-torch_wide"]["framework"] == "torch"
    assert "reports/simple_nn/torch_wide/plots/roc.json" in (repo_files / "dvc.yaml").read_text()


def test_a_section_without_a_project_module_is_refused(repo_files):
    params = yaml.safe_load((repo_files / "params.yaml").read_text())
    params["no_such_project"] = params["simple_nn"]
    with pytest.raises(ValueError, match=r"sections \['no_such_project'\] but no project module"):
        derived_params(params)


def test_sync_check_cli(repo_files):
    result = subprocess.run([sys.executable, "-m", "pipeline", "--repo", str(repo_files), "sync", "--check"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (repo_files / "prefect.yaml").write_text((repo_files / "prefect.yaml").read_text().replace("2 * * *", "3 * * *"))
    result = subprocess.run([sys.executable, "-m", "pipeline", "--repo", str(repo_files), "sync", "--check"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "prefect.yaml" in result.stderr
