"""Provider fallback over real sockets: the SDK, two simulators, scripted upstreams, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer

from sidecar.accounting.catalogue import Catalogue
from sidecar.admission.breaker import State
from sidecar.admission.fallback import Fallback, parse_fallbacks
from sidecar.console.snapshot import Scrape, compute, parse
from sidecar.console.view import render_text
from sidecar.relay.failover import rewrite_model
from sidecar.settings import SettingsError, load
from sidecar.simulator import build_app
from sidecar.simulator.testing import fast_scenario
from tests.conftest import RunningSidecar, SidecarFactory, closed_port
from tests.fake_upstream import ABORT, FakeUpstream, Gate, Reply, json_reply, sse

MESSAGES: Any = [{"role": "user", "content": "hi"}]
BACKUP_KEY = "sk-backup-1234"
CLIENT_KEY = "sk-client-5678"
BACKUP_MODELS = ("backup-small", "backup-large")
FAILURE_REPLY = {
    "503": lambda: json_reply(b'{"error":{"message":"Server Overloaded"}}', 503),
    "429": lambda: json_reply(b'{"error":{"message":"Too many requests"}}', 429),
    "500": lambda: json_reply(b'{"error":{"message":"Server Error"}}', 500),
}


def fallbacks(url: str, **table: Any) -> tuple[Fallback, ...]:
    """One fallback named ``backup`` as the TOML file would declare it."""
    base = {
        "name": "backup",
        "upstream": url,
        "api_key_env": "BACKUP_API_KEY",
        "on": ["429", "5xx", "connect", "timeout"],
        "models": {"deepseek-v4-flash": "backup-small", "deepseek-v4-pro": "backup-large"},
    }
    return parse_fallbacks([{**base, **table}], {"BACKUP_API_KEY": BACKUP_KEY})


Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start servers on free ports: a simulator app or a ``FakeUpstream``; all closed after."""
    servers: list[TestServer] = []

    async def start(app: Any) -> str:
        server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


async def simulator(serve: Serve, **changes: Any) -> str:
    return str(await serve(build_app(fast_scenario(**changes), seed=1)))


async def backup_simulator(serve: Serve) -> str:
    """The fallback: an OpenAI-flavour simulator serving only the fallback's model names."""
    url = await simulator(serve, flavour="openai", models=BACKUP_MODELS)
    return url + "/v1"


async def fake(serve: Serve) -> tuple[FakeUpstream, str]:
    upstream = FakeUpstream()
    return upstream, str(await serve(upstream.app()))


def fallbacks_total(car: RunningSidecar, reason: str, to: str = "backup") -> float:
    return car.value("llm_fallbacks_total", **{"from": "deepseek", "to": to, "reason": reason})


def requests(car: RunningSidecar, upstream: str, **labels: str) -> float:
    """``llm_requests_total`` of ``upstream`` summed over the labels not given."""
    total = 0.0
    for metric in car.registry.collect():
        for sample in metric.samples:
            if sample.name != "llm_requests_total":
                continue
            if sample.labels["upstream"] == upstream and all(
                sample.labels[k] == v for k, v in labels.items()
            ):
                total += sample.value
    return total


def attempts(car: RunningSidecar, upstream: str, code: str) -> float:
    return car.value(
        "llm_upstream_attempts_total", upstream=upstream, route="chat_completions", code=code
    )


def circuit(car: RunningSidecar, upstream: str = "deepseek") -> float:
    return car.value("llm_upstream_circuit_state", upstream=upstream)


async def ask_with_sdk(url: str, model: str, stream: bool) -> tuple[str, str, str | None]:
    """(text, model, x-sidecar-upstream) as the official SDK sees them; raises on any error."""
    client = openai.AsyncOpenAI(base_url=url, api_key=CLIENT_KEY, max_retries=0)
    try:
        if stream:
            raw = await client.chat.completions.with_raw_response.create(
                model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            text, reported = "", ""
            async for chunk in raw.parse():
                reported = chunk.model
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
            return text, reported, raw.headers.get("x-sidecar-upstream")
        raw_once = await client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES
        )
        completion = raw_once.parse()
        content = completion.choices[0].message.content or ""
        return content, completion.model, raw_once.headers.get("x-sidecar-upstream")
    finally:
        await client.close()


