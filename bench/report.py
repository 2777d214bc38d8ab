"""The bench's Markdown table: direct | sidecar | nginx, ratios, targets."""

from __future__ import annotations

from typing import Any

# Targets for the sidecar on the 2-core reference machine.
CPU_JSON_US = 100.0
CPU_STREAM_US = 400.0
ADDED_TTFB_MS = 0.5
PEAK_RSS_MIB = 80.0


def _get(res: dict[str, Any], *path: str) -> Any:
    cur: Any = res
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b <= 0 or a < 0 else f"{a / b:.2f}x"


def _added(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def _met(value: float | None, limit: float) -> str:
    if value is None:
        return "—"
    return "yes" if value <= limit else f"**no** ({value / limit:.1f}x target)"


def table(result: dict[str, Any]) -> tuple[str, bool]:
    """Markdown table and whether any response was wrong (mismatch or error)."""
    t = result["targets"]
    d, s, n = t.get("direct", {}), t.get("sidecar", {}), t.get("nginx", {})
    rows: list[list[str]] = []

    for phase, label, limit in (
        ("json", "CPU µs per relayed JSON response", CPU_JSON_US),
        ("sse", "CPU µs per relayed 100-chunk SSE stream", CPU_STREAM_US),
    ):
        sv, nv = _get(s, phase, "cpu_us_per"), _get(n, phase, "cpu_us_per")
        lat = _get(d, phase, "latency_ms", "p50")
        rows.append(
            [
                label,
                f"(client p50 {_fmt(lat, 2)} ms)",
                _fmt(sv),
                _fmt(nv),
                _ratio(sv, nv),
                f"≤ {limit:g}",
                _met(sv, limit),
            ]
        )
    for phase, label in (("json", "JSON req/s at c=16 (client)"), ("sse", "streams/s at c=16")):
        vals = [_get(x, phase, "rps") for x in (d, s, n)]
        rows.append([label, *(_fmt(v, 0) for v in vals), _ratio(vals[1], vals[2]), "—", "—"])

    for pct in ("p50", "p99"):
        base = _get(d, "ttfb", "ttfb_ms", pct)
        sv, nv = _get(s, "ttfb", "ttfb_ms", pct), _get(n, "ttfb", "ttfb_ms", pct)
        added_s = None if sv is None or base is None else sv - base
        added_n = None if nv is None or base is None else nv - base
        cells = [
            _fmt(base, 3),
            f"{_fmt(sv, 3)} ({_added(added_s)})",
            f"{_fmt(nv, 3)} ({_added(added_n)})" if nv is not None else "—",
        ]
        target = f"≤ +{ADDED_TTFB_MS:g} added" if pct == "p50" else "—"
        met = _met(added_s, ADDED_TTFB_MS) if pct == "p50" else "—"
        rows.append([f"TTFB {pct} ms (sequential)", *cells, _ratio(added_s, added_n), target, met])

    streams = result["sizes"]["streams"]
    sv, nv = _get(s, "hold", "vmhwm_kib"), _get(n, "hold", "vmhwm_kib")
    smib = None if sv is None else sv / 1024
    nmib = None if nv is None else nv / 1024
    rows.append(
        [
            f"Peak RSS MiB, {streams} open streams",
            "—",
            _fmt(smib),
            _fmt(nmib),
            _ratio(smib, nmib),
            f"≤ {PEAK_RSS_MIB:g}",
            _met(smib, PEAK_RSS_MIB),
        ]
    )
    si, ni = _get(s, "hold", "idle_rss_kib"), _get(n, "hold", "idle_rss_kib")
    rows.append(
        [
            "Idle RSS MiB before the streams",
            "—",
            _fmt(None if si is None else si / 1024),
            _fmt(None if ni is None else ni / 1024),
            "—",
            "—",
            "—",
        ]
    )

    idle = [_get(x, "idle_cpu_pct") for x in (s, n)]
    rows.append(["Proxy CPU % while idle (1 s)", "—", *(_fmt(v) for v in idle), "—", "—", "—"])

    failed = False
    cells = []
    for res in (d, s, n):
        if not res:
            cells.append("—")
            continue
        ok = sum(r.get("ok", 0) for r in res.values() if isinstance(r, dict) and "ok" in r)
        total = sum(r.get("n", 0) for r in res.values() if isinstance(r, dict) and "n" in r)
        bad = total - ok
        failed = failed or bad > 0
        cells.append(f"{ok}/{total}" + (f" (**{bad} bad**)" if bad else ""))
    rows.append(["Complete, byte-identical responses", *cells, "—", "all", "—"])

    head = ["metric", "direct", "sidecar", "nginx", "sidecar/nginx", "target", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    ref = t.get("aiohttp-relay")
    if ref:
        lines += ["", *reference_table(d, s, ref)]
    for note in result.get("notes", []):
        lines.append(f"\nNote: {note}")
    m = result["machine"]
    lines.append(
        f"\n{m['date']}, {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Python {m['python']}, sidecar at {m['sidecar_commit']} "
        f"(sidecar/ {m['sidecar_tree']}), bench wall time {result['wall_s']} s"
    )
    return "\n".join(lines), failed


def reference_table(d: dict[str, Any], s: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Sidecar vs the bare aiohttp relay: the floor aiohttp sets, and what the sidecar adds."""

    def mib(x: dict[str, Any], key: str) -> float | None:
        v = _get(x, "hold", key)
        return None if v is None else v / 1024

    def added_ttfb(x: dict[str, Any]) -> float | None:
        v, base = _get(x, "ttfb", "ttfb_ms", "p50"), _get(d, "ttfb", "ttfb_ms", "p50")
        return None if v is None or base is None else v - base

    def cpu(x: dict[str, Any], phase: str) -> float | None:
        return _get(x, phase, "cpu_us_per")

    pairs: list[tuple[str, float | None, float | None, int]] = [
        ("CPU µs per JSON response", cpu(ref, "json"), cpu(s, "json"), 0),
        ("CPU µs per 100-chunk stream", cpu(ref, "sse"), cpu(s, "sse"), 0),
        ("added TTFB p50 ms", added_ttfb(ref), added_ttfb(s), 3),
        ("peak RSS MiB, open streams", mib(ref, "vmhwm_kib"), mib(s, "vmhwm_kib"), 1),
        ("idle RSS MiB", mib(ref, "idle_rss_kib"), mib(s, "idle_rss_kib"), 1),
    ]
    out = [
        "Reference: the smallest aiohttp relay (bench/bare_relay.py, not the product)",
        "",
        "| metric | bare aiohttp relay | sidecar | sidecar's own share |",
        "|---|---|---|---|",
    ]
    for label, r, v, digits in pairs:
        share = "—" if r is None or v is None or not v else f"{100 * (v - r) / v:.0f}%"
        out.append(f"| {label} | {_fmt(r, digits)} | {_fmt(v, digits)} | {share} |")
    return out
