"""Command line: ``python -m pipeline {list,run,serve,sync}``."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import dvc_bridge
from pipeline.flows import REPO_ROOT


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="repository root holding dvc.yaml")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="projects and their stages, from dvc.yaml")
    run = commands.add_parser("run", help="run one project's pipeline as a Prefect flow")
    run.add_argument("project", help="project name (image_classification or image-classification)")
    run.add_argument("--workers", type=int, default=1, help="stages run side by side where the DAG allows")
    commands.add_parser("serve", help="serve the scheduled deployments in prefect.yaml until stopped")
    sync = commands.add_parser("sync", help="derive params.yaml's project/variant lists, dvc.yaml's plots and "
                                            "prefect.yaml's deployments from the project sections")
    sync.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args()

    if args.command == "list":
        for project in dvc_bridge.project_names(args.repo):
            print(project)
            for node in dvc_bridge.project_stages(args.repo, project):
                print(f"  {node.name}" + (f"  <- {', '.join(node.upstream)}" if node.upstream else ""))
    elif args.command == "run":
        from prefect.task_runners import ThreadPoolTaskRunner

        from pipeline.flows import project_flow

        flow = project_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=args.workers))
        flow(project=args.project.replace("-", "_"), repo_root=str(args.repo))
    elif args.command == "serve":
        from pipeline.deployments import serve_deployments

        serve_deployments(args.repo)
    elif args.command == "sync":
        from pipeline.sync import stale_files, sync as sync_files

        if args.check:
            stale = stale_files(args.repo)
            if stale:
                raise SystemExit(f"stale (run `python -m pipeline sync`): {', '.join(map(str, stale))}")
            print("params.yaml, dvc.yaml and prefect.yaml are in sync with the projects")
        else:
            changed = sync_files(args.repo)
            print("updated " + ", ".join(map(str, changed)) if changed else "already in sync")


if __name__ == "__main__":
    main()
