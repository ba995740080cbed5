"""The HTML reports: data islands that match --json, escaping, determinism, size, and every page kind
rendered from real artefacts (traces of the demo CNN, sweeps of a real script, doctor and probe documents)."""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_inputs as RI
from twinrun._errors import UsageError
from twinrun.report import check_output, detect_kind, render, write_html
from twinrun.report._html import el, esc, island

pytestmark = pytest.mark.timeout(900)


# --- helpers -----------------------------------------------------------------------------------------
class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of script elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[tuple[dict, str]] = []
        self._in: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "script":
            self._in = a
            self.scripts.append((a, ""))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            a, text = self.scripts[-1]
            self.scripts[-1] = (a, text + data)


def parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    return p


def islands(html: str) -> dict[str, object]:
    """The page's JSON islands, after checking that its ids are unique and its in-page links land."""
    tags = parse(html)
    ids = [a["id"] for _, a in tags.tags if "id" in a]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for _, a in tags.tags:
        if (a.get("href") or "").startswith("#"):
            assert a["href"][1:] in ids, a["href"]
        for ref in (a.get("aria-labelledby") or "").split():
            assert ref in ids, ref
    return {a["id"]: json.loads(text) for a, text in tags.scripts if a.get("type") == "application/json"}


def json_out(r) -> dict:
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return RI.inputs_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def demo(folder):
    a, b = RI.demo_traces(folder)
    r = RI.twinrun("diff", str(a), str(b), "--json")
    assert r.returncode == 1, r.stderr
    return a, b, json_out(r)


# --- diff ---------------------------------------------------------------------------------------------
def test_diff_island_is_the_json_document(demo):
    a, b, doc = demo
    html = render("diff", doc, a=a, b=b)
    assert islands(html)["twinrun-document"] == doc
    # The page leads with the terminal's sentence (backticked names shown as code).
    lead = re.search(r'<div class="lead [a-z]+" role="status">(.*?)</div>', html, re.DOTALL).group(1)
    text = re.sub(r"<[^>]+>", "", lead).replace("&#x27;", "'")
    assert doc["sentence"].replace("`", "") in text


def test_diff_map_and_ulp_histogram_agree_with_the_comparison(demo):
    a, b, doc = demo
    data = islands(render("diff", doc, a=a, b=b))["twinrun-data"]
    fd = doc["first_divergence"]
    m = data["map"]
    first = m["first"]
    assert ((first["step"], first["index"], first["phase"], first["name"])
            == (fd["step"], fd["index"], fd["phase"], fd["name"]))
    assert m["rows"][first["row"]] == {"phase": fd["phase"], "name": fd["name"]}
    assert len(m["columns"]) == doc["steps_compared"] == 20
    # every differing cell of the map is a differing event of the comparison's growth rows
    differing = sum(n for row in m["cells"] for _, n, st in row if st == 2)
    assert differing == sum(g["differing"] for g in doc["growth"])
    u = data["ulp"]
    assert u["available"] and u["differing"] == fd["differing"] and u["max_ulp"] == fd["max_ulp"]
    assert sum(bn["count"] for bn in u["bins"]) == fd["differing"]
    assert u["bins"][-1]["lo"] <= fd["max_ulp"] <= u["bins"][-1]["hi"]
    assert u["identical"] + u["differing"] + u["nan"] == fd["size"]


def test_diff_page_is_deterministic_and_small(demo, folder):
    a, b, doc = demo
    one = render("diff", doc, a=a, b=b)
    two = render("diff", json.loads(json.dumps(doc)), a=a, b=b)
    assert one == two
    assert len(one.encode()) < 1_000_000, len(one.encode())
    # The command, in a fresh process with another hash seed, computes the comparison itself and
    # writes the same bytes.
    out = folder / "cli-diff.html"
    r = RI.twinrun("report", str(a), str(b), "-o", str(out), env={"PYTHONHASHSEED": "123"})
    assert r.returncode == 0, r.stderr
    assert out.read_text(encoding="utf-8") == one
    assert not re.search(r"\b(19|20)\d\d-\d\d-\d\d", one)   # no date


