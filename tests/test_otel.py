"""OpenTelemetry export: spans and GenAI metrics reach a real OTLP/HTTP receiver, trace context
crosses the sidecar, and a hanging or dead collector changes nothing but a counter."""

from __future__ import annotations

import asyncio
import io
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from time import monotonic
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client import CollectorRegistry

from sidecar.admission.fallback import parse_fallbacks
from sidecar.app import Sidecar
from sidecar.exchange import Exchange, Outcome, Usage
from sidecar.settings import Settings, SettingsError
from sidecar.telemetry.genai import Server, error_type, span_attributes, span_name
from sidecar.telemetry.logs import build_logger
from sidecar.telemetry.otel_options import OtelOptions
from sidecar.telemetry.specs import DURATION_BUCKETS
from tests.conftest import RunningSidecar, closed_port, running_sidecar
from tests.fake_upstream import FakeUpstream, fixture, json_reply, sse
from tests.otlp_receiver import OtlpReceiver, attributes

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
# Export quickly in tests; a 2 s export timeout bounds how long a hanging collector can hold
# the final flush at shutdown.
FAST = {"OTEL_BSP_SCHEDULE_DELAY": "20", "OTEL_EXPORTER_OTLP_TIMEOUT": "2"}
CHAT = {"model": "deepseek-chat", "stream": True, "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    rec = OtlpReceiver()
    server = TestServer(rec.app(), host="127.0.0.1")
    await server.start_server()
    yield rec, str(server.make_url("")).rstrip("/")
    if rec.hang is not None:
        rec.hang.set()
    await server.close()


@asynccontextmanager
async def otel_sidecar(
    upstream: str, endpoint: str, environ: Mapping[str, str] = FAST, **changes: Any
) -> AsyncIterator[RunningSidecar]:
    """A sidecar exporting to ``endpoint``; leaving the block shuts export down (final flush)."""
    async with running_sidecar(upstream, environ, otlp_endpoint=endpoint, **changes) as sc:
        yield sc


def prom(registry: CollectorRegistry, sample: str, **match: str) -> float:
    """Sum of a sample over every series whose labels include ``match``."""
    return sum(
        s.value
        for metric in registry.collect()
        for s in metric.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in match.items())
    )


def dropped(sc: RunningSidecar, signal: str) -> float:
    return sc.value("llm_sidecar_otel_dropped_total", signal=signal)


async def chat(
    client: aiohttp.ClientSession, sc: RunningSidecar, headers: dict[str, str] | None = None
) -> bytes:
    async with client.post(sc.url + "/v1/chat/completions", json=CHAT, headers=headers) as r:
        return await r.read()


async def test_one_client_span_per_exchange_is_a_child_of_the_clients_trace(
    fake_upstream: tuple[FakeUpstream, str],
    receiver: tuple[OtlpReceiver, str],
    client: aiohttp.ClientSession,
) -> None:
    fake, url = fake_upstream
    rec, endpoint = receiver
    fake.push(sse("deepseek-chat-stream.sse"))
    async with otel_sidecar(url, endpoint) as sc:
        await chat(client, sc, {"traceparent": PARENT, "tracestate": "vendor=opaque,b=2"})
        await rec.wait_spans(1)
        duration = prom(sc.registry, "llm_request_duration_seconds_sum")
        ttft = prom(sc.registry, "llm_time_to_first_token_seconds_sum")
    assert len(rec.spans) == 1  # and no second one at the final flush
    span = rec.spans[0]
    assert (span.trace_id.hex(), span.parent_span_id.hex()) == (TRACE_ID, PARENT_ID)
    sent = fake.received[0].headers
    assert sent.getall("traceparent") == [f"00-{TRACE_ID}-{span.span_id.hex()}-01"]
    assert sent.getall("tracestate") == ["vendor=opaque,b=2"]
    assert span.trace_state == "vendor=opaque,b=2"
    assert span.name == "chat deepseek-chat"
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.status.code == Status.STATUS_CODE_UNSET
    assert (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9 == pytest.approx(
        duration, abs=2e-6
    )
    now_ns = datetime.now(UTC).timestamp() * 1e9
    assert now_ns - 60e9 < span.start_time_unix_nano < span.end_time_unix_nano < now_ns
    attrs = attributes(span.attributes)
    assert attrs.pop("server.port") == int(url.rsplit(":", 1)[1])
    assert attrs.pop("deepseek_sidecar.request_id") == sent["x-request-id"]
    assert attrs.pop("gen_ai.response.time_to_first_chunk") == pytest.approx(ttft, abs=1e-9)
    assert attrs.pop("deepseek_sidecar.upstream.queue_duration") > 0  # two keep-alives first
    assert attrs == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "deepseek",
        "gen_ai.request.model": "deepseek-chat",
        "gen_ai.response.model": "deepseek-chat",
        "gen_ai.response.id": "3c9e41d2-8b7a-4f0e-9d61-2a5b7c0e4f18",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.request.stream": True,
        "gen_ai.usage.input_tokens": 1220,
        "gen_ai.usage.output_tokens": 12,
        "gen_ai.usage.cache_read.input_tokens": 1152,
        "deepseek.usage.prompt_cache_hit_tokens": 1152,
        "deepseek.usage.prompt_cache_miss_tokens": 68,
        "server.address": "127.0.0.1",
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "deepseek_sidecar.upstream": "deepseek",
        "deepseek_sidecar.outcome": "completed",
    }
    assert rec.resources[0]["service.name"] == "deepseek-sidecar"


