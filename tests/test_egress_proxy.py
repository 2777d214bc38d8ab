"""Egress proxies: the choice as curl makes it, and real traffic through tinyproxy."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import trustme
from yarl import URL

from sidecar.relay.proxy_env import NoProxy, ProxyChoice, redacted
from sidecar.settings import SettingsError
from tests.conftest import closed_port
from tests.egress_helpers import egress_sidecar, leaf, tinyproxy, tls_upstream
from tests.fake_upstream import FakeUpstream

CHAT = "/v1/chat/completions"
BODY = b'{"model":"deepseek-chat","messages":[]}'
SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    ("no_proxy", "host", "exempt"),
    [
        ("*", "api.deepseek.com", True),
        ("deepseek.com", "api.deepseek.com", True),
        ("deepseek.com", "deepseek.com", True),
        (".deepseek.com", "api.deepseek.com", True),
        ("*.deepseek.com", "api.deepseek.com", True),
        ("deepseek.com", "notdeepseek.com", False),
        ("DeepSeek.COM", "API.deepseek.com.", True),
        ("example.com, deepseek.com", "api.deepseek.com", True),
        ("example.com deepseek.com", "api.deepseek.com", True),
        ("deepseek.com:443", "api.deepseek.com", True),
        ("10.0.0.0/8", "10.1.2.3", True),
        ("10.0.0.0/8", "11.1.2.3", False),
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1:8080", "127.0.0.1", True),
        ("::1", "::1", True),
        ("[::1]", "::1", True),
        ("fd00::/8", "fd12::1", True),
        ("10.0.0.0/8", "example.com", False),
        ("", "localhost", False),
        ("not/a/network, x", "y", False),
    ],
)
def test_no_proxy_matches_as_curl(no_proxy: str, host: str, exempt: bool) -> None:
    assert NoProxy.parse(no_proxy).exempts(host) is exempt


HTTPS = URL("https://api.deepseek.com/v1")
HTTP = URL("http://llm.internal:8000")


@pytest.mark.parametrize(
    ("explicit", "environ", "https", "http"),
    [
        (None, {}, None, None),
        (None, {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128", None),
        (None, {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"}, "http://low:1", None),
        (None, {"HTTP_PROXY": "http://p:3128"}, None, "http://p:3128"),
        (None, {"ALL_PROXY": "http://all:1", "http_proxy": "http://h:2"}, "http://all:1",
         "http://h:2"),
        (None, {"HTTPS_PROXY": "p:3128"}, "http://p:3128", None),  # curl's default scheme
        (None, {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "deepseek.com"}, None, None),
        (None, {"HTTPS_PROXY": "  "}, None, None),
        ("http://x:9", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "http://x:9", "http://x:9"),
    ],
)  # fmt: skip
def test_proxy_choice(
    explicit: str | None, environ: dict[str, str], https: str | None, http: str | None
) -> None:
    choice = ProxyChoice.from_settings(explicit, environ)
    assert (choice.for_url(HTTPS), choice.for_url(HTTP)) == (
        URL(https) if https else None,
        URL(http) if http else None,
    )


@pytest.mark.parametrize("value", [f"socks5://bob:{SECRET}@p:1080", "http://p:notaport", "http://"])
def test_unusable_proxy_variable_is_a_settings_error_without_the_password(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        ProxyChoice.from_settings(None, {"HTTPS_PROXY": value})
    message = str(caught.value)
    assert message.startswith("HTTPS_PROXY: invalid value ")
    assert SECRET not in message
    assert redacted(f"http://bob:{SECRET}@p:1") == "http://bob:***@p:1"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _connects(log: Path) -> list[str]:
    """Tunnels the proxy opened: its request lines, e.g. ``Request (fd 5): CONNECT h:p``."""
    lines = log.read_text().splitlines()
    return [line for line in lines if "Request (" in line and ": CONNECT " in line]


@pytest.mark.parametrize("via", ["setting", "HTTPS_PROXY"])
async def test_https_through_connect_proxy_with_credentials_never_logged(
    ca: trustme.CA, ca_file: str, tmp_path: Path, client: aiohttp.ClientSession, via: str
) -> None:
    async with (
        tinyproxy(tmp_path, user="bob", password=SECRET) as proxy,
        tls_upstream(leaf(ca, "localhost")) as up,
    ):
        with_creds = f"http://bob:{SECRET}@127.0.0.1:{proxy.port}"
        settings = {"upstream_proxy": with_creds} if via == "setting" else {}
        environ = {"HTTPS_PROXY": with_creds} if via == "HTTPS_PROXY" else {}
        async with egress_sidecar(up.url, environ, upstream_ca_file=ca_file, **settings) as sc:
            for _ in range(2):
                async with client.post(sc.url + CHAT, data=BODY) as response:
                    assert response.status == 200
                    assert await response.read() == b'{"ok":true}'
            log = sc.log.getvalue()
        assert up.handshakes == 1  # the tunnel is pooled like a direct connection
        assert up.server_names == ["localhost"]  # SNI is the upstream's, inside the tunnel
        port = URL(up.url).port
        assert any(f"localhost:{port}" in line for line in _connects(proxy.log))
        assert SECRET.encode() not in log


async def test_plain_http_upstream_through_http_proxy(
    tmp_path: Path, client: aiohttp.ClientSession, fake_upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = fake_upstream
    async with (
        tinyproxy(tmp_path) as proxy,
        egress_sidecar(url, {"http_proxy": proxy.url}) as sc,
        client.post(sc.url + CHAT, data=BODY) as response,
    ):
        assert response.status == 200
        assert [r.body for r in fake.received] == [BODY]
        assert "tinyproxy" in fake.received[0].headers.get("Via", "")  # it did go through


async def test_no_proxy_sends_the_upstream_direct(
    ca: trustme.CA, ca_file: str, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    async with (
        tinyproxy(tmp_path) as proxy,
        tls_upstream(leaf(ca, "localhost")) as up,
        egress_sidecar(
            up.url, {"HTTPS_PROXY": proxy.url, "NO_PROXY": "example.com,localhost"},
            upstream_ca_file=ca_file,
        ) as sc,
        client.post(sc.url + CHAT, data=BODY) as response,
    ):  # fmt: skip
        assert response.status == 200
        assert _connects(proxy.log) == []


async def test_proxy_refusing_the_tunnel_is_upstream_unreachable_naming_it(
    ca: trustme.CA, ca_file: str, tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    async with (
        tinyproxy(tmp_path, connect_ports=(443,)) as proxy,  # our upstream's port is not 443
        tls_upstream(leaf(ca, "localhost")) as up,
    ):
        creds = f"http://bob:{SECRET}@127.0.0.1:{proxy.port}"
        async with (
            egress_sidecar(up.url, upstream_proxy=creds, upstream_ca_file=ca_file) as sc,
            client.post(sc.url + CHAT, data=BODY) as response,
        ):
            assert response.status == 502
            assert response.headers["x-sidecar-error"] == "upstream_unreachable"
            message = (await response.json())["error"]["message"]
            assert message == f"the egress proxy 127.0.0.1:{proxy.port} refused the tunnel (403)"
            assert SECRET.encode() not in sc.log.getvalue()
            assert up.fake.received == []


async def test_proxy_down_is_upstream_unreachable_naming_it(
    client: aiohttp.ClientSession,
) -> None:
    port = closed_port()
    async with (
        egress_sidecar(
            "https://api.deepseek.com", {"HTTPS_PROXY": f"http://bob:{SECRET}@127.0.0.1:{port}"}
        ) as sc,
        client.post(sc.url + CHAT, data=BODY) as response,
    ):
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["type"] == "upstream_unreachable"
        assert error["message"] == (
            f"cannot connect to the upstream through the egress proxy 127.0.0.1:{port}"
        )
        assert SECRET.encode() not in sc.log.getvalue()
