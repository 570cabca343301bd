"""Stage 1: fetch the project's dataset from the source named in params, as raw arrays.

Exit status: 0 on success; 75 (``EXIT_TRANSIENT``, sysexits' EX_TEMPFAIL) when the download
failed in a way a later attempt may not (connection refused/reset, timeout, HTTP 429/5xx);
1 for a permanent failure (bad params, unresolvable host, HTTP 404/410/403, checksum mismatch).
The Prefect flow retries the stage only on 75 (see pipeline/dvc_bridge.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from curriculum.download import EXIT_TRANSIENT, DownloadError
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
    try:
        raw = source(work_dir, work_dir / "partial", config.download)
    except DownloadError as error:
        kind = "transient, worth retrying" if error.transient else "permanent"
        print(f"{args.project}: download failed ({kind}): {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_TRANSIENT if error.transient else 1)
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
