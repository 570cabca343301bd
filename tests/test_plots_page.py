"""The `dvc plots` page draws every top-level plot offline, checked in real headless Chromium.

The page is generated from the committed reports (no pipeline run) and opened with the network
made unusable, so a script still loaded from a CDN leaves its plots blank and fails the check;
``test_check_fails_on_dvcs_cdn_page`` keeps that failure in view with DVC's own page.
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dvc_render.html import PAGE_HTML

from pipeline.plots_page import exact_target, inline_scripts, render_page, top_level_plot_ids
from tests.smoke import REPO_ROOT

INSTALL_BROWSER = "scripts/install_browser.sh"
# Headless, and unable to reach any host: names do not resolve and the proxy port is closed.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
)
# Virtual milliseconds: time jumps ahead while the page idles, so this costs no real waiting.
RENDER_BUDGET_MS = 20000
# Put first in <head>: records failed loads and uncaught errors, and each image's decoded width,
# on the DOM, where --dump-dom shows them.
PROBE = """<script>
  const recordProblem = (text) => {
    document.documentElement.dataset.probeErrors = (document.documentElement.dataset.probeErrors || "") + text + "\\n";
  };
  window.addEventListener("error", (event) =>
    recordProblem(event.message || `failed to load ${event.target.src || event.target.href}`), true);
  window.addEventListener("unhandledrejection", (event) => recordProblem(`unhandled rejection: ${event.reason}`));
  window.addEventListener("load", () => document.querySelectorAll("img").forEach(
    (image) => image.setAttribute("data-natural-width", image.naturalWidth)));
</script>"""
VOID_ELEMENTS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.IGNORECASE)
LONGEST_LEGEND_LABEL = 32
# Lines are told apart by colour: one colour draws at most one series' train and eval lines.
LINES_PER_COLOUR = 2


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    text: str = ""

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def all_text(self) -> str:
        return self.text + "".join(child.all_text() for child in self.children)


class DomBuilder(HTMLParser):
    """The element tree of Chromium's --dump-dom output (which closes every non-void element)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.open = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.open[-1].children.append(element)
        if tag not in VOID_ELEMENTS:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.open[-1].children.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.open) - 1, 0, -1):
            if self.open[depth].tag == tag:
                del self.open[depth:]
                return

    def handle_data(self, data):
        if self.open[-1].tag not in ("script", "style"):
            self.open[-1].text += data


def parse_dom(html: str) -> Element:
    builder = DomBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


def plot_divs(root: Element) -> list[Element]:
    """The page's plots: the outermost divs with an id (DVC gives each plot one)."""
    found: list[Element] = []

    def visit(element: Element) -> None:
        if element.tag == "div" and "id" in element.attrs:
            found.append(element)
            return
        for child in element.children:
            visit(child)

    visit(root)
    return found


def has_geometry(path: Element) -> bool:
    """A drawn path: finite coordinates, not all zero (an empty or NaN-holding outline is not)."""
    outline = path.attrs.get("d", "")
    if "NaN" in outline or "Infinity" in outline:
        return False
    coordinates = [float(number) for number in NUMBER.findall(outline)]
    return len(coordinates) >= 4 and all(map(math.isfinite, coordinates)) and any(coordinates)


def vega_plot_problems(plot: Element) -> list[str]:
    """What is wrong with one vega plot's drawing, if anything."""
    name = plot.attrs["id"]
    drawings = [element for element in plot.iter() if element.tag == "svg" and "marks" in element.classes()]
    if not drawings:
        return [f"{name}: no SVG drawn"]
    problems = []
    for drawing in drawings:
        size = [float(drawing.attrs.get(side, "nan")) for side in ("width", "height")]
        if not all(0 < value < 20000 for value in size):
            problems.append(f"{name}: SVG size {size} is not a real size")
    mark_groups = [element for element in plot.iter() if element.tag == "g" and "role-mark" in element.classes()]
    if not any(has_geometry(path) for group in mark_groups for path in group.iter() if path.tag == "path"):
        problems.append(f"{name}: no mark with real geometry")
    lines_by_mark: dict[str, list[tuple[str, str]]] = {}
    for group in mark_groups:
        if "mark-line" in group.classes():
            mark_name = " ".join(sorted(group.classes() - {"mark-line", "role-mark"}))
            lines_by_mark.setdefault(mark_name, []).extend(
                (path.attrs.get("stroke", ""), path.attrs.get("stroke-dasharray", "")) for path in group.children
            )
    for mark_name, lines in lines_by_mark.items():
        strokes = Counter(stroke for stroke, _ in lines)
        crowded = {stroke: count for stroke, count in strokes.items() if count > LINES_PER_COLOUR}
        if crowded:
            problems.append(f"{name}: lines of {mark_name} told apart by dash alone, colours used {crowded} times")
        alike = len(lines) - len(set(lines))
        if alike:
            problems.append(f"{name}: {alike} lines of {mark_name} look like another (same colour and dash)")
    legend_labels = [
        element.all_text() for element in plot.iter()
        if element.tag == "g" and "role-legend-label" in element.classes()
    ]
    unreadable = [label for label in legend_labels if len(label) > LONGEST_LEGEND_LABEL or label.endswith("…")]
    if unreadable:
        problems.append(f"{name}: legend labels too long to read: {unreadable}")
    return problems