# -- the SDK sees no error ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("failure", ["503", "429", "refused"])
async def test_sdk_sees_no_error_while_the_primary_fails(
    serve: Serve, start_sidecar: SidecarFactory, failure: str, stream: bool
) -> None:
    if failure == "refused":
        primary, reason, code = f"http://127.0.0.1:{closed_port()}", "connect", "error"
    else:
        primary = await simulator(serve, outage_s=1e9, outage_status=int(failure))
        reason, code = ("429", "429") if failure == "429" else ("5xx", "503")
    car = await start_sidecar(primary, fallback=fallbacks(await backup_simulator(serve)))
    text, model, served_by = await ask_with_sdk(car.url, "deepseek-v4-flash", stream)
    assert text and model == "backup-small" and served_by == "backup"
    assert fallbacks_total(car, reason) == 1
    assert sum(fallbacks_total(car, r) for r in ("429", "5xx", "connect", "timeout")) == 1
    assert requests(car, "deepseek") == 0
    stream_label = "true" if stream else "false"
    assert requests(car, "backup", code="200", model="backup-small", stream=stream_label) == 1
    assert attempts(car, "deepseek", code) == 1 and attempts(car, "backup", "200") == 1
    assert car.value("llm_in_flight_requests", upstream="backup", route="chat_completions") == 0
    assert car.value("llm_in_flight_requests", upstream="deepseek", route="chat_completions") == 0
    assert car.value("llm_tokens_total", upstream="backup", model="backup-small", type="output")
    (line,) = car.exchanges()
    assert line["upstream"] == "backup" and line["fallback_from"] == "deepseek"
    assert line["model"] == "backup-small" and line["code"] == 200
    assert CLIENT_KEY not in car.log.getvalue().decode()
    assert BACKUP_KEY not in car.log.getvalue().decode() + await car.scrape()


async def test_a_timeout_before_any_answer_fails_over(
    serve: Serve, start_sidecar: SidecarFactory
) -> None:
    primary, url = await fake(serve)
    held = asyncio.Event()
    primary.push(Reply(before_headers=Gate(held)))
    car = await start_sidecar(
        url, idle_timeout_s=0.2, fallback=fallbacks(await backup_simulator(serve))
    )
    try:
        _, model, served_by = await ask_with_sdk(car.url, "deepseek-v4-flash", stream=False)
    finally:
        held.set()
    assert model == "backup-small" and served_by == "backup"
    assert fallbacks_total(car, "timeout") == 1


# -- what the fallback receives ----------------------------------------------------------------


async def test_the_fallback_gets_the_mapped_model_and_its_own_key_only(
    serve: Serve, start_sidecar: SidecarFactory
) -> None:
    primary, primary_url = await fake(serve)
    backup, backup_url = await fake(serve)
    primary.push(FAILURE_REPLY["503"]())
    car = await start_sidecar(primary_url, fallback=fallbacks(backup_url + "/v1"))
    body = b'{ "model" : "deepseek-v4-pro",\n  "messages": [{"role": "user", "content": "hi"}],'
    body += b' "temperature": 1.0, "max_tokens": 1e3 }'
    headers = {
        "Authorization": f"Bearer {CLIENT_KEY}",
        "x-api-key": CLIENT_KEY,
        "Cookie": "session=abc",
        "OpenAI-Organization": "org-1",
        "x-request-id": "fb-1",
        "Content-Type": "application/json",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(car.url + "/beta/chat/completions?x=1", data=body, headers=headers) as r,
    ):
        assert r.status == 200 and await r.read() == b'{"ok":true}'
        assert r.headers["x-sidecar-upstream"] == "backup"
        assert "x-sidecar-error" not in r.headers
    (to_primary,) = primary.received
    assert to_primary.body == body and to_primary.headers["Authorization"] == f"Bearer {CLIENT_KEY}"
    (to_backup,) = backup.received
    assert to_backup.path_qs == "/v1/chat/completions?x=1"
    assert to_backup.body == body.replace(b'"deepseek-v4-pro"', b'"backup-large"')
    assert to_backup.headers.getall("Authorization") == [f"Bearer {BACKUP_KEY}"]
    for name in ("x-api-key", "Cookie", "OpenAI-Organization"):
        assert name not in to_backup.headers
    assert to_backup.headers["x-request-id"] == "fb-1"
    assert to_backup.headers["Content-Length"] == str(len(to_backup.body))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"a","n":1}', b'{"model":"b","n":1}'),
        (b'{"model" :\t"a" , "x": 1.50}', b'{"model" :\t"b" , "x": 1.50}'),
        # a nested "model" too: parsed and written again, only the top level changes
        (b'{"metadata": {"model": "a"}, "model": "a"}', b'{"metadata":{"model":"a"},"model":"b"}'),
        (b'{"model":"other"}', None),
        (b"[1, 2]", None),
        (b'{"model": "a", "model": "a"}', b'{"model":"b"}'),
        (b'{"model": "a", "model": "a", broken', None),
    ],
)
def test_rewrite_model(body: bytes, expected: bytes | None) -> None:
    assert rewrite_model(body, "a", "b") == expected


