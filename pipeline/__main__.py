"""Command line: ``python -m pipeline {list,run,serve,sync}``."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import dvc_bridge
from pipeline.flows import DEFAULT_WORKERS, REPO_ROOT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="repository root holding dvc.yaml")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="projects and their stages, from dvc.yaml")
    run = commands.add_parser("run", help="run one project's pipeline as a Prefect flow")
    run.add_argument("project", help="project name (image_classification or image-classification)")
    run.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                     help="stages run side by side where the DAG allows (default %(default)s, as in the "
                          "deployments: DVC's repository lock serialises stages anyway)")
    commands.add_parser("serve", help="serve the scheduled deployments in prefect.yaml until stopped")
    sync = commands.add_parser("sync", help="derive params.yaml's project/variant lists, dvc.yaml's plots and "
                                            "prefect.yaml's deployments from the project sections")
    sync.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    commands.add_parser("check-params", help="check every project's params (run before `dvc repro`: a bad key "
                                             "stops it before DVC removes any output)")
    commands.add_parser("cache-check", add_help=False,
                        help="re-hash the DVC cache, quarantine and (--repair) restore bad objects; "
                             "`cache-check --help` for its options")
    return parser


def main() -> None:
    args, rest = build_parser().parse_known_args()
    if args.command == "cache-check":
        from pipeline.cache_check import main as cache_check

        raise SystemExit(cache_check(["--repo", str(args.repo), *rest]))
    if rest:
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")

    if args.command == "list":
        for project in dvc_bridge.project_names(args.repo):
            print(project)
            for node in dvc_bridge.project_stages(args.repo, project):
                print(f"  {node.name}" + (f"  <- {', '.join(node.upstream)}" if node.upstream else ""))
    elif args.command == "run":
        from pipeline.flows import project_flow, start_ephemeral_api, task_runner

        start_ephemeral_api()
        flow = project_flow.with_options(task_runner=task_runner(args.workers))
        try:
            flow(project=args.project.replace("-", "_"), repo_root=str(args.repo))
        except dvc_bridge.StageFailed as failure:  # its message carries the stage's own last lines
            raise SystemExit(f"flow {args.project} failed: {failure}") from None
    elif args.command == "serve":
        from pipeline.deployments import serve_deployments
        from pipeline.flows import start_ephemeral_api

        start_ephemeral_api()
        serve_deployments(args.repo)
    elif args.command == "check-params":
        from curriculum.config import ConfigError
        from pipeline.params_check import check_params

        try:
            check_params(args.repo / "params.yaml")
        except ConfigError as error:
            raise SystemExit(str(error)) from None
        print(f"params ok: {args.repo / 'params.yaml'}")
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