def test_identical_traces_render_with_nothing_to_grow(demo, folder):
    a, _, _ = demo
    r = RI.twinrun("diff", str(a), str(a), "--json")
    assert r.returncode == 0
    html = render("diff", json_out(r), a=a, b=a)
    assert "IDENTICAL" in html and "nothing grows" in html
    assert islands(html)["twinrun-data"]["map"]["first"] is None


def test_diff_without_the_traces_says_what_is_missing(demo):
    _, _, doc = demo
    html = render("diff", doc)
    assert "needs the two traces themselves" in html
    assert str(doc["first_divergence"]["max_ulp"]) in html.replace(",", "")
    assert islands(html)["twinrun-document"] == doc


# --- escaping -------------------------------------------------------------------------------------------
def test_hostile_names_are_escaped_everywhere(folder):
    a, b = RI.hostile_traces(folder)
    r = RI.twinrun("diff", str(a), str(b), "--json")
    assert r.returncode == 1, r.stderr
    doc = json_out(r)
    html = render("diff", doc, a=a, b=b)
    tags = parse(html)
    # exactly the page's own three scripts: two data islands and the inline script
    assert [s[0].get("type") for s in tags.scripts] == ["application/json", "application/json", None]
    assert not any(t in ("img", "b") for t, _ in tags.tags)
    assert not any(k.startswith("on") for _, attrs in tags.tags for k in attrs)
    assert "<!-- comment" not in html and "</script><script>alert" not in html
    # no control characters and no raw line separator reach the page; they are shown as escapes
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2028\u202e]", html)
    assert "ctl\\x1b[31mred\\x07bell\\x01end" in html
    # the islands hold the names exactly
    data = islands(html)
    assert data["twinrun-document"] == doc
    assert {row["name"] for row in data["twinrun-data"]["map"]["rows"]} == set(RI.HOSTILE)
    assert doc["first_divergence"]["name"] == RI.HOSTILE[2]


def test_escape_primitives():
    assert esc('<a href="x">&\'') == "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"
    assert esc("a\x00b\x9b\ud800") == "a\\x00b\\x9b\\ud800"
    assert str(el("td", {"title": "\"><script>"}, "</td>")) == '<td title="&quot;&gt;&lt;script&gt;">&lt;/td&gt;</td>'
    isl = island("x", {"k": "</script><!-- \u2028 & \ud800", "n": float("nan")})
    assert "</script>" not in isl[:-len("</script>")] and "<!--" not in isl and "&" not in isl
    text = isl[isl.index(">") + 1: -len("</script>")]
    assert json.loads(text) == {"k": "</script><!-- \u2028 & \ud800", "n": "nan"}
    with pytest.raises(ValueError):
        el("td onclick", None)


# --- check ------------------------------------------------------------------------------------------------
def test_check_page_from_check_json(folder):
    keep = folder / "check-traces"
    r = RI.twinrun("check", str(RI.ROOT / "tests" / "scripts" / "cnn_digits.py"), "--json", "-q", "--keep-traces",
                   str(keep), "--", "--steps", "3")
    assert r.returncode == 1, r.stderr
    doc = json_out(r)
    assert detect_kind(doc) == "check"
    html = render("check", doc, a=doc["runs"][0]["trace"], b=doc["runs"][1]["trace"])
    assert islands(html)["twinrun-document"] == doc
    data = islands(html)["twinrun-data"]
    assert data["map"]["first"]["phase"] == doc["first_divergence"]["phase"] == "init"
    assert "The check&#x27;s runs" in html
    # values of a freshly initialised layer differ by far more than a few ULP
    assert data["ulp"]["max_ulp"] > 1_000_000


# --- compare ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweeps(folder):
    return RI.sweeps(folder)


