"""What every stage does first: parse its paths, then the project's params -- before any output
is written, so bad params stop the stage with the key named and nothing lost."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# Keep TensorFlow quiet and telemetry off in every stage process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("DO_NOT_TRACK", "1")

from curriculum.config import ConfigError  # noqa: E402
from curriculum.projects import get_project  # noqa: E402
from curriculum.projects.base import Project  # noqa: E402


def stage_parser(description: str, variant: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--project", required=True, help="project name: its module in curriculum/projects and its params section")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    if variant:
        parser.add_argument("--variant", required=True, help="the variant (params: <project>.variants) to train/evaluate/export")
        parser.add_argument("--data", type=Path, required=True, help="directory written by preprocess")
        parser.add_argument("--model-dir", type=Path, required=True, help="the trained model's directory")
    return parser


def load_project(args: argparse.Namespace) -> tuple[Project, Any]:
    """The project and its checked params; exits with one line per bad key."""
    try:
        project = get_project(args.project)
        config = project.load_config(args.params)
        if getattr(args, "variant", None) is not None and args.variant not in config.variants:
            raise ConfigError(f"{args.project}.variants: no variant {args.variant!r}; "
                              f"variants are {', '.join(config.variants)}")
    except (ConfigError, KeyError) as error:
        sys.exit(f"bad params for {args.project}:\n{error.args[0] if error.args else error}")
    return project, config
