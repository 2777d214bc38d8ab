"""Render a ``View`` with rich: a header (saturation bar, totals) and one row per model.

The same renderable serves the live display (a TTY) and the plain frames printed when stdout is
a pipe, so what a test reads is exactly what a person sees, minus colour.
"""

from __future__ import annotations

import io

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from sidecar.console.snapshot import View

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


def header(view: View, title: str) -> Text:
    text = Text(title, style="bold")
    window = DASH if view.window_s is None else f"{view.window_s:.1f}s"
    text.append(f"   window {window}   requests {view.requests:.0f}")
    text.append(f"   429s {view.rate_limited:.0f}", style="red" if view.rate_limited else "")
    text.append(f"   spend {money(view.spend_total)}   cache savings {money(view.savings_total)}")
    text.append("\nconcurrency ")
    text.append_text(saturation_bar(view.in_flight, view.limit))
    text.append(f"  limit source: {view.limit_source}")
    return text


def table(view: View) -> Table:
    t = Table(expand=False, header_style="bold", box=box.SIMPLE_HEAD)
    columns = (
        "model", "req/min", "tok/min", "429s", "ttft p50", "ttft p95",
        "queue p50", "queue p95", "cache hit", "spend/h", "saved/h",
    )  # fmt: skip
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in view.rows:
        t.add_row(
            row.model,
            fmt(row.requests_per_min),
            fmt(row.tokens_per_min, ".0f"),
            f"{row.rate_limited:.0f}",
            seconds(row.ttft_p50),
            seconds(row.ttft_p95),
            seconds(row.queue_p50),
            seconds(row.queue_p95),
            percent(row.cache_hit_ratio),
            money(row.spend_per_hour),
            money(row.savings_per_hour),
        )
    if not view.rows:
        t.add_row("(no traffic yet)", *[DASH] * (len(columns) - 1))
    return t


def render(view: View, title: str, footer: str = "") -> RenderableType:
    parts: list[RenderableType] = [header(view, title), table(view)]
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)


def render_text(view: View, title: str, footer: str = "", width: int = 150) -> str:
    """The same frame as plain text (no colour, no cursor movement) for pipes and logs."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
    console.print(render(view, title, footer))
    return buffer.getvalue()