@pytest.mark.parametrize(
    "incoming",
    [{}, {"traceparent": "00-not-a-trace-01", "tracestate": "a=b"}],
    ids=["no-traceparent", "invalid-traceparent"],
)
async def test_without_a_valid_parent_the_span_is_a_root_and_goes_upstream(
    fake_upstream: tuple[FakeUpstream, str],
    receiver: tuple[OtlpReceiver, str],
    client: aiohttp.ClientSession,
    incoming: dict[str, str],
) -> None:
    fake, url = fake_upstream
    rec, endpoint = receiver
    async with otel_sidecar(url, endpoint) as sc:
        async with client.get(sc.url + "/v1/models", headers=incoming) as r:
            assert r.status == 200
        (span,) = await rec.wait_spans(1)
    assert span.parent_span_id == b""
    sent = fake.received[0].headers
    assert sent.getall("traceparent") == [f"00-{span.trace_id.hex()}-{span.span_id.hex()}-03"]
    assert "tracestate" not in sent  # a tracestate without a valid traceparent is discarded
    assert span.name == "GET"  # not a GenAI operation: an HTTP client span
    assert not any(key.startswith("gen_ai.") for key in attributes(span.attributes))


async def test_without_otel_trace_headers_pass_exactly_as_sent(
    fake_upstream: tuple[FakeUpstream, str],
    sidecar: RunningSidecar,
    client: aiohttp.ClientSession,
) -> None:
    fake, _ = fake_upstream
    await chat(client, sidecar, {"traceparent": PARENT, "tracestate": "vendor=opaque"})
    await chat(client, sidecar)
    assert fake.received[0].headers.getall("traceparent") == [PARENT]
    assert fake.received[0].headers.getall("tracestate") == ["vendor=opaque"]
    assert "traceparent" not in fake.received[1].headers
    assert sidecar.sidecar.otel is None


