"""The Prefect flow and deployments against a real (test-harness) Prefect API."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
import yaml
from prefect.client.orchestration import get_client

from pipeline import dvc_bridge
from pipeline.deployments import build_deployments
from pipeline.flows import check_before_stages
from tests.smoke import REPO_ROOT, dvc
from tests.test_cache_check import cache_object, flip

IC = "image_classification"


def test_flow_tasks_come_from_the_dvc_graph(built_repo):
    nodes = dvc_bridge.project_stages(built_repo, IC)
    names = [node.name for node in nodes]
    assert names[:3] == [f"download@{IC}", f"validate@{IC}", f"preprocess@{IC}"]
    assert set(names[3:]) == {f"baselines@{IC}", f"report@{IC}"} | {
        f"{kind}@{IC}-{fw}" for kind in ("train", "evaluate", "export") for fw in ("keras", "torch")}
    assert names[-1] == f"report@{IC}"  # after every stage whose results it reads
    position = {name: i for i, name in enumerate(names)}
    for node in nodes:  # every stage comes after everything it depends on
        assert all(position[upstream] < position[node.name] for upstream in node.upstream)
    with pytest.raises(KeyError, match="no stages for project 'nope'"):
        dvc_bridge.project_stages(built_repo, "nope")


def test_project_status_is_what_dvc_status_says(repo_copy):
    with dvc_bridge.locked_repo(repo_copy) as repo:
        assert dvc_bridge.project_status(repo, IC).changed == frozenset()
    params_path = repo_copy / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params[IC]["preprocess"]["val_fraction"] += 0.05
    params[IC]["evaluate"]["misclassified_examples"] = 10
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    with dvc_bridge.locked_repo(repo_copy) as repo:
        status = dvc_bridge.project_status(repo, IC)
    # Each stage on its own, as `dvc repro --single-item` asks: downstream of preprocess, only
    # the evaluate stages (their own params) have changed so far.
    assert status.changed == {f"preprocess@{IC}", f"evaluate@{IC}-keras", f"evaluate@{IC}-torch"}
    assert status.changed == set(json.loads(dvc(repo_copy, "status", "--json").stdout))
    assert list(status.stages) == dvc_bridge.project_stages(repo_copy, IC)


def test_check_repairs_a_rotten_cache_object_before_reading_dvc_status(prefect_api, repo_copy):
    lock = yaml.safe_load((repo_copy / "dvc.lock").read_text())
    oid = lock["stages"][f"preprocess@{IC}"]["outs"][0]["md5"]  # data/<IC>/processed's listing
    listing = cache_object(repo_copy, oid)
    good = listing.read_bytes()
    flip(listing)

    status = check_before_stages(str(repo_copy), IC)

    assert listing.read_bytes() == good  # rebuilt from the workspace's files
    assert (repo_copy / ".dvc/cache/quarantine" / oid).exists()
    assert status.changed == frozenset()


def test_deployments_from_prefect_yaml_register_with_their_schedules(prefect_api):
    deployments = build_deployments(REPO_ROOT)
    specs = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    assert [d.name for d in deployments] == [s["name"] for s in specs]

    async def apply_and_read():
        ids = [await d.apply() for d in deployments]
        async with get_client() as client:
            return [await client.read_deployment(i) for i in ids]

    for deployment, spec in zip(asyncio.run(apply_and_read()), specs, strict=True):
        assert deployment.parameters["project"] == spec["parameters"]["project"]
        assert [s.schedule.cron for s in deployment.schedules] == [s["cron"] for s in spec["schedules"]]


def test_cli_lists_every_project_with_its_stages(built_repo):
    listing = subprocess.run(
        [sys.executable, "-m", "pipeline", "--repo", str(built_repo), "list"],
        cwd=REPO_ROOT, check=True, capture_output=True, text=True,
    ).stdout
    projects = yaml.safe_load((built_repo / "params.yaml").read_text())["projects"]
    assert [line for line in listing.splitlines() if not line.startswith(" ")] == sorted(projects)
    assert f"  train@{IC}-keras  <- preprocess@{IC}" in listing