def test_compare_page_two_files(sweeps):
    r = RI.twinrun("compare", str(sweeps["a"]), str(sweeps["b"]), "--json", "-q", "--resamples", "2000")
    assert r.returncode in (0, 1), r.stderr
    doc = json_out(r)
    html = render("compare", doc, a=sweeps["a"], b=sweeps["b"])
    isl = islands(html)
    assert isl["twinrun-document"] == doc
    # every run, failed and excluded ones included, and marked
    tags = parse(html)
    rows = [a for t, a in tags.tags
            if t == "tr" and "data-order" in a and a.get("class") in ("failed", "excluded", None)]
    assert sum(1 for a in rows if a.get("class") == "failed") == 1
    assert sum(1 for a in rows if a.get("class") == "excluded") == 1
    assert len(parse(html.split('id="runs-table"')[1]).tags) > 0
    assert not any(t == "img" for t, _ in tags.tags)      # the hostile metric name stayed text
    data = isl["twinrun-data"]
    assert set(data["curves"]) >= {"accuracy", "loss"}
    for arm in ("A", "B"):
        lc = data["curves"]["loss"][arm]
        assert len(lc["steps"]) == 30 and all(lo <= m <= hi for lo, m, hi in zip(lc["low"], lc["iqm"], lc["high"]))
        prof = data["profiles"]["accuracy"][arm]
        assert prof["n"] == doc["metrics"]["accuracy"]["comparison"][f"n_{arm.lower()}"]
    for ident in ("ci-0", "poi-chart", "profile-0", "curve-0", "tests-table", "runs-table"):
        assert f'id="{ident}"' in html
    assert "seeds per arm are needed" in html or "no number of seeds" in html


def test_compare_page_variance_design(sweeps):
    r = RI.twinrun("compare", str(sweeps["v"]), "--json", "-q", "--resamples", "2000")
    assert r.returncode == 0, r.stderr
    doc = json_out(r)
    html = render("compare", doc, a=sweeps["v"])
    assert islands(html)["twinrun-document"] == doc
    assert 'id="variance-0"' in html and "Variance by source" in html
    data = islands(html)["twinrun-data"]
    assert set(data["curves"]["loss"]) == {"init arm", "data arm", "none arm"}


def test_compare_without_results_files(sweeps):
    r = RI.twinrun("compare", str(sweeps["a"]), str(sweeps["b"]), "--json", "-q", "--resamples", "500")
    html = render("compare", json_out(r))
    assert "needs the runs themselves" in html and 'id="ci-0"' in html


# --- doctor and probe ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_doctor_page(folder):
    doc = json.loads(RI.doctor_json(folder).read_text())
    assert detect_kind(doc) == "doctor"
    html = render("doctor", doc)
    assert islands(html)["twinrun-document"] == doc
    assert "NOT REPRODUCIBLE" in html and "unseeded-init" in html
    pres = re.findall(r'<pre id="snippet-\d+"><code>(.*?)</code></pre>', html, re.DOTALL)
    assert "import twinrun\ntwinrun.seed_everything(0)" in pres
    ledger = html.split('id="ledger-table"')[1].split("</table>")[0]
    assert ledger.count("<tr data-order=") == len(doc["evidence"])
    # `twinrun doctor --json --html PATH` wrote the same bytes, and said so on stderr
    assert (folder / "doctor-cli.html").read_text(encoding="utf-8") == html
    assert f"twinrun doctor: wrote {folder / 'doctor-cli.html'}" in (folder / "doctor.stderr").read_text()


def test_doctor_html_refuses_a_file_that_is_not_a_report(tmp_path):
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    script = RI.ROOT / "examples" / "nondeterminism" / "no_seed.py"
    r = RI.twinrun("doctor", "--html", str(notes), "--json", str(script))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()   # one line: refused before the first run
    assert len(lines) == 1 and lines[0].startswith("twinrun doctor: error:") and "not a twinrun report" in lines[0]
    assert r.stdout == "" and notes.read_text() == "<p>my notes</p>"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.html"]