async def test_an_unsampled_parent_gets_no_span_but_its_metrics(
    fake_upstream: tuple[FakeUpstream, str],
    receiver: tuple[OtlpReceiver, str],
    client: aiohttp.ClientSession,
) -> None:
    fake, url = fake_upstream
    rec, endpoint = receiver
    async with otel_sidecar(url, endpoint) as sc:
        await chat(client, sc, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    forwarded = fake.received[0].headers["traceparent"].split("-")
    assert forwarded[1] == TRACE_ID and forwarded[2] != PARENT_ID and forwarded[3] == "00"
    assert rec.spans == []
    ((attrs, point),) = rec.histogram("gen_ai.client.operation.duration")
    assert point.count == 1 and attrs["gen_ai.request.model"] == "deepseek-chat"


def _cumulative(counts: list[int]) -> list[int]:
    out, total = [], 0
    for count in counts:
        total += count
        out.append(total)
    return out


async def test_genai_metrics_carry_the_prometheus_values(
    fake_upstream: tuple[FakeUpstream, str],
    receiver: tuple[OtlpReceiver, str],
    client: aiohttp.ClientSession,
) -> None:
    fake, url = fake_upstream
    rec, endpoint = receiver
    fake.push(
        sse("deepseek-chat-stream.sse"),
        json_reply(fixture("deepseek-chat-nonstream.json")),
        json_reply(fixture("deepseek-error-429.json"), status=429),
        sse("deepseek-reasoner-stream.sse"),
    )
    async with otel_sidecar(url, endpoint) as sc:
        for _ in range(4):
            await chat(client, sc)
        registry = sc.registry
    durations = rec.histogram("gen_ai.client.operation.duration")
    count = prom(registry, "llm_request_duration_seconds_count")
    assert sum(p.count for _, p in durations) == count == 4
    assert sum(p.sum for _, p in durations) == pytest.approx(
        prom(registry, "llm_request_duration_seconds_sum"), rel=1e-12
    )
    assert list(durations[0][1].explicit_bounds) == list(DURATION_BUCKETS)
    per_bucket = zip(*(p.bucket_counts for _, p in durations), strict=True)
    otel_buckets = _cumulative([sum(counts) for counts in per_bucket])
    prom_buckets = [
        prom(registry, "llm_request_duration_seconds_bucket", le=str(float(b)))
        for b in DURATION_BUCKETS
    ]
    assert otel_buckets[: len(DURATION_BUCKETS)] == prom_buckets
    assert {a.get("error.type") for a, _ in durations} == {None, "429"}
    ttft = rec.histogram("gen_ai.client.operation.time_to_first_chunk")
    assert sum(p.count for _, p in ttft) == prom(registry, "llm_time_to_first_token_seconds_count")
    assert sum(p.sum for _, p in ttft) == pytest.approx(
        prom(registry, "llm_time_to_first_token_seconds_sum"), rel=1e-12
    )
    tokens = rec.histogram("gen_ai.client.token.usage")
    for kind in ("input", "output"):
        points = [p for a, p in tokens if a["gen_ai.token.type"] == kind]
        assert sum(p.sum for p in points) == prom(registry, "llm_request_tokens_sum", type=kind)
        assert sum(p.count for p in points) == prom(registry, "llm_request_tokens_count", type=kind)
    assert dropped(sc, "metrics") == dropped(sc, "spans") == 0


@pytest.mark.parametrize("collector", ["hangs", "down"])
async def test_a_hanging_or_dead_collector_changes_nothing_but_the_drop_counter(
    fake_upstream: tuple[FakeUpstream, str],
    receiver: tuple[OtlpReceiver, str],
    client: aiohttp.ClientSession,
    collector: str,
) -> None:
    fake, url = fake_upstream
    rec, endpoint = receiver
    if collector == "hangs":
        rec.hang = asyncio.Event()  # accepts, reads, never answers (until teardown)
    else:
        endpoint = f"http://127.0.0.1:{closed_port()}"
    exchanges = 12
    replies = [sse("deepseek-chat-stream.sse") for _ in range(exchanges)]
    fake.push(*replies)
    environ = {**FAST, "OTEL_BSP_MAX_QUEUE_SIZE": "4", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2"}
    latencies: list[float] = []
    async with otel_sidecar(url, endpoint, environ) as sc:
        for reply in replies:
            started = monotonic()
            body = await chat(client, sc)
            latencies.append(monotonic() - started)
            assert body == b"".join(s for s in reply.steps if isinstance(s, bytes))
        if collector == "hangs":
            await rec.wait_requests(1)  # the exporter is stuck in an export right now
        # Four spans fit the queue; the rest were dropped on arrival, counted at once.
        assert dropped(sc, "spans") >= exchanges - 4
    # The export timeout is 2 s: a relay that waited for the collector would take that long.
    assert statistics.median(latencies) < 0.25 and max(latencies) < 1.5
    assert dropped(sc, "spans") == exchanges  # every span accounted for, none delivered
    assert dropped(sc, "metrics") > 0
    assert rec.spans == []
    assert not [line for line in sc.log_lines() if line.get("level") in ("error", "warning")]


async def test_an_upstream_failure_is_an_error_span(
    receiver: tuple[OtlpReceiver, str], client: aiohttp.ClientSession
) -> None:
    rec, endpoint = receiver
    async with otel_sidecar(f"http://127.0.0.1:{closed_port()}", endpoint) as sc:
        async with client.post(sc.url + "/chat/completions", json=CHAT) as r:
            assert r.status == 502
        (span,) = await rec.wait_spans(1)
    assert span.status.code == Status.STATUS_CODE_ERROR
    attrs = attributes(span.attributes)
    assert attrs["error.type"] == "upstream_unreachable"
    assert attrs["http.response.status_code"] == 502


def _exchange(**facts: Any) -> Exchange:
    ex = Exchange("rid", "POST", "chat_completions", 10.0, datetime.now(UTC))
    for name, value in facts.items():
        setattr(ex, name, value)
    return ex


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({"status": 200, "outcome": Outcome.COMPLETED}, None),
        ({"status": 429, "outcome": Outcome.COMPLETED}, "429"),
        ({"status": 200, "outcome": Outcome.UPSTREAM_ABORTED}, "upstream_aborted"),
        ({"status": 200, "outcome": Outcome.CLIENT_DISCONNECTED}, "client_disconnected"),
        (
            {"status": 429, "outcome": Outcome.REJECTED, "sidecar_error": "local_rate_limited"},
            "local_rate_limited",
        ),
        ({"status": 504, "sidecar_error": "upstream_timeout"}, "upstream_timeout"),
    ],
)
def test_error_type(facts: dict[str, Any], expected: str | None) -> None:
    assert error_type(_exchange(**facts)) == expected


