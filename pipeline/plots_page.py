"""The ``dvc plots show/diff`` page, one self-contained HTML file that renders offline.

DVC's own page loads vega, vega-lite and vega-embed from a CDN, so offline every chart is
blank. The same versions, installed from npm at setup (``web/package-lock.json``), are inlined
into ``build/plots_page.html``, which ``.dvc/config`` names as ``plots.html_template``. The page
is asked for dvc.yaml's top-level plot definitions only: with no targets DVC would also list
every file of the stages' plot directories, so most figures would appear twice.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from pipeline.dvc_bridge import venv_dvc

DVC_FILE = "dvc.yaml"
PAGE_SKELETON = Path("web/plots_page.html")
PAGE_TEMPLATE = Path("build/plots_page.html")
NODE_MODULES = Path("web/node_modules")
# In load order: vega-lite needs vega, vega-embed needs both.
VEGA_SCRIPTS = (
    Path("vega/build/vega.min.js"),
    Path("vega-lite/build/vega-lite.min.js"),
    Path("vega-embed/build/vega-embed.min.js"),
)
SCRIPTS_MARKER = "<!-- vega scripts -->"
# dvc-render fills these by plain text replacement over the whole page, inlined scripts included.
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
NPM_SETUP = "npm ci --prefix web --ignore-scripts --no-audit --no-fund"
# DVC matches targets as regular expressions, after turning every backslash into a slash.
REGEX_METACHARACTERS = ".$*+?{}[]|()"


def top_level_plot_ids(dvc_yaml_text: str) -> list[str]:
    """The ids of dvc.yaml's ``plots:`` entries (a bare path, or a one-key mapping of id to props)."""
    entries = yaml.safe_load(dvc_yaml_text).get("plots") or []
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries]


def exact_target(plot_id: str) -> str:
    """A ``dvc plots`` target naming only this top-level definition of dvc.yaml.

    DVC keeps a target if ``re.match`` finds it at the start of ``dvc.yaml::<id>`` (or of a
    stage output's path, which the prefix rules out). Backslashes become slashes before that,
    so metacharacters are escaped as one-character classes and the pattern is anchored.
    """
    full_id = f"{DVC_FILE}::{plot_id}"
    if "\\" in full_id or "^" in full_id:
        raise ValueError(f"plot id {plot_id!r}: `dvc plots` cannot target an id holding '\\' or '^' exactly")
    return "".join(f"[{char}]" if char in REGEX_METACHARACTERS else char for char in full_id) + "$"


def inline_scripts(skeleton: str, scripts: dict[str, str]) -> str:
    """The page template: ``skeleton`` with each script (by name) inlined at SCRIPTS_MARKER."""
    if skeleton.count(SCRIPTS_MARKER) != 1:
        raise ValueError(f"the page skeleton must hold {SCRIPTS_MARKER!r} exactly once")
    for name, code in scripts.items():
        clashes = [text for text in ("</script", *DVC_PLACEHOLDERS) if text in code.lower()]
        if clashes:
            raise ValueError(f"{name} holds {', '.join(clashes)}: inlined, it would break the page")
    blocks = "\n".join(f"<script>/* {name} */\n{code}\n</script>" for name, code in scripts.items())
    return skeleton.replace(SCRIPTS_MARKER, blocks)


def write_page_template(repo_root: Path) -> Path:
    """Write build/plots_page.html from web/ (the skeleton and the npm-installed vega scripts)."""
    missing = [script for script in VEGA_SCRIPTS if not (repo_root / NODE_MODULES / script).is_file()]
    if missing:
        raise FileNotFoundError(
            f"vega scripts missing under {repo_root / NODE_MODULES}: {', '.join(map(str, missing))}; "
            f"install them with `{NPM_SETUP}` (part of `make setup`)"
        )
    scripts = {str(script): (repo_root / NODE_MODULES / script).read_text(encoding="utf-8") for script in VEGA_SCRIPTS}
    page_template = repo_root / PAGE_TEMPLATE
    page_template.parent.mkdir(parents=True, exist_ok=True)
    page_template.write_text(
        inline_scripts((repo_root / PAGE_SKELETON).read_text(encoding="utf-8"), scripts), encoding="utf-8"
    )
    return page_template


def dvc_plots_args(
    plot_ids: list[str], revisions: list[str] | None, html_template: Path, out_dir: Path | None
) -> list[str]:
    """``dvc plots show`` (revisions None) or ``dvc plots diff REV...`` arguments for these plots.

    Revisions come before ``--targets``, which would otherwise take them as targets.
    """
    out = ["-o", str(out_dir)] if out_dir else []
    targets = [exact_target(plot_id) for plot_id in plot_ids]
    if revisions is None:
        return ["plots", "show", "--html-template", str(html_template), *out, *targets]
    return ["plots", "diff", "--html-template", str(html_template), *out, *revisions, "--targets", *targets]


def render_page(
    repo_root: Path, revisions: list[str] | None = None, out_dir: Path | None = None,
    html_template: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``dvc plots show`` (or ``diff``) for dvc.yaml's top-level plots, with the offline page.

    ``out_dir`` None leaves the folder to DVC (``plots.out_dir``, by default dvc_plots/);
    ``html_template`` None regenerates and uses build/plots_page.html. DVC's output is returned,
    its last line the page's file:// address.
    """
    page_template = html_template or write_page_template(repo_root)
    plot_ids = top_level_plot_ids((repo_root / DVC_FILE).read_text(encoding="utf-8"))
    command, env = venv_dvc(*dvc_plots_args(plot_ids, revisions, page_template.resolve(), out_dir))
    return subprocess.run(command, cwd=repo_root, env=env, capture_output=True, text=True)
