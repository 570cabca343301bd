"""Stage 1: fetch the project's dataset from the source named in params, as raw arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from curriculum.io import save_npz, write_json
from curriculum.params import load_project_params
from curriculum.projects import get_project
from stages.cli import stage_parser

RAW_FILE = "dataset.npz"


def limit_per_class(x: np.ndarray, y: np.ndarray, max_per_class: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first ``max_per_class`` examples of each class (a tiny, stable slice for smoke runs)."""
    if max_per_class is None:
        return x, y
    keep = np.concatenate([np.flatnonzero(y == label)[:max_per_class] for label in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="directory for the raw dataset")
    parser.add_argument("--downloads", type=Path, required=True,
                        help="where full-size archives are downloaded, resumed and verified (outside data/)")
    args = parser.parse_args()
    params = load_project_params(args.params, args.project)["download"]
    project = get_project(args.project)
    source = project.source(params["source"])
    work_dir = args.downloads / args.project
    raw = source.fetch(work_dir, work_dir / "partial")
    raw["x"], raw["y"] = limit_per_class(raw["x"], raw["y"], params["max_per_class"])
    if "x_test" in raw:
        raw["x_test"], raw["y_test"] = limit_per_class(raw["x_test"], raw["y_test"], params["max_per_class"])
    save_npz(args.out / RAW_FILE, **raw)
    write_json(args.out / "source.json", {
        "source": params["source"],
        "description": source.description,
        "examples": {key: int(len(value)) for key, value in raw.items() if key.startswith("y")},
    })
    print(f"{args.project}: {source.description}; {len(raw['y'])} examples -> {args.out}")


if __name__ == "__main__":
    main()
