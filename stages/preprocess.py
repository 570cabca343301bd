"""Stage 3: split, normalise and augment, as the project defines it."""
from __future__ import annotations

from pathlib import Path

from curriculum.io import load_npz, save_npz
from curriculum.params import load_project_params
from curriculum.projects import get_project
from stages.cli import stage_parser
from stages.download import RAW_FILE

SPLITS_FILE = "splits.npz"


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--raw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    params = load_project_params(args.params, args.project)
    project = get_project(args.project)
    splits = project.preprocess(load_npz(args.raw / RAW_FILE), params, params["seed"])
    save_npz(args.out / SPLITS_FILE, **splits)
    sizes = ", ".join(f"{key[2:]} {len(value)}" for key, value in splits.items() if key.startswith("y_"))
    print(f"{args.project}: {sizes} -> {args.out}")


if __name__ == "__main__":
    main()
