"""Stage 3: split, normalise, fit what must be fitted on the training split, as the project defines it."""
from __future__ import annotations

from pathlib import Path

from curriculum.layout import RawData
from stages.cli import load_project, stage_parser


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    project, config = load_project(args)
    processed = project.preprocess(RawData.read(args.raw), config)
    processed.write(args.out)
    sizes = ", ".join(f"{name} {len(next(iter(arrays.values())))}" for name, arrays in processed.splits.items())
    fitted = f"; fitted {', '.join(processed.fitted)}" if processed.fitted else ""
    print(f"{args.project}: {sizes}{fitted} -> {args.out}")


if __name__ == "__main__":
    main()
