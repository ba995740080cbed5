"""The page frame every report shares: head, inline CSS and JS, lead, sections, JSON islands.

The page loads nothing: a Content-Security-Policy of ``default-src 'none'`` (inline style and
script only) makes the browser refuse any request even if a string from a trace looked like a URL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._artifacts import REPORT_MARKER
from ._html import Child, Safe, el, esc, frag, island
from ._svg import PATTERNS

__all__ = ["MARKER", "Section", "badge", "dl", "figure", "fmt", "fmt_int", "note", "page", "table"]

# The first bytes of every report: how ``write_html`` recognises a file it may replace.
MARKER = REPORT_MARKER.decode()   # _artifacts recognises a report by it, and replaces only those

CSS = """
:root{--fg:#1b1b1b;--muted:#555;--line:#c9c9c9;--bg:#fff;--soft:#f4f4f2;--ok:#1a6e45;--bad:#a33a00;--link:#0b5cad}
*{box-sizing:border-box}
html{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","DejaVu Sans",sans-serif;color:var(--fg);
  background:var(--bg)}
body{margin:0}
header.top{border-bottom:1px solid var(--line);padding:14px 28px 10px;background:var(--soft)}
header.top .kind{font-size:13px;letter-spacing:.06em;text-transform:uppercase;color:var(--muted)}
header.top h1{font-size:21px;margin:2px 0 4px;font-weight:650}
header.top .inputs{font-size:13px;color:var(--muted);word-break:break-all}
main{max-width:1080px;margin:0 auto;padding:18px 28px 40px}
.lead{font-size:17.5px;line-height:1.5;border-left:6px solid var(--muted);padding:10px 16px;margin:6px 0 14px;
  background:var(--soft)}
.lead.good{border-color:var(--ok)}.lead.bad{border-color:var(--bad)}
.lead p{margin:4px 0}.lead p+p{font-size:15.5px}
.badge{display:inline-block;font-size:12px;font-weight:700;letter-spacing:.05em;padding:1px 7px;border-radius:3px;
  border:1.5px solid currentColor;margin-right:8px;vertical-align:2px;white-space:nowrap}
.badge.good{color:var(--ok)}.badge.bad{color:var(--bad)}.badge.none{color:var(--muted)}
nav.toc{font-size:13.5px;margin:0 0 8px;color:var(--muted)}
nav.toc a{margin-right:14px}
a{color:var(--link)}
a:focus-visible,button:focus-visible,[tabindex]:focus-visible{outline:3px solid #E69F00;outline-offset:2px}
section:focus{outline:none}
section{margin:26px 0 8px}
h2{font-size:18px;margin:0 0 6px;padding-bottom:3px;border-bottom:1px solid var(--line)}
h3{font-size:15.5px;margin:16px 0 4px}
p.how,.caption{color:var(--muted);font-size:13.5px;margin:2px 0 8px;max-width:78ch}
figure{margin:8px 0 14px}
figcaption{color:var(--muted);font-size:13px;max-width:80ch;margin-top:2px}
svg.chart{display:block;max-width:100%;height:auto;font-family:inherit;overflow:visible}
svg.chart text{fill:#222;font-size:12px}
svg.chart .tl{fill:#444;font-size:11px}svg.chart .al{font-size:12px;fill:#222}
svg.chart .grid{stroke:#e3e3e3;stroke-width:1}svg.chart .tick{stroke:#777}svg.chart .axis{stroke:#444;fill:none}
svg.defs{position:absolute;width:0;height:0;overflow:hidden}
.scroll{overflow:auto;max-height:72vh;border:1px solid var(--line);background:#fff;width:fit-content;max-width:100%}
.scroll table{margin:0}
.mapbox svg{display:block}
.map .lbl{font-size:11px;fill:#222}.map .ph{font-size:11px;font-weight:700;fill:#444}
.map rect.first{stroke:#000;stroke-width:2.5}
.map .flash{animation:flash 1.2s ease-in-out 2}
@keyframes flash{50%{stroke:#E69F00;stroke-width:5}}
.keyrow{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px;margin:6px 0;color:#333;align-items:center}
.keyrow svg{vertical-align:middle;margin-right:5px}
table{border-collapse:collapse;font-size:13.5px;margin:6px 0 10px;min-width:50%}
th,td{border-bottom:1px solid #e2e2e2;padding:4px 10px 4px 6px;text-align:left;vertical-align:top}
thead th{border-bottom:2px solid #999;background:#fafafa;position:sticky;top:0;font-weight:650}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafaf8}
tr.failed td{background:repeating-linear-gradient(135deg,#fdf0e8,#fdf0e8 6px,#fff 6px,#fff 12px)}
tr.excluded td{background:repeating-linear-gradient(45deg,#eef5fb,#eef5fb 6px,#fff 6px,#fff 12px)}
th button{font:inherit;font-weight:650;background:none;border:0;padding:0;cursor:pointer;color:inherit;
  text-align:inherit}
th button::after{content:" \\2195";color:#999;font-weight:400}
th[aria-sort=ascending] button::after{content:" \\25B2";color:#222}
th[aria-sort=descending] button::after{content:" \\25BC";color:#222}
code,pre{font-family:ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.92em}
code{background:#f0f0ee;padding:0 3px;border-radius:2px;word-break:break-word}
.snippet{position:relative;margin:6px 0 10px}
.snippet pre{background:#f6f6f3;border:1px solid var(--line);padding:10px 12px;margin:0;overflow:auto;
  white-space:pre-wrap;word-break:break-word}
.snippet button{position:absolute;top:6px;right:6px;font:inherit;font-size:12px;padding:2px 8px;border:1px solid #888;
  background:#fff;border-radius:3px;cursor:pointer}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:14px;margin:6px 0}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
.note{font-size:13.5px;color:#333;background:#fffbe6;border:1px solid #eadb9a;padding:6px 10px;margin:8px 0;
  max-width:90ch}
.unavailable{font-size:13.5px;color:var(--muted);border:1px dashed #aaa;padding:8px 12px;margin:6px 0;max-width:90ch}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:8px 22px}
.yes{color:var(--ok);font-weight:650;white-space:nowrap}.no{color:var(--bad);font-weight:650;white-space:nowrap}
td code{white-space:nowrap}
.sr{position:absolute;left:-10000px;width:1px;height:1px;overflow:hidden}
footer{max-width:1080px;margin:0 auto;padding:10px 28px 30px;color:var(--muted);font-size:12.5px;
  border-top:1px solid var(--line)}
@media print{.scroll{max-height:none;overflow:visible}.snippet button{display:none}header.top{background:none}}
"""

JS = """
(function(){
"use strict";
var live=document.getElementById("tw-live");
function say(t){if(live){live.textContent=t;}}
function key(td){var v=td.getAttribute("data-sort");return v===null?td.textContent.trim():v;}
function num(v){if(v===""){return null;}var x=Number(v);return isNaN(x)?null:x;}
function sortBy(table,col,th){
  var asc=th.getAttribute("aria-sort")!=="ascending";
  var heads=table.tHead.rows[0].cells;
  for(var i=0;i<heads.length;i++){heads[i].removeAttribute("aria-sort");}
  th.setAttribute("aria-sort",asc?"ascending":"descending");
  var numeric=th.getAttribute("data-type")==="number";
  var body=table.tBodies[0];
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){
    var x=key(a.cells[col]),y=key(b.cells[col]),c;
    if(numeric){var p=num(x),q=num(y);
      if(p===null&&q===null){c=0;}else if(p===null){return 1;}else if(q===null){return -1;}else{c=p-q;}
    }else{c=x<y?-1:(x>y?1:0);}
    if(c===0){c=Number(a.getAttribute("data-order"))-Number(b.getAttribute("data-order"));return c;}
    return asc?c:-c;
  });
  rows.forEach(function(r){body.appendChild(r);});
  say("sorted by "+th.textContent.trim()+(asc?", ascending":", descending"));
}
Array.prototype.forEach.call(document.querySelectorAll("table.sortable"),function(table){
  var heads=table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads,function(th,col){
    var b=th.querySelector("button");
    if(b){b.addEventListener("click",function(){sortBy(table,col,th);});}
  });
});
function go(id){
  var t=document.getElementById(id);
  if(!t){return false;}
  var inChart=t.closest?t.closest("svg"):null;
  t.scrollIntoView(inChart?{block:"center",inline:"center"}:{block:"start"});
  if(typeof t.focus==="function"){t.focus({preventScroll:true});}
  if(t.classList){t.classList.remove("flash");void t.getBoundingClientRect();t.classList.add("flash");}
  return true;
}
document.addEventListener("click",function(e){
  var a=e.target.closest?e.target.closest("a[href^='#']"):null;
  if(!a){return;}
  var id=a.getAttribute("href").slice(1);
  if(!id||!document.getElementById(id)){return;}
  e.preventDefault();
  try{history.replaceState(null,"","#"+id);}catch(err){}
  go(id);
});
if(location.hash.length>1){go(location.hash.slice(1));}
function copied(b,ok){b.textContent=ok?"Copied":"Select and copy";setTimeout(function(){b.textContent="Copy";},1600);}
Array.prototype.forEach.call(document.querySelectorAll(".snippet button"),function(b){
  b.addEventListener("click",function(){
    var pre=b.parentNode.querySelector("pre");var text=pre.textContent;
    var fallback=function(){var r=document.createRange();r.selectNodeContents(pre);var s=window.getSelection();
      s.removeAllRanges();s.addRange(r);var ok=false;try{ok=document.execCommand("copy");}catch(err){}copied(b,ok);};
    if(navigator.clipboard&&window.isSecureContext){navigator.clipboard.writeText(text).then(function(){copied(b,true);},fallback);}
    else{fallback();}
  });
});
})();
"""


@dataclass
class Section:
    ident: str
    heading: str
    body: Safe
    explain: str | None = None   # one line under the heading: how to read the section


@dataclass
class Lead:
    """The page's lead: the same sentence(s) as the terminal, and a verdict word that is not only a colour."""

    sentences: list[str]
    verdict: str          # the badge text
    tone: str = "none"    # good | bad | none
    extra: list[Safe] = field(default_factory=list)


def page(*, kind: str, title: str, inputs: Sequence[str], lead: Lead, sections: list[Section],
         document: Any, data: Any, version: str) -> str:
    """The whole page as text; the same arguments give the same bytes."""
    toc = el("nav", {"class": "toc", "aria-label": "sections"},
             "On this page: ", [el("a", {"href": f"#{s.ident}"}, s.heading) for s in sections])
    lead_html = el("div", {"class": f"lead {lead.tone}", "role": "status"},
                   el("p", None, el("span", {"class": f"badge {lead.tone}"}, lead.verdict),
                      _sentence(lead.sentences[0]) if lead.sentences else ""),
                   [el("p", None, _sentence(s)) for s in lead.sentences[1:]], lead.extra)
    body = [el("section", {"id": s.ident, "aria-labelledby": f"{s.ident}-h", "tabindex": -1},
               el("h2", {"id": f"{s.ident}-h"}, s.heading),
               el("p", {"class": "how"}, s.explain) if s.explain else None, s.body) for s in sections]
    head = frag(
        Safe('<meta charset="utf-8">'),
        Safe('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        Safe("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
             "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"),
        el("meta", {"name": "generator", "content": f"twinrun {version}"}),
        el("title", None, title),
        Safe(f"<style>{CSS}</style>"),
    )
    html = frag(
        Safe(f"{MARKER}: {esc(kind)} -->\n"),
        Safe('<html lang="en">'), el("head", None, head),
        Safe("<body>"),
        el("svg", {"class": "defs", "aria-hidden": "true", "focusable": "false"}, el("defs", None, PATTERNS)),
        el("header", {"class": "top"},
           el("div", {"class": "kind"}, f"twinrun {kind} report"),
           el("h1", None, title),
           el("div", {"class": "inputs"}, [frag(el("span", None, x), Safe(" · ") if i < len(inputs) - 1 else "")
                                          for i, x in enumerate(inputs)])),
        el("main", None, lead_html, toc, body),
        el("footer", None,
           f"Made by twinrun {version}. One self-contained file: no network, no external fonts or scripts. "
           "The data behind every figure is embedded as JSON (script elements twinrun-document and twinrun-data); "
           "the same inputs give the same bytes.",
           el("div", {"id": "tw-live", "class": "sr", "aria-live": "polite"}, "")),
        island("twinrun-document", document),
        island("twinrun-data", data),
        Safe(f"<script>{JS}</script>"),
        Safe("</body></html>\n"),
    )
    return str(html)


def _sentence(text: str) -> Safe:
    from ._html import code_text

    return code_text(text)


# --- small shared pieces --------------------------------------------------------------------------
def fmt(x: Any, digits: int = 3) -> str:
    """A number for a reader: significant digits, scientific when very small or large; '—' for none."""
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if math.isnan(x):
        return "nan"
    if x == 0:
        return "0"
    a = abs(x)
    if 1e-3 <= a < 1e5:
        return f"{x:.{digits}g}"
    from ._svg import sci

    return sci(x, digits)


def fmt_int(x: Any) -> str:
    return "—" if x is None else f"{int(x):,}"


def badge(text: str, tone: str) -> Safe:
    return el("span", {"class": f"badge {tone}"}, text)


def note(*children: Child) -> Safe:
    return el("div", {"class": "note"}, *children)


def unavailable(*children: Child) -> Safe:
    return el("div", {"class": "unavailable"}, *children)


def figure(chart: Safe, caption: Child) -> Safe:
    return el("figure", None, chart, el("figcaption", None, caption))


def dl(items: Sequence[tuple[str, Child]]) -> Safe:
    return el("dl", {"class": "facts"}, [frag(el("dt", None, k), el("dd", None, v)) for k, v in items])


def table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]], *, sortable: bool = False,
          caption: str | None = None, row_classes: Sequence[str | None] | None = None,
          ident: str | None = None) -> Safe:
    """A table; ``columns`` are ``(heading, "text"|"number")``. A cell is a value, or
    ``(shown, sort_key)`` to sort by something other than its text. Sortable tables sort from the
    keyboard: each heading is a button (Tab to it, Enter or Space)."""
    head = []
    for name, typ in columns:
        cls = "num" if typ == "number" else None
        if sortable:
            button = el("button", {"type": "button"}, name)
            head.append(el("th", {"scope": "col", "class": cls, "data-type": typ}, button))
        else:
            head.append(el("th", {"scope": "col", "class": cls}, name))
    body = []
    for i, row in enumerate(rows):
        cells = []
        for (_name, typ), v in zip(columns, row):
            shown, key = (v if isinstance(v, tuple) else (v, None))
            attrs = {"class": "num" if typ == "number" else None,
                     "data-sort": None if key is None else str(key)}
            cells.append(el("td", attrs, shown))
        cls = row_classes[i] if row_classes else None
        body.append(el("tr", {"data-order": i, "class": cls}, cells))
    return el("div", {"class": "scroll", "tabindex": 0, "role": "region",
                      "aria-label": caption or "table", "style": "max-height:60vh"},
              el("table", {"class": "sortable" if sortable else None, "id": ident},
                 el("caption", {"class": "sr"}, caption) if caption else None,
                 el("thead", None, el("tr", None, head)), el("tbody", None, body)))