def test_probe_page(folder):
    from twinrun.report.probe import sentence

    doc = json.loads(RI.probe_json(folder).read_text())
    assert detect_kind(doc) == "probe"
    html = render("probe", doc)
    assert islands(html)["twinrun-document"] == doc
    lead = sentence(doc)
    bi = doc["checks"]["batch_invariance"]
    if bi["stable"] is False:
        assert "batch_invariance" in lead and f"`{bi['first_layer']}`" in lead
        assert 'id="rows-1"' in html
    assert html.count("— not run") == 2   # threads and isa were not run


# --- writing, and the command ------------------------------------------------------------------------------
def test_write_html_never_overwrites_a_foreign_file(demo, tmp_path):
    _, _, doc = demo
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    with pytest.raises(UsageError, match="not a twinrun report"):
        write_html("diff", doc, foreign)
    assert foreign.read_text() == "<html>my notes</html>"
    page = tmp_path / "r.html"
    write_html("diff", doc, page)
    write_html("diff", doc, page)   # its own report: replaced
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>\n<!-- twinrun report: diff -->")
    with pytest.raises(UsageError, match="does not exist"):
        check_output(tmp_path / "nope" / "r.html")
    with pytest.raises(UsageError, match="is a folder"):
        check_output(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.html", "r.html"]   # no temporary left


def test_render_rejects_wrong_documents(demo):
    _, _, doc = demo
    with pytest.raises(UsageError, match="not a twinrun doctor"):
        render("doctor", doc)
    with pytest.raises(UsageError, match="unknown report kind"):
        render("html", doc)
    with pytest.raises(UsageError, match="both traces"):
        render("diff", doc, a="x.trace")
    with pytest.raises(UsageError, match="not the --json output"):
        detect_kind({"hello": 1})


def test_report_command(demo, sweeps, folder, tmp_path):
    a, b, doc = demo
    (tmp_path / "diff.json").write_text(json.dumps(doc))
    out = tmp_path / "page.html"
    r = RI.twinrun("report", str(tmp_path / "diff.json"), str(a), str(b), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"output": str(out), "kind": "diff", "bytes": out.stat().st_size,
                                    "inputs": [str(tmp_path / "diff.json"), str(a), str(b)]}
    r = RI.twinrun("report", str(sweeps["a"]), str(sweeps["b"]), "-o", str(tmp_path / "cmp.html"),
                   "--resamples", "500", "-q")
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "cmp.html").read_text(encoding="utf-8")
    assert "Probability of improvement" in page
    # the same bytes as a page rendered here from `twinrun compare --json` (bootstrap seeded, no dict-order effects)
    r = RI.twinrun("compare", str(sweeps["a"]), str(sweeps["b"]), "--json", "-q", "--resamples", "500")
    assert render("compare", json_out(r), a=sweeps["a"], b=sweeps["b"]) == page
    bad = tmp_path / "bad.json"
    bad.write_text("{\"a\": ")
    foreign = tmp_path / "foreign.html"
    foreign.write_text("hello")
    cases = [
        ([str(a)], "exactly two"),
        ([str(a), str(sweeps["a"])], "cannot go on one page"),
        ([str(bad)], "not valid JSON"),
        ([str(tmp_path / "missing.trace")], "no such file"),
        ([str(RI.CURVES)], "not a twinrun trace, results file or JSON"),
        ([str(tmp_path / "diff.json"), str(a)], "takes the two traces"),
        ([str(a), str(b), "-o", str(foreign)], "not a twinrun report"),
    ]
    for args, message in cases:
        if "-o" not in args:
            args = [*args, "-o", str(tmp_path / "x.html")]
        r = RI.twinrun("report", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith("twinrun report: error:"), r.stderr
    assert foreign.read_text() == "hello"
    assert not (tmp_path / "x.html").exists()
