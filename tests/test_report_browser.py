"""The HTML reports in a real browser: Chromium driven by Playwright, the system's Chromium.

Each page loads with no console error and no network request (every non-file: request is aborted
and counted), every SVG chart has a size, the first-divergence link scrolls to its cell, and the
tables sort from the keyboard. Skipped only when no browser exists.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_inputs as RI
from twinrun.report import write_html

pytestmark = pytest.mark.timeout(900)

_INSTALL = ("no browser for the report tests: install Chromium (`apt-get install chromium`) and the Python "
            "package playwright (`pip install playwright`); Playwright's own browser download is not needed")


def _chromium() -> str | None:
    for candidate in (os.environ.get("TWINRUN_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if exe is None:
        pytest.skip(_INSTALL)
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="twinrun-chromium-") as profile:
        ctx = p.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, viewport={"width": 1200, "height": 800},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Every page kind, rendered from real artefacts."""
    folder = RI.inputs_folder(tmp_path_factory)
    out = folder / "pages"
    out.mkdir(exist_ok=True)
    made: dict[str, Path] = {}

    def doc_of(r):
        assert r.returncode in (0, 1), r.stderr
        return json.loads(r.stdout)

    a, b = RI.demo_traces(folder)
    made["diff"] = write_html("diff", doc_of(RI.twinrun("diff", str(a), str(b), "--json")), out / "diff.html", a=a, b=b)
    ha, hb = RI.hostile_traces(folder)
    made["hostile"] = write_html("diff", doc_of(RI.twinrun("diff", str(ha), str(hb), "--json")), out / "hostile.html",
                                 a=ha, b=hb)
    s = RI.sweeps(folder)
    made["compare"] = write_html("compare", doc_of(RI.twinrun("compare", str(s["a"]), str(s["b"]), "--json", "-q",
                                                              "--resamples", "1000")),
                                 out / "compare.html", a=s["a"], b=s["b"])
    made["variance"] = write_html("compare", doc_of(RI.twinrun("compare", str(s["v"]), "--json", "-q",
                                                               "--resamples", "1000")),
                                  out / "variance.html", a=s["v"])
    made["doctor"] = write_html("doctor", json.loads(RI.doctor_json(folder).read_text()), out / "doctor.html")
    made["probe"] = write_html("probe", json.loads(RI.probe_json(folder).read_text()), out / "probe.html")
    return made


class Visit:
    """One page opened with every request, console message, page error and dialog recorded."""

    def __init__(self, ctx, path: Path):
        self.network: list[str] = []
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = ctx.new_page()

        def route(r):
            if r.request.url.startswith("file:"):
                r.continue_()
            else:
                self.network.append(r.request.url)
                r.abort()

        self.page.route("**/*", route)
        self.page.on("request", lambda req: self.requests.append(req.url))
        self.page.on("console",
                     lambda m: self.errors.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_load_state("load")

    def close(self) -> None:
        self.page.close()

    def assert_clean(self) -> None:
        assert self.network == [], self.network
        assert all(u.startswith("file:") for u in self.requests), self.requests
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs


@pytest.mark.parametrize("name", ["diff", "hostile", "compare", "variance", "doctor", "probe"])
def test_page_loads_clean_and_every_chart_has_a_size(browser, pages, name):
    v = Visit(browser, pages[name])
    try:
        sizes = v.page.eval_on_selector_all(
            "svg.chart",
            "els => els.map(e => { const r = e.getBoundingClientRect(); return [e.id, r.width, r.height]; })")
        assert sizes, "no chart on the page"
        assert all(w > 0 and h > 0 for _, w, h in sizes), sizes
        # the data islands parse in the browser too
        doc = v.page.evaluate("JSON.parse(document.getElementById('twinrun-document').textContent)")
        assert isinstance(doc, dict) and doc
        # every copy button and every in-page link works without an error
        for button in v.page.query_selector_all(".snippet button"):
            button.click()
        for link in v.page.query_selector_all("nav.toc a"):
            link.click()
        v.page.wait_for_timeout(200)
        v.assert_clean()
    finally:
        v.close()


def test_hostile_names_stay_text_in_the_browser(browser, pages):
    v = Visit(browser, pages["hostile"])
    try:
        assert v.page.evaluate("document.querySelectorAll('img, b, script:not([type])').length") == 1  # our one script
        labels = v.page.eval_on_selector_all("#map-chart text.lbl title", "els => els.map(e => e.textContent)")
        assert any(t.startswith('<script>alert("owned")</script>') for t in labels), labels
        v.assert_clean()
    finally:
        v.close()


def test_first_divergence_link_scrolls_to_its_cell(browser, pages):
    v = Visit(browser, pages["diff"])
    try:
        page = v.page
        page.evaluate("window.scrollTo(0, 0)")
        before = page.evaluate("""() => { const r = document.getElementById('first-divergence').getBoundingClientRect();
                                          return r.top; }""")
        assert before > page.viewport_size["height"], "the cell should start below the fold in this test"
        page.click("#first-divergence-link")
        page.wait_for_timeout(400)
        box = page.evaluate("""() => { const r = document.getElementById('first-divergence').getBoundingClientRect();
                                       return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,
                                               w: innerWidth, h: innerHeight,
                                               focused: document.activeElement.id}; }""")
        assert box["top"] >= 0 and box["bottom"] <= box["h"], box
        assert box["left"] >= 0 and box["right"] <= box["w"], box
        assert box["focused"] == "first-divergence"
        # and the cell is the one the document names
        doc = page.evaluate("JSON.parse(document.getElementById('twinrun-document').textContent)")
        title = page.text_content("#first-divergence title")
        fd = doc["first_divergence"]
        assert f"{fd['name']} ({fd['phase']}), step {fd['step']}" in title
        v.assert_clean()
    finally:
        v.close()


def _column(page, table: str, col: int) -> list[str]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr",
        f"rows => rows.map(r => r.cells[{col}].getAttribute('data-sort') ?? r.cells[{col}].textContent)")


def test_tables_sort_from_the_keyboard(browser, pages):
    v = Visit(browser, pages["compare"])
    try:
        page = v.page
        heads = page.eval_on_selector_all("#runs-table thead th", "ths => ths.map(t => t.textContent.trim())")
        col = heads.index("seconds")
        # reach the heading with the keyboard alone: focus the first heading button, then Tab
        page.focus("#runs-table thead th:first-child button")
        for _ in range(col):
            page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent.trim()") == "seconds"
        page.keyboard.press("Enter")
        values = [float(x) for x in _column(page, "runs-table", col) if x != ""]
        assert values == sorted(values) and len(values) >= 10
        assert page.get_attribute(f"#runs-table thead th:nth-child({col + 1})", "aria-sort") == "ascending"
        page.keyboard.press("Space")
        values = [float(x) for x in _column(page, "runs-table", col) if x != ""]
        assert values == sorted(values, reverse=True)
        assert page.get_attribute(f"#runs-table thead th:nth-child({col + 1})", "aria-sort") == "descending"
        # a text column, and the failed run's row stays whole when sorted
        status = heads.index("status")
        page.focus(f"#runs-table thead th:nth-child({status + 1}) button")
        page.keyboard.press("Enter")
        texts = [t.strip() for t in _column(page, "runs-table", status)]
        assert texts == sorted(texts)
        failed = page.eval_on_selector_all("#runs-table tbody tr.failed",
                                           "rows => rows.map(r => r.cells[4].textContent)")
        assert failed == ["FAILED"]
        assert "sorted by status" in page.text_content("#tw-live")
        v.assert_clean()
    finally:
        v.close()
