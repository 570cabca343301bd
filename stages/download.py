"""Stage 1: fetch the project's dataset from the source named in params, as raw arrays."""
from __future__ import annotations

from pathlib import Path

from curriculum.layout import RawData
from stages.cli import load_project, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory for the raw dataset")
    parser.add_argument("--downloads", type=Path, required=True,
                        help="where full-size archives are downloaded, resumed and verified (outside data/)")
    args = parser.parse_args()
    project, config = load_project(args)
    source = project.source(config.download.source)
    work_dir = args.downloads / args.project
    raw = source.fetch(work_dir, work_dir / "partial")
    if project.subsample is not None:
        raw = project.subsample(raw, config)
    RawData.write(args.out, raw, {
        "source": config.download.source,
        "description": source.description,
        "arrays": {name: list(value.shape) for name, value in raw.items()},
    })
    print(f"{args.project}: {source.description} -> {args.out}")


if __name__ == "__main__":
    main()