def page_problems(root: Element, expected_plots: int) -> list[str]:
    """Every reason the page is not a full drawing of ``expected_plots`` plots."""
    html = next(element for element in root.iter() if element.tag == "html")
    problems = [f"page error: {line}" for line in html.attrs.get("data-probe-errors", "").splitlines()]
    problems += [f"plot error: {element.all_text()}" for element in root.iter() if "plot-error" in element.classes()]
    charsets = [element.attrs["charset"].lower() for element in root.iter() if "charset" in element.attrs]
    if charsets != ["utf-8"]:
        problems.append("the page does not declare its charset (utf-8): browsers may garble its text")
    plots = plot_divs(root)
    if len(plots) != expected_plots:
        problems.append(f"{len(plots)} plots on the page, dvc.yaml defines {expected_plots}")
    for plot in plots:
        images = [element for element in plot.iter() if element.tag == "img"]
        if images:
            problems += [
                f"{plot.attrs['id']}: image {image.attrs.get('src', '')[:80]} not shown"
                for image in images if int(image.attrs.get("data-natural-width", "0")) <= 0
            ]
        else:
            problems += vega_plot_problems(plot)
    return problems


def chromium() -> str:
    """Debian's chromium; its absence fails the test, since the test setup installs it."""
    found = shutil.which("chromium")
    if not found:
        pytest.fail(f"headless Chromium not found: run {INSTALL_BROWSER} (the test setup does)", pytrace=False)
    return found


def drawn_dom(page: Path, profile: Path) -> Element:
    """The page's DOM after Chromium, offline, has run its scripts (with PROBE added first)."""
    html = page.read_text(encoding="utf-8")
    page.write_text(html.replace("<head>", "<head>\n" + PROBE, 1), encoding="utf-8")
    dump = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={RENDER_BUDGET_MS}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert dump.returncode == 0 and "<html" in dump.stdout, f"chromium failed:\n{dump.stderr[-3000:]}"
    return parse_dom(dump.stdout)


def expected_plot_count() -> int:
    return len(top_level_plot_ids((REPO_ROOT / "dvc.yaml").read_text(encoding="utf-8")))


def test_every_plot_draws_offline(tmp_path: Path):
    command = subprocess.run(
        [sys.executable, "-m", "pipeline", "plots", "-o", str(tmp_path / "page")],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert command.returncode == 0, command.stdout + command.stderr
    assert "failed to load" not in command.stderr, command.stderr

    root = drawn_dom(tmp_path / "page" / "index.html", tmp_path / "profile")

    problems = page_problems(root, expected_plot_count())
    assert not problems, "\n".join(problems)


def test_check_fails_on_dvcs_cdn_page(tmp_path: Path):
    """The same check on DVC's default page, whose scripts come from a CDN, finds blank plots."""
    cdn_template = tmp_path / "dvc_default_page.html"
    cdn_template.write_text(PAGE_HTML, encoding="utf-8")
    command = render_page(REPO_ROOT, out_dir=tmp_path / "page", html_template=cdn_template)
    assert command.returncode == 0, command.stdout + command.stderr

    problems = page_problems(drawn_dom(tmp_path / "page" / "index.html", tmp_path / "profile"), expected_plot_count())

    assert any("failed to load https://cdn.jsdelivr.net/" in problem for problem in problems), problems
    assert any(problem.endswith(": no SVG drawn") for problem in problems), problems


def test_exact_target_matches_only_its_plot():
    pattern = exact_target("simple_nn loss (eval)")
    assert pattern == "dvc[.]yaml::simple_nn loss [(]eval[)]$"
    assert re.match(pattern, "dvc.yaml::simple_nn loss (eval)")
    assert not re.match(pattern, "dvc.yaml::simple_nn loss (eval) smoothed")
    assert not re.match(exact_target("reports/a.json"), "reports/a.json")  # a stage output's path


def test_inline_scripts_refuses_a_script_that_would_break_the_page():
    skeleton = "<head><!-- vega scripts --></head>{plot_divs}"
    assert "<script>/* a.js */\nvar a = 1;\n</script>" in inline_scripts(skeleton, {"a.js": "var a = 1;"})
    with pytest.raises(ValueError, match="b.js holds </script"):
        inline_scripts(skeleton, {"b.js": "'</script>'"})
    with pytest.raises(ValueError, match="c.js holds {plot_divs}"):
        inline_scripts(skeleton, {"c.js": "'{plot_divs}'"})
