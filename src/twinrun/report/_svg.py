"""Hand-written SVG charts: small, deterministic, readable in grey scale and by colour-blind readers.

Why not a plotting library: matplotlib's SVG carries random clip-path ids and a date unless told
otherwise, draws text as glyph paths (large, not selectable), and is not a dependency of twinrun;
the charts here are few and simple (points with intervals, lines with bands, bars, steps), so a
few hundred lines give exact control of the bytes, real text and keyboard-free accessibility
(``role="img"`` with a title and a description).

Every series has a colour from the Okabe-Ito palette *and* a marker shape *and* a dash pattern,
so no reading depends on colour. Every axis names its quantity and unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._html import Child, Safe, el, frag, num

__all__ = ["BAR_FILLS", "PATTERNS", "STYLES", "Chart", "Scale", "band", "clip", "fmt_tick", "legend",
           "log_ticks", "marker", "nice_range", "nice_ticks", "polyline", "sci", "svg_text"]

# (colour, marker, dash): Okabe-Ito colours, distinct shapes, distinct dashes.
STYLES = [
    ("#0072B2", "circle", ""),
    ("#D55E00", "square", "6 3"),
    ("#009E73", "triangle", "2 2"),
    ("#CC79A7", "diamond", "8 3 2 3"),
    ("#E69F00", "down", "4 4"),
    ("#56B4E9", "cross", "1 3"),
]

# Fill patterns shared by every chart of a page (one hidden <svg> holds their definitions).
PATTERNS = frag(
    el("pattern", {"id": "tw-hatch", "width": 6, "height": 6, "patternUnits": "userSpaceOnUse",
                   "patternTransform": "rotate(45)"},
       el("rect", {"width": 6, "height": 6, "fill": "#D55E00"}),
       el("line", {"x1": 0, "y1": 0, "x2": 0, "y2": 6, "stroke": "#000", "stroke-width": 2.2, "stroke-opacity": 0.55})),
    el("pattern", {"id": "tw-hatch-light", "width": 6, "height": 6, "patternUnits": "userSpaceOnUse",
                   "patternTransform": "rotate(-45)"},
       el("rect", {"width": 6, "height": 6, "fill": "#F3B58A"}),
       el("line", {"x1": 0, "y1": 0, "x2": 0, "y2": 6, "stroke": "#000", "stroke-width": 1, "stroke-opacity": 0.5})),
    el("pattern", {"id": "tw-dots", "width": 5, "height": 5, "patternUnits": "userSpaceOnUse"},
       el("rect", {"width": 5, "height": 5, "fill": "#fff"}),
       el("circle", {"cx": 2.5, "cy": 2.5, "r": 0.9, "fill": "#777"})),
    el("pattern", {"id": "tw-grid", "width": 6, "height": 6, "patternUnits": "userSpaceOnUse"},
       el("rect", {"width": 6, "height": 6, "fill": "#9ad0ec"}),
       el("path", {"d": "M0 0H6M0 0V6", "stroke": "#000", "stroke-width": 0.8, "stroke-opacity": 0.45})),
    el("pattern", {"id": "tw-stripe", "width": 6, "height": 6, "patternUnits": "userSpaceOnUse",
                   "patternTransform": "rotate(45)"},
       el("rect", {"width": 6, "height": 6, "fill": "#7ccfb4"}),
       el("line", {"x1": 0, "y1": 0, "x2": 0, "y2": 6, "stroke": "#000", "stroke-width": 1.2, "stroke-opacity": 0.45})),
)
# Bar fills per series, for bars whose series must also read in grey scale.
BAR_FILLS = ["#0072B2", "url(#tw-hatch)", "url(#tw-stripe)", "url(#tw-grid)", "url(#tw-dots)", "#CC79A7"]

FONT = 12


# --- scales -------------------------------------------------------------------------------------
@dataclass
class Scale:
    """Data -> pixels; ``log`` scales take log10 (values <= 0 are placed at ``lo``)."""

    lo: float
    hi: float
    p0: float
    p1: float
    log: bool = False

    def __post_init__(self) -> None:
        if self.log:
            self.lo, self.hi = max(self.lo, 1e-300), max(self.hi, 1e-300)
        if self.hi == self.lo:
            pad = abs(self.lo) * 0.05 or 1.0
            if self.log:
                self.lo, self.hi = self.lo / 10, self.hi * 10
            else:
                self.lo, self.hi = self.lo - pad, self.hi + pad

    def __call__(self, v: float) -> float:
        if self.log:
            lo, hi = math.log10(self.lo), math.log10(self.hi)
            t = (math.log10(max(v, self.lo)) - lo) / (hi - lo)
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + t * (self.p1 - self.p0)

    def ticks(self, n: int = 5) -> list[float]:
        return log_ticks(self.lo, self.hi) if self.log else nice_ticks(self.lo, self.hi, n)


def _nice(x: float) -> float:
    e = math.floor(math.log10(x))
    f = x / 10 ** e
    return (1 if f < 1.5 else 2 if f < 3 else 5 if f < 7 else 10) * 10 ** e


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (about ``n`` of them)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    step = _nice((hi - lo) / max(n, 1))
    start = math.ceil(lo / step - 1e-9)
    out = []
    k = start
    while k * step <= hi + step * 1e-9:
        out.append(round(k * step, 12))
        k += 1
    return out


def nice_range(lo: float, hi: float, n: int = 5) -> tuple[float, float]:
    """[lo, hi] widened to round numbers."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice((hi - lo) / max(n, 1))
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step