# -- what never fails over ---------------------------------------------------------------------


async def test_no_fallback_after_the_first_byte(
    serve: Serve, start_sidecar: SidecarFactory
) -> None:
    primary, primary_url = await fake(serve)
    backup, backup_url = await fake(serve)
    broken = sse("deepseek-chat-stream.sse")
    broken.steps = [*broken.steps[:3], ABORT]
    primary.push(broken)
    car = await start_sidecar(primary_url, fallback=fallbacks(backup_url))
    body = orjson.dumps({"model": "deepseek-v4-flash", "messages": MESSAGES, "stream": True})
    async with (
        aiohttp.ClientSession() as session,
        session.post(car.url + "/chat/completions", data=body) as r,
    ):
        assert r.status == 200 and "x-sidecar-upstream" not in r.headers
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    assert backup.received == []
    assert fallbacks_total(car, "connect") == 0 and fallbacks_total(car, "5xx") == 0
    (line,) = car.exchanges()
    assert line["outcome"] == "upstream_aborted" and line["fallback_from"] is None


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/chat/completions", "deepseek-reasoner"),  # not in the fallback's models
        ("/anthropic/v1/messages", "deepseek-v4-flash"),  # not an OpenAI-compatible route
        ("/responses", "deepseek-v4-flash"),
    ],
)
async def test_unmapped_models_and_other_routes_never_fail_over(
    serve: Serve, start_sidecar: SidecarFactory, path: str, model: str
) -> None:
    primary, primary_url = await fake(serve)
    backup, backup_url = await fake(serve)
    primary.push(FAILURE_REPLY["503"]())
    car = await start_sidecar(primary_url, fallback=fallbacks(backup_url))
    async with (
        aiohttp.ClientSession() as session,
        session.post(car.url + path, data=orjson.dumps({"model": model})) as r,
    ):
        assert r.status == 503 and "x-sidecar-upstream" not in r.headers
    assert backup.received == []
    assert car.exchanges()[0]["upstream"] == "deepseek"


async def test_only_the_kinds_in_on_fail_over(serve: Serve, start_sidecar: SidecarFactory) -> None:
    primary, primary_url = await fake(serve)
    backup, backup_url = await fake(serve)
    primary.push(FAILURE_REPLY["429"](), FAILURE_REPLY["503"]())
    car = await start_sidecar(primary_url, fallback=fallbacks(backup_url, on=["5xx"]))
    body = orjson.dumps({"model": "deepseek-v4-flash"})
    async with aiohttp.ClientSession() as session:
        for expected in (429, 200):
            async with session.post(car.url + "/chat/completions", data=body) as r:
                assert r.status == expected
    assert len(backup.received) == 1
    assert fallbacks_total(car, "5xx") == 1 and fallbacks_total(car, "429") == 0


