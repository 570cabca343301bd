"""Beyond one machine: the deployments of prefect.yaml on a real Prefect server and process workers,
and clones sharing their DVC cache through a remote."""
from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from curriculum.layout import ProcessedData
from pipeline import dvc_bridge
from tests.prefect_server import prefect, prefect_server, worker
from tests.smoke import commit, dvc, stages_run
from tests.test_pipeline import snapshot

IC = "image_classification"
DEPLOYMENT = "dvc-project/image-classification-nightly"
RUN_TIMEOUT_S = 600


def set_params(root: Path, change) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def use_remote(root: Path, remote: Path) -> None:
    """Point the repository's default remote (``shared``, .dvc/config) at a folder of this test."""
    dvc(root, "remote", "modify", "--local", "shared", "url", str(remote))


async def _run_and_read(env: dict[str, str], deployment: str, parameters: dict) -> tuple:
    """Trigger the deployment as a schedule would, wait for the worker to finish it, and read back
    what the server recorded: the flow run, its task runs and the project's artifacts."""
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        flow_run = await run_deployment(deployment, parameters=parameters, timeout=RUN_TIMEOUT_S, poll_interval=1,
                                        as_subflow=False)
        async with get_client() as client:
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
            artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["image-classification-results", "image-classification-summary"])))
    return flow_run, {t.name.rsplit("-", 1)[0]: t for t in tasks}, artifacts


def run_deployment_now(env: dict[str, str], worker_log: Path, **parameters) -> tuple:
    flow_run, tasks, artifacts = asyncio.run(_run_and_read(env, DEPLOYMENT, parameters))
    assert flow_run.state.is_final(), f"the flow run did not finish in {RUN_TIMEOUT_S} s:\n{worker_log.read_text()[-4000:]}"
    return flow_run, tasks, artifacts


def results_of(run_artifacts, flow_run) -> list[dict]:
    table = next(a for a in run_artifacts if a.key == "image-classification-results" and a.flow_run_id == flow_run.id)
    return json.loads(table.data) if isinstance(table.data, str) else table.data


def test_deployment_runs_on_a_worker_of_a_real_prefect_server(repo_copy, tmp_path):
    """prefect server start, a process work pool, prefect deploy --all, a worker in the clone: a
    triggered run records a task run per DVC stage and the results artifacts on the server, and
    pushes to the DVC remote; another clone pulls that and has nothing to reproduce; the same commit
    again is all "up to date" with the same results; a failing stage fails its task and the flow,
    no downstream stage starts, and the previous results are untouched."""
    remote = tmp_path / "remote"
    use_remote(repo_copy, remote)
    # Only the baselines stage reruns: the logistic regression converges in fewer iterations anyway,
    # so its metrics file is the same and DVC finds everything downstream up to date.
    set_params(repo_copy, lambda p: p[IC]["baselines"].update(logistic_max_iter=150))
    commit(repo_copy, "a lower iteration cap for the logistic baseline")
    stage_names = [node.name for node in dvc_bridge.project_stages(repo_copy, IC)]

    with prefect_server(tmp_path / "prefect") as env:
        prefect(env, "work-pool", "create", "dl-curriculum", "--type", "process")
        deployed = prefect(env, "--no-prompt", "deploy", "--all", cwd=repo_copy)
        assert DEPLOYMENT in deployed
        worker_log = tmp_path / "worker.log"
        with worker(env, repo_copy, "worker-a", worker_log):
            first, tasks, artifacts = run_deployment_now(env, worker_log, remote="shared")
            assert first.state.type == StateType.COMPLETED, worker_log.read_text()[-4000:]
            assert set(tasks) == {*stage_names, "check_before_stages", "dvc-pull", "dvc-push"}
            assert all(t.state.type == StateType.COMPLETED for t in tasks.values())
            summary = next(a for a in artifacts if a.key == "image-classification-summary" and a.flow_run_id == first.id)
            reran = {f"baselines@{IC}"}
            for name in stage_names:
                assert f"| {name} | {'ran' if name in reran else 'up to date'} |" in summary.data
            results = results_of(artifacts, first)
            assert {row["model"] for row in results} == {"keras", "torch", "most_frequent", "logistic_regression"}
            # the pushed outputs are in the remote: a status against it finds nothing missing
            assert "in sync" in dvc(repo_copy, "status", "--cloud", *stage_names).stdout

            second, tasks, artifacts = run_deployment_now(env, worker_log)
            assert second.state.type == StateType.COMPLETED
            summary = next(a for a in artifacts if a.key == "image-classification-summary" and a.flow_run_id == second.id)
            assert all(f"| {name} | up to date |" in summary.data for name in stage_names)
            assert results_of(artifacts, second) == results

            # Machine B: a git clone of the commit of that run's dvc.lock (no outputs, an empty
            # cache) pulls what the run pushed: `dvc repro` then has nothing to run.
            commit(repo_copy, "dvc.lock of the scheduled run")
            machine_b = tmp_path / "machine-b"
            subprocess.run(["git", "clone", "-q", str(repo_copy), str(machine_b)], check=True)
            use_remote(machine_b, remote)
            model = f"data/{IC}/models/torch"
            assert not (machine_b / model).exists() and not (machine_b / ".dvc/cache").exists()
            dvc(machine_b, "pull", *stage_names)
            reproduced = dvc(machine_b, "repro", *stage_names).stdout
            assert stages_run(reproduced) == [], reproduced
            assert all((machine_b / model / name).read_bytes() == (repo_copy / model / name).read_bytes()
                       for name in ("model.pt", "meta.json"))

            set_params(repo_copy, lambda p: p[IC]["validate"].update(max_class_imbalance=-0.5))  # no class passes
            processed = repo_copy / f"data/{IC}/processed"
            processed_before = snapshot(processed)
            failed, tasks, _ = run_deployment_now(env, worker_log)
            assert failed.state.type == StateType.FAILED
            assert tasks[f"validate@{IC}"].state.type == StateType.FAILED
            downstream = [name for name in stage_names if not name.startswith(("download@", "validate@"))]
            for name in downstream:  # submitted, never started
                assert tasks[name].start_time is None and tasks[name].state.type not in (
                    StateType.RUNNING, StateType.COMPLETED), (name, tasks[name].state)
            assert snapshot(processed) == processed_before  # the previous results, untouched
            ProcessedData.read(processed)


