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

    counts = {name: _complete(res) for name, res in t.items() if res}
    failed = any(ok < total for ok, total in counts.values())
    cells = [_complete_cell(counts.get(name)) for name in ("direct", "sidecar", "nginx")]
    rows.append(["Complete, byte-identical responses", *cells, "—", "all", "—"])

    head = ["metric", "direct", "sidecar", "nginx", "sidecar/nginx", "target", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    server = t.get("aiohttp-server")
    if server:
        lines += ["", *ratio_table(result)]
    ref = t.get("aiohttp-relay")
    if ref:
        lines += ["", *reference_table(d, s, ref, t.get("lean-relay"))]
    refs = [f"{REFERENCES[k]} {_complete_cell(counts[k])}" for k in REFERENCES if k in counts]
    if refs:
        lines.append(
            "\nComplete, byte-identical responses through the references: " + ", ".join(refs)
        )
    for note in result.get("notes", []):
        lines.append(f"\nNote: {note}")
    m = result["machine"]
    if result.get("pinning"):
        lines.append(f"\nCPU pinning: {result['pinning']}.")
    lines.append(
        f"\n{m['date']}, {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, "
        f"Python {m['python']}, sidecar at {m['sidecar_commit']} "
        f"(sidecar/ {m['sidecar_tree']}), bench wall time {result['wall_s']} s"
    )
    return "\n".join(lines), failed


REFERENCES = {
    "aiohttp-server": "bare aiohttp server",
    "aiohttp-relay": "aiohttp relay",
    "lean-relay": "lean relay",
}


def _complete(res: dict[str, Any]) -> tuple[int, int]:
    """Complete, byte-identical responses and responses asked for, over a target's phases."""
    phases = [r for r in res.values() if isinstance(r, dict) and "ok" in r and "n" in r]
    return sum(r["ok"] for r in phases), sum(r["n"] for r in phases)


def _complete_cell(count: tuple[int, int] | None) -> str:
    if count is None:
        return "—"
    ok, total = count
    return f"{ok}/{total}" + (f" (**{total - ok} bad**)" if ok < total else "")


def reference_table(
    d: dict[str, Any], s: dict[str, Any], ref: dict[str, Any], lean: dict[str, Any] | None = None
) -> list[str]:
    """Sidecar vs the bare aiohttp relay: the floor aiohttp sets, and what the sidecar adds.

    With the lean relay (the same relay, its upstream leg an httptools protocol instead of
    aiohttp's client) beside it: how much of that floor is the generic client.
    """

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
    lean_values: dict[str, float | None] = {}
    if lean:
        lean_values = {
            "CPU µs per JSON response": cpu(lean, "json"),
            "CPU µs per 100-chunk stream": cpu(lean, "sse"),
            "added TTFB p50 ms": added_ttfb(lean),
            "peak RSS MiB, open streams": mib(lean, "vmhwm_kib"),
            "idle RSS MiB": mib(lean, "idle_rss_kib"),
        }
    out = [
        "Reference: the smallest aiohttp relay (bench/bare_relay.py, not the product)"
        + (" and the lean relay (bench/lean_relay.py, httptools upstream leg)" if lean else ""),
        "",
        "| metric | bare aiohttp relay | sidecar | sidecar's own share |"
        + (" lean relay | lean / aiohttp relay |" if lean else ""),
        "|---|---|---|---|" + ("---|---|" if lean else ""),
    ]
    for label, r, v, digits in pairs:
        share = "—" if r is None or v is None or not v else f"{100 * (v - r) / v:.0f}%"
        row = f"| {label} | {_fmt(r, digits)} | {_fmt(v, digits)} | {share} |"
        if lean:
            lv = lean_values[label]
            row += f" {_fmt(lv, digits)} | {_ratio(lv, r)} |"
        out.append(row)
    return out


# Ratio targets, same run: a relay does a server's work plus a client's, so about twice the bare
# aiohttp server is the floor for Python; nginx is what users would otherwise put in the pod.
RATIO_TARGETS = {
    "json_vs_server": 2.0,
    "sse_vs_server": 2.5,
    "sse_vs_nginx": 3.0,
    "ttfb_vs_nginx": 1.3,  # plus TTFB_SLACK_MS
    "hold_cpu_vs_nginx": 2.0,
}
TTFB_SLACK_MS = 0.1
HOLD_RSS_MB = 50.0


def _verdict(value: float | None, limit: float) -> str:
    if value is None:
        return "—"
    return "yes" if value <= limit else f"**no** ({value / limit:.2f}x the target)"


def ratio_table(result: dict[str, Any]) -> list[str]:
    """Every proxy's figures as ratios to nginx and to the bare aiohttp server, same run.

    One row per proxy and metric: the sidecar, then the two reference relays (aiohttp's client,
    the lean httptools leg), each held to the sidecar's targets.
    """
    t = result["targets"]
    d, n, b = (t.get(k, {}) for k in ("direct", "nginx", "aiohttp-server"))
    proxies = [(label, t[key]) for key, label in PROXIES if t.get(key)]

    def added(x: dict[str, Any], pct: str) -> float | None:
        v, base = _get(x, "ttfb", "ttfb_ms", pct), _get(d, "ttfb", "ttfb_ms", pct)
        return None if v is None or base is None else v - base

    def q(a: float | None, c: float | None) -> float | None:
        return None if a is None or c is None or c <= 0 or a < 0 else a / c

    rows: list[list[str]] = []
    for phase, label, key_b, key_n in (
        ("json", "CPU µs per JSON response", "json_vs_server", None),
        ("sse", "CPU µs per 100-event stream", "sse_vs_server", "sse_vs_nginx"),
    ):
        nv, bv = _get(n, phase, "cpu_us_per"), _get(b, phase, "cpu_us_per")
        for name, x in proxies:
            sv = _get(x, phase, "cpu_us_per")
            targets = [f"≤ {RATIO_TARGETS[key_b]:g}x server"]
            met = [_verdict(q(sv, bv), RATIO_TARGETS[key_b])]
            if key_n:
                targets.append(f"≤ {RATIO_TARGETS[key_n]:g}x nginx")
                met.append(_verdict(q(sv, nv), RATIO_TARGETS[key_n]))
            rows.append([label, name, _fmt(sv), _fmt(nv), _fmt(bv), _ratio(sv, nv),
                         _ratio(sv, bv), ", ".join(targets), ", ".join(met)])  # fmt: skip
    for pct in ("p50", "p99"):
        nv, bv = added(n, pct), added(b, pct)
        limit = None if nv is None else RATIO_TARGETS["ttfb_vs_nginx"] * nv + TTFB_SLACK_MS
        target = f"≤ 1.3x nginx + {TTFB_SLACK_MS:g} ms" if pct == "p50" else "—"
        for name, x in proxies:
            sv = added(x, pct)
            met = _verdict(sv, limit) if pct == "p50" and limit is not None and limit > 0 else "—"
            rows.append([f"added TTFB {pct} ms", name, _added(sv), _added(nv), _added(bv),
                         _ratio(sv, nv), "—", target, met])  # fmt: skip
    streams = result["sizes"]["streams"]
    nmb, bmb = (_mb(_get(x, "hold", "vmhwm_kib")) for x in (n, b))
    for name, x in proxies:
        smb = _mb(_get(x, "hold", "vmhwm_kib"))
        rows.append([f"peak RSS MB, {streams} open streams", name, _fmt(smb), _fmt(nmb),
                     _fmt(bmb), _ratio(smb, nmb), _ratio(smb, bmb), f"≤ {HOLD_RSS_MB:g} MB",
                     _verdict(smb, HOLD_RSS_MB)])  # fmt: skip
    ncpu, bcpu = _get(n, "hold", "cpu_s"), _get(b, "hold", "cpu_s")
    for name, x in proxies:
        scpu = _get(x, "hold", "cpu_s")
        rows.append([f"CPU s carrying {streams} open streams", name, _fmt(scpu, 2),
                     _fmt(ncpu, 2), _fmt(bcpu, 2), _ratio(scpu, ncpu), _ratio(scpu, bcpu),
                     f"≤ {RATIO_TARGETS['hold_cpu_vs_nginx']:g}x nginx",
                     _verdict(q(scpu, ncpu), RATIO_TARGETS["hold_cpu_vs_nginx"])])  # fmt: skip
    head = ["metric", "proxy", "value", "nginx", "bare aiohttp server", "/ nginx", "/ server",
            "target", "met?"]  # fmt: skip
    out = [
        "Ratios in the same run (the bare server answers the upstream's bytes itself, no proxy;"
        " the relays are references, held to the sidecar's targets)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


# The proxies the ratio table reports, in order: the product, then the two reference relays.
PROXIES = (
    ("sidecar", "sidecar"),
    ("aiohttp-relay", "aiohttp relay"),
    ("lean-relay", "lean relay"),
)


def _mb(kib: float | None) -> float | None:
    return None if kib is None else kib * 1024 / 1e6
