"""Which headers cross the proxy, in each direction (RFC 9110 §7.6.1 hop-by-hop rules).

Hop-by-hop headers and every name listed in ``Connection`` stay on their own hop. Upstream
requests get nothing the client did not send except ``x-request-id``, ``X-Forwarded-For``
and ``X-Forwarded-Proto`` (and, opt-in, an ``Authorization`` the client did not bring).
The one exception: a WebSocket handshake keeps its ``Connection: Upgrade`` and ``Upgrade``.
"""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed by the HTTP layer on each hop: the body length may be re-framed, and the body was
# already read in full, so a client's "Expect: 100-continue" has been answered by this hop.
_REFRAMED = frozenset({"content-length", "host", "expect"})
# Rewritten by the sidecar, or addressed to it (x-sidecar-retry) rather than to the upstream.
_REPLACED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-sidecar-retry"})


def connection_tokens(connection_values: Iterable[str]) -> frozenset[str]:
    """The lower-cased tokens of every ``Connection`` header (a comma-separated list)."""
    return frozenset(
        token.strip().lower()
        for value in connection_values
        for token in value.split(",")
        if token.strip()
    )


def hop_by_hop(connection_values: Iterable[str]) -> frozenset[str]:
    """The fixed hop-by-hop set plus the names a ``Connection`` header lists."""
    return HOP_BY_HOP | connection_tokens(connection_values)


def websocket_upgrade(
    method: str, version: tuple[int, int], incoming: CIMultiDictProxy[str]
) -> bool:
    """A WebSocket handshake (RFC 6455 §4.1): GET, HTTP/1.1, ``Connection: upgrade``, ``Upgrade:
    websocket``.

    The one exception to hop-by-hop stripping (RFC 9110 §7.8): WebSocket is the only protocol
    the sidecar relays frame-transparently. ``h2c`` and every other ``Upgrade`` value are
    dropped as before, so the upstream answers over HTTP/1.1 and the exchange is observed as
    usual. The value must be exactly ``websocket``: that is also when aiohttp's parser holds
    the connection's later bytes back for a protocol switch.
    """
    if method != "GET" or version != (1, 1):
        return False
    if incoming.get("Upgrade", "").strip().lower() != "websocket":
        return False
    return "upgrade" in connection_tokens(incoming.getall("Connection", ()))


def with_upgrade(headers: CIMultiDict[str], incoming: CIMultiDictProxy[str]) -> None:
    """Put the handshake's ``Connection`` and ``Upgrade`` back on an upstream request."""
    headers["Connection"] = "Upgrade"
    headers["Upgrade"] = incoming.get("Upgrade", "websocket")


def upstream_request_headers(
    incoming: CIMultiDictProxy[str],
    *,
    request_id: str,
    peer: str | None,
    scheme: str,
    api_key: str | None,
) -> CIMultiDict[str]:
    """Headers for the upstream request, in the client's order."""
    drop = hop_by_hop(incoming.getall("Connection", ())) | _REFRAMED
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        lower = name.lower()
        if lower not in drop and lower not in _REPLACED:
            out.add(name, value)
    out["x-request-id"] = request_id  # the client's own id when usable: the one we log
    forwarded_for = ", ".join(incoming.getall("X-Forwarded-For", ()))
    if peer:
        forwarded_for = f"{forwarded_for}, {peer}" if forwarded_for else peer
    if forwarded_for:
        out["X-Forwarded-For"] = forwarded_for
    out["X-Forwarded-Proto"] = incoming.get("X-Forwarded-Proto", scheme)
    if api_key and "authorization" not in out and "x-api-key" not in out:
        out["Authorization"] = f"Bearer {api_key}"
    return out


# The client's credentials and account selectors for the primary provider: never sent to a
# fallback, which gets its own key instead.
_PRIMARY_CREDENTIALS = frozenset(
    {"authorization", "x-api-key", "api-key", "cookie", "openai-organization", "openai-project"}
)


def fallback_request_headers(headers: CIMultiDict[str], api_key: str) -> CIMultiDict[str]:
    """The upstream request's headers for a fallback: the client's credentials replaced."""
    out: CIMultiDict[str] = CIMultiDict(
        (name, value) for name, value in headers.items() if name.lower() not in _PRIMARY_CREDENTIALS
    )
    out["Authorization"] = f"Bearer {api_key}"
    return out


def client_response_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    """Upstream response headers minus hop-by-hop ones; ``x-request-id`` always present.

    ``Content-Length`` and ``Content-Encoding`` are kept: the body is relayed byte for byte.
    """
    drop = hop_by_hop(upstream.getall("Connection", ()))
    out: CIMultiDict[str] = CIMultiDict(
        (name, _sendable(value)) for name, value in upstream.items() if name.lower() not in drop
    )
    if "x-request-id" not in out:
        out["x-request-id"] = request_id
    return out


def client_reason(reason: str | None) -> str | None:
    """The upstream's reason phrase as the client gets it (``_sendable``)."""
    return None if reason is None else _sendable(reason)


# What aiohttp's response writer refuses in a status line or a header value ("potential header
# injection"): every C0 control but HTAB, and DEL. Parsers let some through (aiohttp's client
# keeps them in values, llhttp in reason phrases), so each becomes U+FFFD on its way out.
_FORBIDDEN = {c: "\ufffd" for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)}


def _sendable(value: str) -> str:
    """A value aiohttp's writers can send: invalid UTF-8 (kept by the parser as surrogates,
    which the C writer drops and the Python writer fails on) and forbidden controls become
    U+FFFD each; anything else is kept as the upstream sent it."""
    if value.isascii():
        return value if value.isprintable() else value.translate(_FORBIDDEN)
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.translate(_FORBIDDEN)


def switching_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    """The client's ``101``: the upstream's handshake headers (``Sec-WebSocket-Accept``,
    ``-Protocol``, ``-Extensions``) and end-to-end ones, with ``Upgrade`` and ``Connection``."""
    out = client_response_headers(upstream, request_id)
    out["Upgrade"] = upstream.get("Upgrade", "websocket")
    out["Connection"] = "Upgrade"
    return out
