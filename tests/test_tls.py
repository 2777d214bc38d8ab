"""TLS upstreams for real: trustme certificates, verification on, SNI, pooled reuse, causes."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
import trustme

from sidecar.relay.tls import client_context
from sidecar.settings import SettingsError
from tests.egress_helpers import egress_sidecar, leaf, tls_upstream
from tests.fake_upstream import fixture, json_reply, sse

CHAT = "/v1/chat/completions"
BODY = b'{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}]}'


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_json_and_stream_byte_exact_over_one_pooled_tls_connection(
    ca: trustme.CA, ca_file: str, client: aiohttp.ClientSession
) -> None:
    json_body = fixture("deepseek-chat-nonstream.json")
    async with (
        tls_upstream(leaf(ca, "localhost")) as up,
        egress_sidecar(up.url, upstream_ca_file=ca_file) as sc,
    ):
        up.fake.push(json_reply(json_body), sse("deepseek-chat-stream.sse"), json_reply(json_body))
        for _ in range(3):
            async with client.post(sc.url + CHAT, data=BODY) as response:
                assert response.status == 200
                got = await response.read()
                assert got in (json_body, fixture("deepseek-chat-stream.sse"))
        assert [r.body for r in up.fake.received] == [BODY] * 3
        assert up.handshakes == 1  # three exchanges, one TLS connection reused
        assert up.server_names == ["localhost"]  # SNI sent
        assert len({r.headers["X-Peer-Port"] for r in up.fake.received}) == 1
    assert (
        sc.requests(
            code="200",
            outcome="completed",
            route="chat_completions",
            model="deepseek-chat",
            stream="false",
        )
        >= 1
    )


@pytest.mark.parametrize(
    ("make_cert", "trusted", "cause", "words"),
    [
        (lambda ca: leaf(trustme.CA(), "localhost"), True, "untrusted", "certificate not trusted"),
        (lambda ca: leaf(ca, "localhost", expired=True), True, "expired", "certificate expired"),
        (
            lambda ca: leaf(ca, "other.example"),
            True,
            "wrong_host",
            "certificate is for another host",
        ),
        (lambda ca: leaf(ca, "localhost"), False, "untrusted", "certificate not trusted"),
    ],
    ids=["unknown-ca", "expired", "hostname-mismatch", "private-ca-without-ca-file"],
)
async def test_certificate_failures_are_named_in_envelope_metric_and_log(
    ca: trustme.CA,
    ca_file: str,
    client: aiohttp.ClientSession,
    make_cert: object,
    trusted: bool,
    cause: str,
    words: str,
) -> None:
    cert = make_cert(ca)  # type: ignore[operator]
    ca_setting = ca_file if trusted else None
    async with tls_upstream(cert) as up, egress_sidecar(up.url, upstream_ca_file=ca_setting) as sc:
        async with client.post(sc.url + CHAT, data=BODY) as response:
            assert response.status == 502
            assert response.headers["x-sidecar-error"] == "upstream_tls_error"
            error = (await response.json())["error"]
        assert error["type"] == "upstream_tls_error"
        host = "localhost"
        assert error["message"] == f"TLS with the upstream {host} failed: " + (
            words + (" (unknown issuer; see --upstream-ca-file)" if cause == "untrusted" else "")
        )
        assert up.fake.received == []  # nothing reached the upstream's HTTP layer
        [line] = sc.exchanges()
        assert (line["code"], line["error_type"], line["outcome"]) == (
            502,
            "upstream_tls_error",
            "upstream_unreachable",
        )
        [warning] = [x for x in sc.log_lines() if x.get("event") == "upstream_tls_error"]
        assert (warning["host"], warning["cause"]) == (host, cause)
        assert (
            sc.requests(
                route="chat_completions",
                model="deepseek-chat",
                stream="false",
                code="502",
                outcome="upstream_unreachable",
            )
            == 1
        )
        assert sc.attempts("error") == 1  # never retried: a certificate does not fix itself


async def test_ip_literal_upstream_is_checked_against_the_certificate_addresses(
    ca: trustme.CA, ca_file: str, client: aiohttp.ClientSession
) -> None:
    async with (
        tls_upstream(leaf(ca, "localhost"), host="127.0.0.1") as up,
        egress_sidecar(up.url, upstream_ca_file=ca_file) as sc,
        client.post(sc.url + CHAT, data=BODY) as response,
    ):
        assert response.status == 502
        assert "certificate is for another host" in (await response.json())["error"]["message"]
    async with (
        tls_upstream(leaf(ca, "127.0.0.1"), host="127.0.0.1") as up,
        egress_sidecar(up.url, upstream_ca_file=ca_file) as sc,
        client.post(sc.url + CHAT, data=BODY) as response,
    ):
        assert response.status == 200
        assert up.server_names == [None]  # no SNI for an IP address (RFC 6066)


async def test_plain_http_on_a_tls_upstream_url_is_a_handshake_failure(
    client: aiohttp.ClientSession, fake_upstream: tuple[object, str]
) -> None:
    _, http_url = fake_upstream
    async with egress_sidecar(http_url.replace("http://", "https://")) as sc:
        async with client.post(sc.url + CHAT, data=BODY) as response:
            assert response.status == 502
            error = (await response.json())["error"]
        assert error["type"] == "upstream_tls_error"
        assert error["message"].startswith("TLS with the upstream 127.0.0.1 failed: TLS handshake")


def test_ca_file_adds_to_the_system_store(ca_file: str) -> None:
    system = client_context(None).cert_store_stats()["x509_ca"]
    both = client_context(ca_file).cert_store_stats()["x509_ca"]
    assert both == system + 1
    assert client_context(None).check_hostname
    assert client_context(None).verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("content", "reason"),
    [(None, "No such file or directory"), (b"not a certificate\n", "no PEM certificate in it")],
)
def test_unusable_ca_file_is_a_one_line_settings_error(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        client_context(str(path))
    assert str(caught.value) == f"--upstream-ca-file: cannot use {str(path)!r} ({reason})"


async def _run_cli(env: dict[str, str], upstream: str) -> tuple[int, asyncio.subprocess.Process]:
    """Start ``python -m sidecar run`` with exactly ``env``; return its proxy port and stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "run", "--upstream", upstream,
        "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), 20)
            assert line, "the sidecar exited before its startup line"
            event = orjson.loads(line)
            if event.get("event") == "startup":
                return int(event["proxy_port"]), process
    except BaseException:
        process.kill()
        await process.wait()
        raise


@pytest.mark.parametrize("trusted", [True, False], ids=["SSL_CERT_FILE-trusts", "system-only"])
async def test_the_process_default_store_honours_ssl_cert_file(
    ca: trustme.CA, ca_file: str, client: aiohttp.ClientSession, tmp_path: Path, trusted: bool
) -> None:
    """No ``--upstream-ca-file``: OpenSSL's default store, which ``SSL_CERT_FILE`` replaces."""
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(Path(__file__).parent.parent)}
    if trusted:
        env["SSL_CERT_FILE"] = ca_file
    async with tls_upstream(leaf(ca, "localhost")) as up:
        port, process = await _run_cli(env, up.url)
        try:
            async with client.post(f"http://127.0.0.1:{port}{CHAT}", data=BODY) as response:
                assert response.status == (200 if trusted else 502)
        finally:
            process.terminate()
            assert await process.wait() == 0