async def _run_together(env: dict[str, str], deployments: list[str], parameters: dict) -> list:
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        return await asyncio.gather(*(run_deployment(name, parameters=parameters, timeout=2 * RUN_TIMEOUT_S,
                                                     poll_interval=2, as_subflow=False) for name in deployments))


@pytest.mark.slow
def test_two_workers_in_two_clones_share_the_server_and_the_remote(built_repo, tmp_path):
    """Two machines: each a git clone (no outputs, no cache) with its own worker (one run at a time)
    on one server's work pool. Two projects' deployments triggered together run one on each, both
    push to the shared remote, and a third clone pulls each project's outputs from it, up to date."""
    projects = ["simple_nn", IC]
    remote = tmp_path / "team-remote"
    clones = {}
    for name in ("machine-a", "machine-b", "machine-c"):
        clones[name] = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(built_repo), str(clones[name])], check=True)
        use_remote(clones[name], remote)
    stage_names = {project: [node.name for node in dvc_bridge.project_stages(built_repo, project)] for project in projects}

    with prefect_server(tmp_path / "prefect") as env:
        prefect(env, "work-pool", "create", "dl-curriculum", "--type", "process")
        prefect(env, "--no-prompt", "deploy", "--all", cwd=clones["machine-a"])
        logs = {name: tmp_path / f"{name}.log" for name in ("machine-a", "machine-b")}
        with worker(env, clones["machine-a"], "machine-a", logs["machine-a"], "--limit", "1"), \
                worker(env, clones["machine-b"], "machine-b", logs["machine-b"], "--limit", "1"):
            runs = asyncio.run(_run_together(
                env, [f"dvc-project/{project.replace('_', '-')}-nightly" for project in projects], {"remote": "shared"}))
        worker_logs = "\n".join(log.read_text()[-3000:] for log in logs.values())
        assert [run.state.type for run in runs] == [StateType.COMPLETED] * 2, worker_logs

    ran_in = {project: [name for name in ("machine-a", "machine-b")
                        if (clones[name] / f"data/{project}/processed").exists()] for project in projects}
    assert sorted(map(len, ran_in.values())) == [1, 1] and ran_in["simple_nn"] != ran_in[IC], ran_in
    # The remote holds what each run built: a third clone at the commit of that run's results (its
    # dvc.lock and git-tracked metrics, as the team would commit them) pulls the project's outputs
    # and finds them up to date.
    machine_c = clones["machine-c"]
    for project, (machine,) in ran_in.items():
        assert "in sync" in dvc(clones[machine], "status", "--cloud", *stage_names[project]).stdout
        commit(clones[machine], f"{project}: the scheduled run's results")
        subprocess.run(["git", "fetch", "-q", str(clones[machine])], cwd=machine_c, check=True)
        subprocess.run(["git", "checkout", "-q", "-f", "FETCH_HEAD"], cwd=machine_c, check=True)
        dvc(machine_c, "pull", *stage_names[project])
        status = dvc(machine_c, "status", *stage_names[project]).stdout
        assert "up to date" in status, (project, status)