def log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    decades = [10.0 ** k for k in range(a, b + 1)]
    if len(decades) > 8:  # many decades: every other one
        stride = math.ceil(len(decades) / 7)
        decades = decades[::stride]
    ticks = [d for d in decades if lo * (1 - 1e-9) <= d <= hi * (1 + 1e-9)]
    if len(ticks) < 2:
        ticks = sorted({t for d in decades for t in (d, 2 * d, 5 * d) if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)})
    return ticks


_SUP = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def sci(v: float, digits: int = 3) -> str:
    """Scientific notation as printed in papers: ``8.26×10⁻⁸``, ``10⁻⁷`` for a power of ten."""
    m, e = f"{v:.{max(digits - 1, 0)}e}".split("e")
    power = "10" + str(int(e)).translate(_SUP)
    mant = m.rstrip("0").rstrip(".") if "." in m else m
    if mant in ("1", "-1"):
        return power if mant == "1" else "−" + power
    return f"{mant.replace('-', '−')}×{power}"


def fmt_tick(v: float) -> str:
    """Tick label: short, exact enough to read, the same text for the same value."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return sci(v, 1)
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.4g}"


# --- pieces ---------------------------------------------------------------------------------------
def marker(shape: str, x: float, y: float, colour: str, size: float = 4.0, hollow: bool = False) -> Safe:
    fill = "#fff" if hollow else colour
    common = {"fill": fill, "stroke": colour if hollow else "#fff", "stroke-width": 1.3 if hollow else 0.8}
    s = size
    if shape == "circle":
        return el("circle", {"cx": num(x), "cy": num(y), "r": num(s), **common})
    if shape == "square":
        return el("rect", {"x": num(x - s * 0.9), "y": num(y - s * 0.9), "width": num(s * 1.8),
                           "height": num(s * 1.8), **common})
    pts = {
        "triangle": [(x, y - s * 1.15), (x + s * 1.05, y + s * 0.85), (x - s * 1.05, y + s * 0.85)],
        "down": [(x, y + s * 1.15), (x + s * 1.05, y - s * 0.85), (x - s * 1.05, y - s * 0.85)],
        "diamond": [(x, y - s * 1.25), (x + s * 1.05, y), (x, y + s * 1.25), (x - s * 1.05, y)],
    }.get(shape)
    if pts is not None:
        return el("polygon", {"points": " ".join(f"{num(a)},{num(b)}" for a, b in pts), **common})
    # cross
    d = f"M{num(x - s)} {num(y - s)}L{num(x + s)} {num(y + s)}M{num(x - s)} {num(y + s)}L{num(x + s)} {num(y - s)}"
    return el("path", {"d": d, "stroke": colour, "stroke-width": 2, "fill": "none"})


def svg_text(x: float, y: float, s: str, *, anchor: str = "start", size: int = FONT, cls: str | None = None,
          weight: str | None = None, rotate: bool = False) -> Safe:
    attrs = {"x": num(x), "y": num(y), "text-anchor": anchor if anchor != "start" else None,
             "font-size": size if size != FONT else None, "class": cls, "font-weight": weight,
             "transform": f"rotate(-90 {num(x)} {num(y)})" if rotate else None}
    return el("text", attrs, s)


def clip(s: str, width_px: float, size: int = FONT) -> str:
    """``s`` cut to fit about ``width_px`` pixels (an ellipsis shows it was cut)."""
    room = max(3, int(width_px / (size * 0.58)))
    return s if len(s) <= room else s[: room - 1] + "…"


def legend(items: Sequence[tuple[str, int]], x: float, y: float, *, bars: bool = False, max_width: float = 600) -> Safe:
    """One row of ``(label, style index)`` entries: line sample, marker (or bar swatch) and label."""
    out: list[Child] = []
    cx = x
    for label, k in items:
        colour, shape, dash = STYLES[k % len(STYLES)]
        if bars:
            out.append(el("rect", {"x": num(cx), "y": num(y - 8), "width": 16, "height": 11,
                                   "fill": BAR_FILLS[k % len(BAR_FILLS)], "stroke": "#333", "stroke-width": 0.6}))
        else:
            out.append(el("line", {"x1": num(cx), "y1": num(y - 3), "x2": num(cx + 22), "y2": num(y - 3),
                                   "stroke": colour, "stroke-width": 2, "stroke-dasharray": dash or None}))
            out.append(marker(shape, cx + 11, y - 3, colour))
        text = clip(label, max_width / max(len(items), 1) - 40)
        out.append(svg_text(cx + 28, y + 1, text))
        cx += 28 + len(text) * FONT * 0.58 + 18
    return frag(out)


@dataclass
class Chart:
    """One SVG figure: a plot area, its scales, axes, and the marks added to it.

    ``title`` and ``desc`` become the SVG's accessible name and description.
    """

    ident: str
    title: str
    desc: str
    width: int = 640
    height: int = 300
    left: int = 64
    right: int = 16
    top: int = 30
    bottom: int = 46
    marks: list[Safe] = field(default_factory=list)
    x: Scale | None = None
    y: Scale | None = None

    @property
    def plot(self) -> tuple[float, float, float, float]:
        return self.left, self.top, self.width - self.right, self.height - self.bottom

    def scales(self, xlo: float, xhi: float, ylo: float, yhi: float, *, xlog: bool = False,
               ylog: bool = False) -> None:
        x0, y0, x1, y1 = self.plot
        self.x = Scale(xlo, xhi, x0, x1, xlog)
        self.y = Scale(ylo, yhi, y1, y0, ylog)

    def axes(self, xlabel: str, ylabel: str, *, xticks: list[tuple[float, str]] | None = None,
             yticks: list[tuple[float, str]] | None = None, xgrid: bool = False, ygrid: bool = True) -> None:
        """Frame, grid lines, tick labels and axis titles (with units)."""
        assert self.x is not None and self.y is not None
        x0, y0, x1, y1 = self.plot
        out: list[Child] = []
        yt = yticks if yticks is not None else [(v, fmt_tick(v)) for v in self.y.ticks()]
        for v, label in yt:
            py = self.y(v)
            if ygrid:
                out.append(el("line", {"x1": x0, "x2": x1, "y1": num(py), "y2": num(py), "class": "grid"}))
            out.append(el("line", {"x1": x0 - 4, "x2": x0, "y1": num(py), "y2": num(py), "class": "tick"}))
            out.append(svg_text(x0 - 7, py + 4, label, anchor="end", cls="tl"))
        xt = xticks if xticks is not None else [(v, fmt_tick(v)) for v in self.x.ticks()]
        for v, label in xt:
            px = self.x(v)
            if xgrid:
                out.append(el("line", {"x1": num(px), "x2": num(px), "y1": y0, "y2": y1, "class": "grid"}))
            out.append(el("line", {"x1": num(px), "x2": num(px), "y1": y1, "y2": y1 + 4, "class": "tick"}))
            out.append(svg_text(px, y1 + 16, label, anchor="middle", cls="tl"))
        out.append(el("path", {"d": f"M{x0} {y0}V{y1}H{x1}", "class": "axis"}))
        out.append(svg_text((x0 + x1) / 2, self.height - 8, xlabel, anchor="middle", cls="al"))
        out.append(svg_text(15, (y0 + y1) / 2, ylabel, anchor="middle", cls="al", rotate=True))
        self.marks.insert(0, frag(out))

    def add(self, *marks: Child) -> None:
        self.marks.append(frag(*marks))

    def render(self) -> Safe:
        t, d = f"{self.ident}-title", f"{self.ident}-desc"
        return el("svg", {"class": "chart", "id": self.ident, "viewBox": f"0 0 {self.width} {self.height}",
                          "width": self.width, "height": self.height, "role": "img",
                          "aria-labelledby": f"{t} {d}", "xmlns": "http://www.w3.org/2000/svg"},
                  el("title", {"id": t}, self.title), el("desc", {"id": d}, self.desc), *self.marks)


def polyline(points: Sequence[tuple[float, float]], colour: str, dash: str = "", width: float = 2.0) -> Safe:
    if not points:
        return Safe("")
    d = "M" + "L".join(f"{num(x)} {num(y)}" for x, y in points)
    return el("path", {"d": d, "fill": "none", "stroke": colour, "stroke-width": width,
                       "stroke-dasharray": dash or None, "stroke-linejoin": "round"})


def band(upper: Sequence[tuple[float, float]], lower: Sequence[tuple[float, float]], colour: str,
         dash: str = "") -> Safe:
    """A confidence band: light fill plus thin dashed edges (the edges carry it in grey scale)."""
    if not upper:
        return Safe("")
    pts = list(upper) + list(reversed(lower))
    d = "M" + "L".join(f"{num(x)} {num(y)}" for x, y in pts) + "Z"
    return frag(el("path", {"d": d, "fill": colour, "fill-opacity": 0.16, "stroke": "none"}),
                polyline(upper, colour, dash or "3 3", 0.8), polyline(lower, colour, dash or "3 3", 0.8))
