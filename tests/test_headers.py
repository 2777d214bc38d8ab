"""Which headers cross the proxy."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.relay.headers import (
    HOP_BY_HOP,
    client_reason,
    client_response_headers,
    upstream_request_headers,
)


def proxy(**headers: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}))


def test_the_hop_by_hop_set() -> None:
    assert {
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
    } == HOP_BY_HOP


def test_key_injection_only_without_client_credentials() -> None:
    common = {"request_id": "r", "peer": "1.2.3.4", "scheme": "http", "api_key": "sk-inject"}
    bare = upstream_request_headers(proxy(), **common)
    assert bare["Authorization"] == "Bearer sk-inject"
    own = upstream_request_headers(proxy(Authorization="Bearer sk-own"), **common)
    assert own.getall("Authorization") == ["Bearer sk-own"]
    anthropic = upstream_request_headers(proxy(x_api_key="sk-ant"), **common)
    assert "Authorization" not in anthropic and anthropic["x-api-key"] == "sk-ant"
    off = upstream_request_headers(proxy(), **{**common, "api_key": None})
    assert "Authorization" not in off


def test_response_headers_drop_hop_by_hop_and_connection_listed() -> None:
    upstream = proxy(
        Connection="close, X-Private",
        X_Private="1",
        Transfer_Encoding="chunked",
        Content_Encoding="gzip",
        Content_Length="10",
        x_ds_trace_id="t",
    )
    out = client_response_headers(upstream, "rid")
    assert set(out) == {"Content-Encoding", "Content-Length", "x-ds-trace-id", "x-request-id"}
    assert out["x-request-id"] == "rid"
    kept = client_response_headers(proxy(x_request_id="req_upstream"), "rid")
    assert kept.getall("x-request-id") == ["req_upstream"]


def test_values_and_reasons_are_made_sendable_and_otherwise_kept() -> None:
    """aiohttp's client keeps C0 controls and DEL in values (llhttp, in reason phrases); its
    writer refuses them, so each becomes U+FFFD. HTAB, spaces and valid UTF-8 stay."""
    upstream = CIMultiDictProxy(
        CIMultiDict([("X-Ctl", "a\x01b\x7f"), ("X-Tab", "a\tb c"), ("X-Utf8", "café")])
    )
    out = client_response_headers(upstream, "rid")
    assert (out["X-Ctl"], out["X-Tab"], out["X-Utf8"]) == ("a\ufffdb\ufffd", "a\tb c", "café")
    assert client_reason("O\x00K\x1f") == "O\ufffdK\ufffd"
    assert client_reason("Too Many Requests") == "Too Many Requests"
    assert client_reason(None) is None