async def test_when_the_fallback_fails_too_the_client_gets_the_primarys_answer(
    serve: Serve, start_sidecar: SidecarFactory
) -> None:
    primary, primary_url = await fake(serve)
    backup, backup_url = await fake(serve)
    primary.push(FAILURE_REPLY["503"]())
    backup.push(FAILURE_REPLY["500"]())
    car = await start_sidecar(primary_url, fallback=fallbacks(backup_url))
    async with (
        aiohttp.ClientSession() as session,
        session.post(car.url + "/chat/completions", data=b'{"model":"deepseek-v4-flash"}') as r,
    ):
        assert r.status == 503 and await r.read() == b'{"error":{"message":"Server Overloaded"}}'
        assert "x-sidecar-upstream" not in r.headers
    assert requests(car, "deepseek", code="503") == 1 and requests(car, "backup") == 0
    assert attempts(car, "deepseek", "503") == 1 and attempts(car, "backup", "500") == 1
    assert fallbacks_total(car, "5xx") == 1
    line = car.exchanges()[0]
    assert line["upstream"] == "deepseek" and line["fallback_from"] is None
    assert car.value("llm_in_flight_requests", upstream="backup", route="chat_completions") == 0


# -- the breaker -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_breaker_opens_half_opens_and_closes_on_schedule(
    serve: Serve, start_sidecar: SidecarFactory
) -> None:
    primary, primary_url = await fake(serve)
    backup, backup_url = await fake(serve)
    car = await start_sidecar(
        primary_url, fallback=fallbacks(backup_url), breaker_failures=2, breaker_cooldown_s=30.0
    )
    clock = Clock()
    failover = car.sidecar.proxy._failover
    assert failover is not None
    for breaker in failover.router.breakers.values():
        breaker.clock = clock
    assert circuit(car) == State.CLOSED and circuit(car, "backup") == State.CLOSED
    body = orjson.dumps({"model": "deepseek-v4-flash"})

    async def post(session: aiohttp.ClientSession) -> str:
        async with session.post(car.url + "/chat/completions", data=body) as r:
            assert r.status == 200
            await r.read()
            return r.headers.get("x-sidecar-upstream", "deepseek")

    async with aiohttp.ClientSession() as session:
        primary.push(FAILURE_REPLY["503"](), FAILURE_REPLY["503"]())
        assert [await post(session), await post(session)] == ["backup", "backup"]
        assert circuit(car) == State.OPEN and len(primary.received) == 2
        clock.now = 29.9  # still cooling down: straight to the fallback
        assert await post(session) == "backup" and len(primary.received) == 2
        assert fallbacks_total(car, "breaker_open") == 1
        clock.now = 30.0  # the next request probes the primary; others keep going around it
        gate = asyncio.Event()
        primary.push(Reply(headers={"Content-Type": "application/json"}, before_headers=Gate(gate)))
        probe = asyncio.create_task(post(session))
        while len(primary.received) < 3:
            await asyncio.sleep(0.005)  # until the probe is at the primary (polled, not timed)
        assert circuit(car) == State.HALF_OPEN
        assert await post(session) == "backup"
        assert fallbacks_total(car, "breaker_open") == 2
        gate.set()
        assert await probe == "deepseek"
        assert circuit(car) == State.CLOSED
        assert await post(session) == "deepseek"
    assert len(backup.received) == 4
    assert fallbacks_total(car, "5xx") == 2
    assert requests(car, "backup", code="200") == 4 and requests(car, "deepseek", code="200") == 2
    assert attempts(car, "deepseek", "503") == 2 and attempts(car, "deepseek", "200") == 2