def test_attributes_facts_the_relay_does_not_see_yet() -> None:
    """Response id, finish reasons and cache writes are exported once an Exchange has them."""
    ex = _exchange(
        requested_model="m",
        response_id="chatcmpl-1",
        finish_reasons=("stop", "length"),
        usage=Usage(input=10, output=2, cache_write=4),
    )
    attrs = span_attributes(ex, Server("api.openai.com", 443, "openai"), "openai")
    assert attrs["gen_ai.response.id"] == "chatcmpl-1"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop", "length")
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 4
    assert not any(key.startswith("deepseek.") for key in attrs)  # DeepSeek's fields only
    assert span_name(_exchange()) == "chat"  # no model requested
    assert span_name(_exchange(route="completions", requested_model="m")) == "text_completion m"


def test_provider_from_the_upstream_domain() -> None:
    assert Server.of("https://api.deepseek.com", "x") == Server("api.deepseek.com", 443, "deepseek")
    assert Server.of("http://10.0.0.1:8000/v1", "vllm") == Server("10.0.0.1", 8000, "vllm")


def test_options_from_the_standard_variables() -> None:
    options = OtelOptions.from_environ(
        "http://collector:4318/",
        {
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://metrics:9000/otlp",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,team=ml%20infra,broken",
            "OTEL_SERVICE_NAME": "chatbot-sidecar",
        },
    )
    assert options.traces_endpoint == "http://collector:4318/v1/traces"
    assert options.metrics_endpoint == "http://metrics:9000/otlp"
    assert options.resource["service.name"] == "chatbot-sidecar"
    assert options.resource["team"] == "ml infra"


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"OTEL_BSP_MAX_QUEUE_SIZE": "lots"},
            "OTEL_BSP_MAX_QUEUE_SIZE: expected a positive integer, got 'lots'",
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "-1"},
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: expected a positive number of seconds, got '-1'",
        ),
    ],
)
def test_bad_otel_variables_are_settings_errors(environ: dict[str, str], message: str) -> None:
    settings = replace(Settings(), otlp_endpoint="http://127.0.0.1:4318")
    with pytest.raises(SettingsError) as caught:
        Sidecar(settings, logger=build_logger("info", "json", io.BytesIO()), environ=environ)
    assert str(caught.value) == message


def test_missing_sdk_is_one_line_and_exit_2() -> None:
    """The default install has no SDK: the run command says what to install, starts nothing."""
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # every opentelemetry import fails
        "from sidecar.cli.run import main\n"
        "sys.exit(main(['--otlp-endpoint', 'http://127.0.0.1:4318', '--listen', '127.0.0.1:0',"
        " '--admin-listen', '127.0.0.1:0']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "deepseek-sidecar: --otlp-endpoint: OpenTelemetry export needs the otel extra "
        "(pip install 'deepseek-sidecar[otel]')"
    ]
    assert done.stdout == ""


async def test_a_fallbacks_span_names_the_fallback_that_answered(
    fake_upstream: tuple[FakeUpstream, str],
    receiver: tuple[OtlpReceiver, str],
    client: aiohttp.ClientSession,
) -> None:
    fake, url = fake_upstream
    rec, endpoint = receiver
    fake.push(json_reply(fixture("openai-chat-nonstream.json")))
    backup = parse_fallbacks(
        [{"name": "backup", "upstream": url + "/v1", "api_key_env": "K", "models": {"m": "b"}}],
        {"K": "backup-key"},
    )
    primary = f"http://127.0.0.1:{closed_port()}"
    async with otel_sidecar(primary, endpoint, fallback=backup) as sc:
        async with client.post(sc.url + "/chat/completions", json={"model": "m"}) as r:
            assert r.status == 200 and r.headers["x-sidecar-upstream"] == "backup"
        await rec.wait_spans(1)
    attrs = attributes(rec.spans[0].attributes)
    assert attrs["deepseek_sidecar.upstream"] == "backup"
    assert attrs["server.port"] == int(url.rsplit(":", 1)[1])
    assert attrs["gen_ai.provider.name"] == "backup"
    assert attrs["gen_ai.request.model"] == "b"  # what the fallback was asked for
