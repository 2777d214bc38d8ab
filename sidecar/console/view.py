"""Render a ``View`` with rich: a header (saturation bar, totals) and one row per model.

The same renderable serves the live display (a TTY) and the plain frames printed when stdout is
a pipe, so what a test reads is exactly what a person sees, minus colour.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from sidecar.console.snapshot import ModelRow, View

DASH = "\u2013"  # en dash: "not known", distinct from a real zero
BAR_WIDTH = 30


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return DASH if value is None else f"{value:{spec}}{suffix}"


def seconds(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value * 1000:.0f}ms" if value < 1.0 else f"{value:.2f}s"


def percent(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.0f}%"


def money(value: float | None) -> str:
    return DASH if value is None else f"${value:.4f}"


def saturation_bar(in_flight: float, limit: float | None) -> Text:
    """A bar of in-flight vs limit: green, yellow above 70 %, red above 90 %."""
    if limit is None or limit <= 0:
        return Text(f"in flight {in_flight:.0f} (limit unknown)")
    share = min(1.0, in_flight / limit)
    filled = round(share * BAR_WIDTH)
    colour = "red" if share > 0.9 else "yellow" if share > 0.7 else "green"
    bar = Text("[")
    bar.append("█" * filled, style=colour)
    bar.append("·" * (BAR_WIDTH - filled))
    bar.append(f"] {in_flight:.0f}/{limit:.0f} ({share * 100:.0f}%)")
    return bar


def header(view: View, title: str, width: int) -> Text:
    """Title, totals and the saturation bar; the totals move to their own lines when narrow."""
    wide = width >= 120
    text = Text(title, style="bold")
    window = DASH if view.window_s is None else f"{view.window_s:.1f}s"
    text.append("   " if wide else "\n")
    text.append(f"window {window}   requests {view.requests:.0f}")
    text.append(f"   429s {view.rate_limited:.0f}", style="red" if view.rate_limited else "")
    text.append("   " if wide else "\n")
    text.append(f"spend {money(view.spend_total)}   cache savings {money(view.savings_total)}")
    text.append("\nconcurrency ")
    text.append_text(saturation_bar(view.in_flight, view.limit))
    text.append("  " if wide else "\n")
    text.append(f"limit source: {view.limit_source}")
    if view.upstreams:
        text.append("\n")
        text.append_text(upstreams_line(view))
    return text


BREAKER: dict[int | None, tuple[str, str]] = {
    0: ("closed", "green"),
    1: ("OPEN", "bold red"),
    2: ("half-open", "yellow"),
}


def upstreams_line(view: View) -> Text:
    """Each upstream's breaker and request rate, then the fallbacks by reason (since start)."""
    text = Text("upstreams")
    for row in view.upstreams:
        label, style = BREAKER.get(row.circuit_state, (DASH, ""))
        text.append(f"  {row.name} ")
        text.append(f"[{label}]", style=style)
        text.append(f" {fmt(row.requests_per_min)} req/min")
    total = sum(view.fallbacks.values())
    text.append(f"\nfallbacks {total:.0f}")
    if view.fallbacks:
        reasons = ", ".join(f"{r} {n:.0f}" for r, n in sorted(view.fallbacks.items()))
        text.append(f" ({reasons})", style="yellow")
    return text


Cell = Callable[[ModelRow], str]
# (heading, cell, the narrowest terminal that still shows the column)
COLUMNS: tuple[tuple[str, Cell, int], ...] = (
    ("model", lambda r: r.model, 0),
    ("req/min", lambda r: fmt(r.requests_per_min), 0),
    ("tok/min", lambda r: fmt(r.tokens_per_min, ".0f"), 96),
    ("429s", lambda r: f"{r.rate_limited:.0f}", 0),
    ("ttft p50", lambda r: seconds(r.ttft_p50), 128),
    ("ttft p95", lambda r: seconds(r.ttft_p95), 0),
    ("queue p50", lambda r: seconds(r.queue_p50), 128),
    ("queue p95", lambda r: seconds(r.queue_p95), 0),
    ("cache hit", lambda r: percent(r.cache_hit_ratio), 0),
    ("spend/h", lambda r: money(r.spend_per_hour), 0),
    ("saved/h", lambda r: money(r.savings_per_hour), 128),
)


def table(view: View, width: int) -> Table:
    """One row per model; less important columns give way on narrow terminals (80 columns)."""
    shown = [(name, cell) for name, cell, narrowest in COLUMNS if width >= narrowest]
    t = Table(
        expand=False,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, (name, _) in enumerate(shown):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in view.rows:
        t.add_row(*(cell(row) for _, cell in shown))
    if not view.rows:
        t.add_row("(no traffic yet)", *[DASH] * (len(shown) - 1))
    return t


class Frame:
    """The whole view, laid out for the width rich gives it (terminal or text buffer)."""

    def __init__(self, view: View, title: str, footer: str = "") -> None:
        self.view, self.title, self.footer = view, title, footer

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        yield header(self.view, self.title, width)
        yield table(self.view, width)
        if self.footer:
            yield Text(self.footer, style="dim")


def render(view: View, title: str, footer: str = "") -> RenderableType:
    return Frame(view, title, footer)


def render_text(view: View, title: str, footer: str = "", width: int = 150) -> str:
    """The same frame as plain text (no colour, no cursor movement) for pipes and logs."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(render(view, title, footer))
    return buffer.getvalue()