async def test_a_failed_probe_opens_the_breaker_again(
    serve: Serve, start_sidecar: SidecarFactory
) -> None:
    primary, primary_url = await fake(serve)
    _, backup_url = await fake(serve)
    car = await start_sidecar(
        primary_url, fallback=fallbacks(backup_url), breaker_failures=1, breaker_cooldown_s=5.0
    )
    clock = Clock()
    failover = car.sidecar.proxy._failover
    assert failover is not None
    failover.router.breakers["deepseek"].clock = clock
    primary.push(FAILURE_REPLY["503"](), FAILURE_REPLY["429"]())
    body = orjson.dumps({"model": "deepseek-v4-flash"})
    async with aiohttp.ClientSession() as session:
        for now in (0.0, 5.0, 9.0):
            clock.now = now
            async with session.post(car.url + "/chat/completions", data=body) as r:
                assert r.status == 200 and r.headers["x-sidecar-upstream"] == "backup"
    assert circuit(car) == State.OPEN and len(primary.received) == 2
    assert fallbacks_total(car, "5xx") == 1 and fallbacks_total(car, "429") == 1
    assert fallbacks_total(car, "breaker_open") == 1


# -- cost --------------------------------------------------------------------------------------

BACKUP_PRICES = """
[models.backup-small]
[[models.backup-small.prices]]
from = 2020-01-01T00:00:00Z
cache_hit = 0.1
cache_miss = 1.0
output = 2.0
"""


@pytest.mark.parametrize("priced", [True, False])
async def test_cost_uses_the_fallbacks_prices_or_counts_it_unpriced(
    serve: Serve, start_sidecar: SidecarFactory, priced: bool
) -> None:
    primary = await simulator(serve, outage_s=1e9)
    car = await start_sidecar(primary, fallback=fallbacks(await backup_simulator(serve)))
    if priced:
        car.sidecar.catalogue = Catalogue.from_toml(BACKUP_PRICES)
    await ask_with_sdk(car.url, "deepseek-v4-flash", stream=False)
    labels = {"upstream": "backup", "model": "backup-small"}
    output = car.value("llm_tokens_total", type="output", **labels)
    cost = car.value("llm_cost_usd_total", type="output", **labels)
    unpriced = car.value("llm_sidecar_unpriced_requests_total", **labels)
    if priced:
        assert cost == pytest.approx(output * 2.0 / 1e6) and cost > 0 and unpriced == 0
    else:
        assert cost == 0 and unpriced == 1


# -- configuration -----------------------------------------------------------------------------

GOOD = {"name": "b", "upstream": "https://x.example/v1", "api_key_env": "K", "models": {"a": "b"}}


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"fallback": 1}, "fallback: expected [[fallback]] tables"),
        ([{**GOOD, "nmae": "x"}], "fallback[0]: unknown key 'nmae'"),
        ([{**GOOD, "name": "a b"}], "fallback[0].name: invalid value 'a b'"),
        ([{**GOOD, "upstream": "ftp://x"}], "fallback[0].upstream: invalid value 'ftp://x'"),
        ([{**GOOD, "upstream": "https://u:p@x"}], "(no query, fragment or credentials"),
        ([{**GOOD, "api_key_file": "/k"}], "set exactly one of api_key_env, api_key_file"),
        ([{**GOOD, "api_key_env": "UNSET"}], "variable 'UNSET' is unset or empty"),
        ([{**GOOD, "on": ["5xx", "404"]}], "fallback[0].on: invalid value '404'"),
        ([{**GOOD, "on": []}], "fallback[0].on: invalid value []"),
        ([{**GOOD, "models": {}}], "fallback[0].models: expected a table"),
        ([{**GOOD, "models": {"a": 'x"y'}}], "fallback[0].models.a: invalid value"),
        ([GOOD, GOOD], "fallback: name 'b' is used twice"),
    ],
)
def test_bad_fallback_tables(tables: Any, message: str) -> None:
    raw = tables["fallback"] if isinstance(tables, dict) else tables
    with pytest.raises(ValueError) as info:
        parse_fallbacks(raw, {"K": "sk-k"})
    assert message in str(info.value)
    assert "sk-k" not in str(info.value)


