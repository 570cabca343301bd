"""Stage 4: train one variant of the project, logging curves with DVCLive; resumable.

Every completed epoch is checkpointed in ``--checkpoint-dir`` (not a DVC output: DVC would delete
it before the stage runs). A run that was killed continues from the epoch after its last
checkpoint and ends with exactly the model, metrics and curves of an uninterrupted run; a
checkpoint of other params, seed, data or code is refused, naming what differs. The model directory
(``model.*`` + ``meta.json``) and the DVCLive directory (``metrics.json``, ``plots/``) are
written only when training has finished, each swapped in whole, so a killed run never leaves
partial results where DVC shows them; the finished run then deletes its checkpoint.
The training time goes to ``timing.json`` beside the curves: it differs from machine to machine,
so it is neither a DVC output nor in git, and only the results table shows it.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import curriculum
import stages
from curriculum import tuning
from curriculum.frameworks import get_backend, launched_rank
from curriculum.frameworks.checkpoints import (
    CheckpointMismatch, Checkpoints, fingerprint, publish_dir, publish_live, staging_dir,
)
from curriculum.io import write_json
from curriculum.layout import ProcessedData, write_model_meta
from curriculum.results import TIMING_FILE, TRAIN_SUMMARY_FILE, timing_record
from curriculum.trained import model_meta
from stages.cli import load_project, stage_parser


def main() -> None:
    parser = stage_parser(__doc__, variant=True)
    parser.add_argument("--live-dir", type=Path, required=True, help="DVCLive directory for training curves")
    parser.add_argument("--checkpoint-dir", type=Path, required=True,
                        help="per-epoch checkpoints of an unfinished run (not a DVC output); deleted when training finishes")
    args = parser.parse_args()
    project, config = load_project(args)
    variant = config.variants[args.variant]

    train = config.variant_train(args.variant)
    backend = get_backend(variant.framework)
    rank = launched_rank()
    if train.processes > 1 and rank is None:  # this stage again, as the back end's training processes
        sys.exit(backend.launch(train.processes, "stages.train", sys.argv[1:]))
    data = ProcessedData.read(args.data)
    model_data = project.model_data(data, variant.model)
    spec = project.model_spec(model_data)
    backend.set_threads(train.threads)
    backend.seed_everything(config.seed)
    model = project.build_model(variant.model, variant.framework, spec, train, data.fitted)
    if rank:  # a helper process of data-parallel training: its share of every batch, no files
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # rank 0 prints the same epochs
            backend.fit(model, model_data, project.task, train, config.seed, args.model_dir, DiscardedLive())
        return

    # Every module of the run is loaded now: the fingerprint covers its code as well.
    meta = model_meta(args.project, args.variant, variant.framework, variant.model, spec, train)
    code = [Path(package.__file__).parent for package in (curriculum, stages)]
    checkpoints = Checkpoints(args.checkpoint_dir, fingerprint(args.project, args.variant, meta, config.seed, args.data, code))
    try:
        resumed = checkpoints.load()
    except CheckpointMismatch as error:
        sys.exit(f"{args.project}/{args.variant}: {error}")
    if resumed is not None:
        done = "training had ended there" if resumed.stopped or resumed.epoch >= train.epochs else \
            f"resuming from epoch {resumed.epoch + 1}"
        print(f"{args.project}/{args.variant}: checkpoint of epoch {resumed.epoch} in {args.checkpoint_dir}; {done}",
              flush=True)
    staged_model = staging_dir(args.model_dir)  # the back end writes the final model here, at the end only
    started = time.perf_counter()
    try:
        with checkpoints.live() as live, tuning.trial_reports(live, config, train, project.task):
            backend.fit(model, model_data, project.task, train, config.seed, staged_model, live, checkpoints)
    except tuning.TrialPruned as pruned:
        print(f"{args.project}/{args.variant}: {pruned}", flush=True)
        sys.exit(tuning.PRUNED_EXIT)
    seconds = time.perf_counter() - started
    write_model_meta(staged_model, meta)
    publish_dir(staged_model, args.model_dir)
    publish_live(checkpoints.live_dir, args.live_dir)
    write_json(args.live_dir / TIMING_FILE, timing_record(
        seconds, resumed.epoch if resumed is not None else None, args.live_dir / TRAIN_SUMMARY_FILE))
    checkpoints.discard()
    print(f"{args.project}/{args.variant}: trained in {seconds:.1f} s -> {args.model_dir}")


class DiscardedLive:
    """Where a helper process of data-parallel training logs its epochs: nowhere (rank 0 logs the
    same figures; the helpers keep no checkpoints either, rank 0 passes a resumed state on)."""

    def log_metric(self, *args, **kwargs) -> None:
        pass

    def next_step(self) -> None:
        pass


if __name__ == "__main__":
    main()
