"""Realtime (WebSocket) sessions over real sockets: bytes untouched, ends relayed as they came."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from openai import AsyncOpenAI

from tests.conftest import RunningSidecar, SidecarFactory
from tests.fake_realtime import RESPONSE, SESSION_CREATED, FakeRealtime
from tests.fake_upstream import FakeUpstream
from tests.ws_frames import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Deflater,
    accept_for,
    close_payload,
    frame,
)

Realtime = tuple[FakeRealtime, str]
MASK = b"\x37\xfa\x21\x3d"
SESSION = {"upstream": "deepseek", "route": "realtime"}


@pytest.fixture
def realtime(realtime_upstream: Realtime) -> Realtime:
    return realtime_upstream


@pytest.fixture
async def sidecar_rt(realtime: Realtime, start_sidecar: SidecarFactory) -> RunningSidecar:
    result: RunningSidecar = await start_sidecar(realtime[1])
    return result


def ws_url(sidecar: RunningSidecar, path: str = "/v1/realtime?model=gpt-realtime") -> str:
    return sidecar.url + path


async def exchange_line(sidecar: RunningSidecar) -> dict[str, object]:
    for _ in range(200):
        if sidecar.exchanges():
            return sidecar.exchanges()[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no exchange line")


class RawUpstream:
    """Answers one handshake with a 101, then sends ``script`` and records every byte."""

    def __init__(self, script: bytes, expect: int, extensions: str | None) -> None:
        self.script, self.expect, self.extensions = script, expect, extensions
        self.head = b""
        self.received = b""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in self.head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept_for(key)}\r\n".encode()
            + b"Sec-WebSocket-Protocol: realtime\r\n"
            + (
                f"Sec-WebSocket-Extensions: {self.extensions}\r\n" if self.extensions else ""
            ).encode()
            + b"\r\n"
        )
        self.received = await reader.readexactly(self.expect)
        writer.write(self.script)
        await writer.drain()
        writer.close()  # after its close frame: the server closes TCP first (RFC 6455 §7.1.1)


@pytest.mark.parametrize("deflate", [False, True])
async def test_frames_cross_byte_for_byte_both_ways(
    deflate: bool, start_sidecar: SidecarFactory
) -> None:
    """Masks, fragments, control frames, compression: the wire is the same on both sides."""
    big = os.urandom(200_000)
    to_server, to_client = Deflater(), Deflater()

    def text(data: bytes, deflater: Deflater, mask: bytes | None = None) -> bytes:
        if not deflate:
            return frame(TEXT, data, mask=mask)
        return frame(TEXT, deflater.message(data), mask=mask, rsv1=True)

    client_frames = (
        text(b'{"type":"response.create"}', to_server, MASK)
        + frame(BINARY, big, mask=MASK)
        + frame(TEXT, b'{"type":"conv', fin=False, mask=MASK)
        + frame(PING, b"p", mask=MASK)
        + frame(0, b'ersation.item.create"}', mask=MASK)
        + frame(CLOSE, close_payload(4001, b"bye"), mask=MASK)
    )
    server_frames = (
        text(SESSION_CREATED.encode(), to_client)
        + frame(BINARY, big[::-1])
        + b"".join(text(event.encode(), to_client) for event in RESPONSE)
        + frame(PONG, b"p")
        + frame(CLOSE, close_payload(4001, b"bye"))
    )
    extensions = "permessage-deflate; client_max_window_bits=15" if deflate else None
    upstream = RawUpstream(server_frames, len(client_frames), extensions)
    server = await asyncio.start_server(upstream.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sidecar = await start_sidecar(f"http://127.0.0.1:{port}/prefix")
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.url.rsplit(":", 1)[1])
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        b"GET /v1/realtime?model=gpt-realtime HTTP/1.1\r\nHost: app\r\n"
        b"Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n"
        + f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n".encode()
        + b"Sec-WebSocket-Protocol: realtime\r\nAuthorization: Bearer sk-test\r\n\r\n"
        + client_frames[:100]  # sent before the 101: held by the sidecar, then relayed
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode().lower()
    assert head.startswith("http/1.1 101 switching protocols\r\n")
    assert f"sec-websocket-accept: {accept_for(key)}".lower() in head
    assert "sec-websocket-protocol: realtime" in head and "x-request-id: " in head
    assert "upgrade: websocket" in head and "connection: upgrade" in head
    writer.write(client_frames[100:])
    assert await asyncio.wait_for(reader.read(), 10) == server_frames  # then EOF
    writer.close()
    server.close()
    assert upstream.received == client_frames
    sent = upstream.head.decode().lower()
    assert sent.startswith("get /prefix/v1/realtime?model=gpt-realtime http/1.1\r\n")
    assert f"host: 127.0.0.1:{port}\r\n" in sent and "upgrade: websocket\r\n" in sent
    assert "connection: upgrade\r\n" in sent and f"sec-websocket-key: {key}".lower() in sent
    assert "authorization: bearer sk-test" in sent
    line = await exchange_line(sidecar)
    assert (line["code"], line["outcome"], line["route"]) == (101, "completed", "realtime")
    assert line["parse_error"] is None and line["ttft_s"] is not None
    assert (line["input_tokens"], line["cache_hit_tokens"], line["model"]) == (
        100,
        64,
        "gpt-realtime",
    )


async def test_aiohttp_client_text_binary_and_close_codes(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    fake, _ = realtime
    blob = os.urandom(200_000)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(sidecar_rt), compress=0, protocols=("realtime",)) as ws,
    ):
        assert ws.protocol == "realtime"
        assert await ws.receive_str() == SESSION_CREATED
        await ws.send_str('{"type":"x","text":"héllo"}')
        assert await ws.receive_str() == '{"type":"x","text":"héllo"}'
        await ws.send_bytes(blob)
        assert await ws.receive_bytes() == blob
        await ws.close(code=4001, message=b"client done")
    await asyncio.wait_for(fake.ended.wait(), 5)
    assert fake.close_codes == [4001]
    assert fake.messages[-1] == (WSMsgType.CLOSE, 4001, "client done")
    line = await exchange_line(sidecar_rt)
    assert line["outcome"] == "completed"


async def test_upstream_close_code_and_reason_reach_the_client(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    async def close_first(ws: web.WebSocketResponse, fake: FakeRealtime) -> None:
        await ws.close(code=4003, message=b"session expired")

    realtime[0].script = close_first
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(sidecar_rt)) as ws:
        message = await ws.receive()
        assert (message.type, message.data, message.extra) == (
            WSMsgType.CLOSE,
            4003,
            "session expired",
        )
    assert (await exchange_line(sidecar_rt))["outcome"] == "completed"


async def test_upstream_abort_is_an_abnormal_closure_at_the_client(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    async def abort(ws: web.WebSocketResponse, fake: FakeRealtime) -> None:
        await ws.send_str(SESSION_CREATED)
        await ws.receive()
        assert ws._req is not None and ws._req.transport is not None
        ws._req.transport.abort()  # RST, no close frame

    realtime[0].script = abort
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(sidecar_rt)) as ws:
        assert await ws.receive_str() == SESSION_CREATED
        await ws.send_str('{"type":"response.create"}')
        message = await ws.receive()
        assert message.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
        assert ws.close_code == 1006  # never a clean close the upstream did not send
    line = await exchange_line(sidecar_rt)
    assert line["outcome"] == "upstream_aborted"
    assert (
        sidecar_rt.requests(
            route="realtime",
            model="gpt-realtime",
            stream="true",
            code="101",
            outcome="upstream_aborted",
        )
        == 1
    )


async def test_a_client_that_vanishes_closes_the_upstream_at_once(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    fake, _ = realtime
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url(sidecar_rt))
        assert await ws.receive_str() == SESSION_CREATED
        assert sidecar_rt.value("llm_in_flight_requests", **SESSION) == 1
        connection = ws._response.connection
        assert connection is not None and connection.transport is not None
        connection.transport.abort()  # gone without a close frame
        await asyncio.wait_for(fake.ended.wait(), 2)
        await ws.close()
    assert fake.close_codes[0] in (None, 1006)  # ended without a close frame
    assert all(message[0] != WSMsgType.CLOSE for message in fake.messages)
    line = await exchange_line(sidecar_rt)
    assert line["outcome"] == "client_disconnected"
    assert sidecar_rt.value("llm_in_flight_requests", **SESSION) == 0


async def test_sdk_realtime_client_usage_summed_over_the_session(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    client = AsyncOpenAI(base_url=sidecar_rt.url + "/v1", api_key="sk-test", max_retries=0)
    types: list[str] = []
    async with client.realtime.connect(model="gpt-realtime") as connection:
        for _ in range(2):
            await connection.response.create()
            async for server_event in connection:
                types.append(server_event.type)
                if server_event.type == "response.done":
                    break
    await client.close()
    assert types[0] == "session.created" and types.count("response.done") == 2
    assert realtime[0].headers[0]["Authorization"] == "Bearer sk-test"
    await exchange_line(sidecar_rt)
    labels = {"upstream": "deepseek", "model": "gpt-realtime"}
    for kind, value in (("input", 200), ("output", 60), ("cache_hit", 128), ("cache_miss", 72)):
        assert sidecar_rt.value("llm_tokens_total", type=kind, **labels) == value, kind
    ttft = sidecar_rt.value("llm_time_to_first_token_seconds_count", route="realtime", **labels)
    assert ttft == 1
    assert (
        sidecar_rt.requests(
            route="realtime", model="gpt-realtime", stream="true", code="101", outcome="completed"
        )
        == 1
    )


async def test_silence_in_both_directions_ends_the_session(
    realtime: Realtime, start_sidecar: SidecarFactory
) -> None:
    sidecar = await start_sidecar(realtime[1], idle_timeout_s=0.4)
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(sidecar)) as ws:
        assert await ws.receive_str() == SESSION_CREATED
        for _ in range(4):  # client-side activity alone keeps the session open
            await asyncio.sleep(0.2)
            await ws.send_str('{"type":"ping-ish"}')
            assert await ws.receive_str() == '{"type":"ping-ish"}'
        message = await asyncio.wait_for(ws.receive(), 3)
        assert message.type in (WSMsgType.CLOSED, WSMsgType.ERROR)
        assert ws.close_code == 1006
    line = await exchange_line(sidecar)
    assert line["outcome"] == "upstream_timeout"
    assert 1.0 < float(str(line["duration_s"])) < 2.5


async def test_permessage_deflate_relayed_untouched_and_observed(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    fake, _ = realtime
    fake.compress = True
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(sidecar_rt), compress=15) as ws,
    ):
        assert "permessage-deflate" in ws._response.headers["Sec-WebSocket-Extensions"]
        assert await ws.receive_str() == SESSION_CREATED
        for _ in range(3):  # context takeover: later messages refer to earlier ones
            await ws.send_str('{"type":"response.create","event_id":"e"}')
            for text in RESPONSE:
                assert await ws.receive_str() == text
        await ws.send_str("x" * 100_000)
        assert await ws.receive_str() == "x" * 100_000
    line = await exchange_line(sidecar_rt)
    assert (line["input_tokens"], line["output_tokens"]) == (300, 90)
    assert line["parse_error"] is None and line["ttft_s"] is not None


async def test_a_refused_handshake_is_relayed_as_a_response(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    realtime[0].reject = web.json_response({"error": {"message": "bad key"}}, status=401)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(sidecar_rt))
        assert refused.value.status == 401
    line = await exchange_line(sidecar_rt)
    assert (line["code"], line["outcome"], line["stream"]) == (401, "completed", False)


async def test_other_upgrades_are_never_switched_to(
    fake_upstream: tuple[FakeUpstream, str], sidecar: RunningSidecar
) -> None:
    fake, _ = fake_upstream
    headers = {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AA"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(sidecar.url + "/v1/models", headers=headers) as response,
    ):
        assert response.status == 200
        assert await response.read() == b'{"ok":true}'
    received = fake.received[0].headers
    for name in ("Upgrade", "HTTP2-Settings"):
        assert name not in received
    assert "upgrade" not in received.get("Connection", "").lower()


async def test_a_client_that_does_not_read_holds_the_upstream_back(
    realtime: Realtime, sidecar_rt: RunningSidecar
) -> None:
    fake, _ = realtime
    sent: list[int] = []
    chunk = os.urandom(1 << 20)

    async def flood(ws: web.WebSocketResponse, fake: FakeRealtime) -> None:
        for i in range(96):
            await ws.send_bytes(chunk)  # waits while the sidecar stops reading this socket
            sent.append(i)
        await ws.close()

    fake.script = flood
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(sidecar_rt), max_msg_size=0) as ws,
    ):
        await asyncio.sleep(1.0)
        assert len(sent) < 48  # kernel buffers and one write buffer, not the whole flood
        for _ in range(96):
            assert await ws.receive_bytes() == chunk
        assert (await ws.receive()).type == WSMsgType.CLOSE
    assert len(sent) == 96


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_a_tls_upstream_is_verified_named_and_relayed(
    tmp_path: Path, start_sidecar: SidecarFactory
) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    fake = FakeRealtime()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        sidecar = await start_sidecar(f"https://localhost:{port}")
        upstream_session = sidecar.sidecar.session
        assert upstream_session is not None
        trusting = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=cert))
        sidecar.sidecar.session = aiohttp.ClientSession(
            connector=trusting, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
        await upstream_session.close()
        blob = os.urandom(200_000)
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(sidecar)) as ws:
            assert await ws.receive_str() == SESSION_CREATED
            await ws.send_bytes(blob)
            assert await ws.receive_bytes() == blob
            await ws.send_str('{"type":"response.create"}')
            for text in RESPONSE:
                assert await ws.receive_str() == text
            await ws.close(code=4002, message=b"tls bye")
        await asyncio.wait_for(fake.ended.wait(), 5)
        await sidecar.sidecar.session.close()
    finally:
        await runner.cleanup()
    assert names == ["localhost"] and fake.close_codes == [4002]
    assert fake.headers[0]["Host"] == f"localhost:{port}"
    line = await exchange_line(sidecar)
    assert (line["outcome"], line["output_tokens"]) == ("completed", 30)
