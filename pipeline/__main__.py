"""Command line: ``python -m pipeline {list,run,tune,experiment,serve,worker,serve-models,sync,check-params,cache-check,plots,summary}``."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import dvc_bridge
from pipeline.flows import DEFAULT_WORKERS, REPO_ROOT
from pipeline.serving import ServeSettings


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
    run.add_argument("--remote", help="a DVC remote (e.g. shared) to pull the project's outputs from before the "
                                      "stages and push them to after")
    tune = commands.add_parser("tune", help="an Optuna study over a project's `tune` params, every trial a DVC "
                               "experiment (dvc exp show lists them), trials side by side as Prefect tasks")
    tune.add_argument("project")
    tune.add_argument("--variant", help="the variant to tune (default: the tune section's)")
    tune.add_argument("--trials", type=int, help="trials in all, finished ones included (default: the section's)")
    tune.add_argument("--workers", type=int, help="trials at once (default: the section's)")
    tune.add_argument("--storage", help="Optuna storage URL (default: the section's, else tune/<project>.db)")
    tune.add_argument("--apply-best", action="store_true", help="dvc exp apply the best trial to the workspace")
    experiment = commands.add_parser("experiment", help="run one project's pipeline with one of its params "
                                     "profiles (e.g. detection long) as a DVC experiment (dvc exp show lists it)")
    experiment.add_argument("project")
    experiment.add_argument("profile")
    commands.add_parser("serve", help="serve the scheduled deployments in prefect.yaml until stopped")
    commands.add_parser("worker", add_help=False,
                        help="a Prefect worker on the deployments' work pool whose flow runs run in this clone "
                             "(`prefect worker start` options follow, e.g. --name, --limit)")
    models = commands.add_parser("serve-models", help="serve every exported model over HTTP (FastAPI on onnxruntime): "
                                                      "the API, its docs at /docs and a page to try them at /")
    models.add_argument("--rev", help="serve the models of this git revision (read through dvc.api from the DVC "
                                      "cache or remote) instead of the workspace")
    models.add_argument("--host", default="127.0.0.1")
    models.add_argument("--port", type=int, default=8000)
    defaults = ServeSettings()
    models.add_argument("--micro-batch", type=int, default=defaults.micro_batch,
                        help="most examples per onnxruntime call for image models (1: no micro-batching; "
                             "default %(default)s)")
    models.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help="how long a batch's first request waits for others (default %(default)s)")
    models.add_argument("--max-request-examples", type=int, default=defaults.max_request_examples,
                        help="most examples in one request (default %(default)s)")
    models.add_argument("--workers", type=int, default=defaults.workers,
                        help="onnxruntime calls at once (default %(default)s)")
    models.add_argument("--threads", type=int, default=defaults.threads,
                        help="onnxruntime intra-op threads per call (default %(default)s)")
    models.add_argument("--watch", type=float, default=defaults.watch_s,
                        help="seconds between checks of the workspace for a new `dvc repro` (0: reload only on "
                             "POST /v1/reload; default %(default)s)")
    models.add_argument("--access-log", action="store_true", help="log every request")
    sync = commands.add_parser("sync", help="derive params.yaml's project/variant lists, dvc.yaml's plots and "
                                            "prefect.yaml's deployments from the project sections")
    sync.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    commands.add_parser("check-params", help="check every project's params (run before `dvc repro`: a bad key "
                                             "stops it before DVC removes any output)")
    commands.add_parser("cache-check", add_help=False,
                        help="re-hash the DVC cache, quarantine and (--repair) restore bad objects; "
                             "`cache-check --help` for its options")
    summary = commands.add_parser("summary", help="one table per project: every variant and baseline ranked by the "
                                                  "task's headline metric, with training time and export parity")
    summary.add_argument("projects", nargs="*", help="projects to show (default: all)")
    summary.add_argument("--markdown", action="store_true", help="markdown tables instead of fixed-width text")
    plots = commands.add_parser("plots", help="the `dvc plots` page of dvc.yaml's top-level plots, drawn offline: "
                                              "`plots` (workspace), `plots diff [REV ...]`, or `plots template` "
                                              "(only write build/plots_page.html, the page template .dvc/config names)")
    plots.add_argument("action", nargs="?", choices=("show", "diff", "template"), default="show",
                       help="show: the workspace (default); diff: the revisions below; template: only write the "
                            "page template")
    plots.add_argument("revisions", nargs="*", help="for diff: the git revisions to compare (default: the "
                                                    "workspace against HEAD)")
    plots.add_argument("-o", "--out", type=Path, help="folder for index.html (default: DVC's plots.out_dir, "
                                                      "dvc_plots/)")
    return parser


def main() -> None:
    args, rest = build_parser().parse_known_args()
    if args.command == "cache-check":
        from pipeline.cache_check import main as cache_check

        raise SystemExit(cache_check(["--repo", str(args.repo), *rest]))
    if args.command == "worker":
        import os

        from pipeline.deployments import worker_command

        command, env = worker_command(args.repo, rest)
        os.execve(command[0], command, env)
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
            flow(project=args.project.replace("-", "_"), repo_root=str(args.repo), remote=args.remote)
        except (dvc_bridge.StageFailed, dvc_bridge.TransferFailed) as failure:  # with dvc's own last lines
            raise SystemExit(f"flow {args.project} failed: {failure}") from None
    elif args.command == "tune":
        import subprocess

        from curriculum.config import ConfigError
        from pipeline.flows import start_ephemeral_api
        from pipeline.tune import best_summary, experiment_name, run_study

        start_ephemeral_api()
        try:
            study = run_study(args.repo, args.project.replace("-", "_"), args.variant, args.trials, args.workers,
                              args.storage)
        except ConfigError as error:
            raise SystemExit(str(error)) from None
        except dvc_bridge.StageFailed as failure:  # the upstream stages the trials need
            raise SystemExit(f"tune {args.project} failed: {failure}") from None
        print(best_summary(study))
        if args.apply_best:
            command, env = dvc_bridge.venv_dvc("exp", "apply", experiment_name(study, study.best_trial.number))
            subprocess.run(command, cwd=args.repo, env=env, check=True)
    elif args.command == "experiment":
        import subprocess

        from curriculum.projects import get_project

        project = args.project.replace("-", "_")
        try:
            overrides = get_project(project).profile_overrides(args.profile)
        except KeyError as error:
            raise SystemExit(error.args[0]) from None
        stages = [node.name for node in dvc_bridge.project_stages(args.repo, project)]
        set_params = [argument for override in overrides for argument in ("--set-param", override)]
        command, env = dvc_bridge.venv_dvc("exp", "run", "--name", f"{project}-{args.profile}", *set_params, *stages)
        print("$ dvc " + " ".join(command[1:]), flush=True)
        raise SystemExit(subprocess.run(command, cwd=args.repo, env=env).returncode)
    elif args.command == "serve":
        from pipeline.deployments import serve_deployments
        from pipeline.flows import start_ephemeral_api

        start_ephemeral_api()
        serve_deployments(args.repo)
    elif args.command == "serve-models":
        from pipeline.serving.app import serve

        try:
            settings = ServeSettings(micro_batch=args.micro_batch, max_wait_ms=args.max_wait_ms,
                                     max_request_examples=args.max_request_examples, workers=args.workers,
                                     threads=args.threads, watch_s=args.watch or None)
            serve(args.repo, args.rev, settings, host=args.host, port=args.port, access_log=args.access_log)
        except ValueError as error:  # a bad setting, or a revision that does not exist
            raise SystemExit(str(error)) from None
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
    elif args.command == "summary":
        from pipeline.summary import project_tables, summary_markdown, summary_text

        tables = project_tables(args.repo, args.projects or None)
        print(summary_markdown(tables) if args.markdown else summary_text(tables))
    elif args.command == "plots":
        from pipeline.plots_page import render_page, write_page_template

        if args.revisions and args.action != "diff":
            build_parser().error(f"plots {args.action} takes no revisions (did you mean `plots diff`?)")
        try:
            if args.action == "template":
                print(f"wrote {write_page_template(args.repo)}")
            else:
                dvc_plots = render_page(args.repo, args.revisions if args.action == "diff" else None,
                                        args.out.resolve() if args.out else None)
                print(dvc_plots.stdout + dvc_plots.stderr, end="")
                if dvc_plots.returncode:
                    raise SystemExit(f"dvc plots {args.action} failed with exit code {dvc_plots.returncode}")
        except FileNotFoundError as error:  # the vega scripts are not installed
            raise SystemExit(str(error)) from None


if __name__ == "__main__":
    main()
