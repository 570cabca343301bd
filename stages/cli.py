"""Argument parsing shared by the stages: every path comes from the command line."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# Keep TensorFlow quiet and telemetry off in every stage process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("DO_NOT_TRACK", "1")


def stage_parser(description: str, framework: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--project", required=True, help="project name, as in params.yaml and the registry")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    if framework:
        parser.add_argument("--framework", required=True, help="framework variant to train/evaluate/export")
        parser.add_argument("--data", type=Path, required=True, help="directory written by preprocess")
        parser.add_argument("--model-dir", type=Path, required=True, help="the trained model's directory")
    return parser