def test_settings_read_the_tables_and_never_show_the_key(tmp_path: Any) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    config = tmp_path / "sidecar.toml"
    config.write_text(
        "breaker_failures = 3\nbreaker_cooldown_s = 12.5\n"
        f'[[fallback]]\nname = "backup"\nupstream = "https://api.example.com/v1/"\n'
        f'api_key_file = "{key_file}"\nmodels = {{ "deepseek-v4-flash" = "small" }}\n'
    )
    settings = load({"config": str(config)}, {})
    assert settings.breaker_failures == 3 and settings.breaker_cooldown_s == 12.5
    (fb,) = settings.fallback
    assert fb.api_key == "sk-from-file" and fb.upstream == "https://api.example.com/v1"
    assert fb.on == frozenset({"429", "5xx", "connect", "timeout"})  # the default: all kinds
    shown = orjson.dumps(settings.masked())
    assert b"sk-from-file" not in shown and b'"api_key":"***"' in shown
    assert "sk-from-file" not in repr(settings)
    config.write_text(config.read_text().replace('"backup"', '"deepseek"'))
    with pytest.raises(SettingsError, match="fallback name 'deepseek' is the upstream's own name"):
        load({"config": str(config)}, {})
    config.write_text("breaker_failures = 0\n")
    with pytest.raises(SettingsError, match="breaker_failures: invalid value 0"):
        load({"config": str(config)}, {})


# -- top -----------------------------------------------------------------------------------------

TOP_METRICS = """\
# TYPE llm_requests_total counter
llm_requests_total{upstream="deepseek",route="chat_completions",model="deepseek-flash",\
stream="true",code="503",outcome="completed"} 5
llm_requests_total{upstream="backup",route="chat_completions",model="fallback-small",\
stream="true",code="200",outcome="completed"} 40
# TYPE llm_fallbacks_total counter
llm_fallbacks_total{from="deepseek",to="backup",reason="5xx"} 5
llm_fallbacks_total{from="deepseek",to="backup",reason="breaker_open"} 35
llm_fallbacks_total{from="deepseek",to="backup",reason="connect"} 0
# TYPE llm_upstream_circuit_state gauge
llm_upstream_circuit_state{upstream="deepseek"} 1
llm_upstream_circuit_state{upstream="backup"} 0
"""


def test_top_shows_the_breakers_and_the_fallbacks() -> None:

    view = compute(None, Scrape(0.0, parse(TOP_METRICS)))
    text = render_text(view, "top")
    assert "upstreams  deepseek [OPEN]" in text and "backup [closed]" in text
    assert "fallbacks 40 (5xx 5, breaker_open 35)" in text
    plain = compute(None, Scrape(0.0, parse(TOP_METRICS.split("# TYPE llm_fallbacks")[0])))
    assert plain.upstreams == [] and "upstreams" not in render_text(plain, "top")


async def test_fallbacks_are_tried_in_order(serve: Serve, start_sidecar: SidecarFactory) -> None:
    primary, primary_url = await fake(serve)
    first, first_url = await fake(serve)
    second, second_url = await fake(serve)
    primary.push(FAILURE_REPLY["503"]())
    first.push(FAILURE_REPLY["429"]())
    tables = [
        {"name": name, "upstream": url, "api_key_env": "K", "models": {"deepseek-v4-flash": model}}
        for name, url, model in (("one", first_url, "m1"), ("two", second_url, "m2"))
    ]
    car = await start_sidecar(primary_url, fallback=parse_fallbacks(tables, {"K": "sk-k"}))
    async with (
        aiohttp.ClientSession() as session,
        session.post(car.url + "/chat/completions", data=b'{"model":"deepseek-v4-flash"}') as r,
    ):
        assert r.status == 200 and r.headers["x-sidecar-upstream"] == "two"
    assert first.received[0].body == b'{"model":"m1"}'
    assert second.received[0].body == b'{"model":"m2"}'
    assert car.value("llm_fallbacks_total", **{"from": "deepseek", "to": "one", "reason": "5xx"})
    assert car.value("llm_fallbacks_total", **{"from": "one", "to": "two", "reason": "429"}) == 1
    assert attempts(car, "one", "429") == 1 and attempts(car, "two", "200") == 1
    (line,) = car.exchanges()
    assert line["upstream"] == "two" and line["fallback_from"] == "deepseek"
    assert line["attempts"] == 3
