"""An exchange as OpenTelemetry GenAI attributes: span name, span attributes, metric attributes.

Pure mapping, no OpenTelemetry import, so it is cheap to test and to read. Names follow the
GenAI semantic conventions v1.41.0, the last release of ``open-telemetry/semantic-conventions``
that carried them (``docs/gen-ai/gen-ai-spans.md`` and ``gen-ai-metrics.md``; later releases
point to the separate, not yet released, ``semantic-conventions-genai``). Facts the
conventions have no name for live under ``deepseek.*`` (DeepSeek's own usage fields) or
``deepseek_sidecar.*`` (the sidecar's own measurements).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sidecar.exchange import Exchange, Outcome

SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

# Routes that are GenAI operations, and their ``gen_ai.operation.name``. The Responses API is
# ``chat`` (the conventions' OpenAI page); every other route is a plain HTTP client span.
OPERATIONS = {
    "chat_completions": "chat",
    "completions": "text_completion",
    "anthropic_messages": "chat",
    "responses": "chat",
    "realtime": "chat",
}
# Well-known ``gen_ai.provider.name`` values, by the upstream's registered domain.
_PROVIDERS = {"deepseek.com": "deepseek", "openai.com": "openai", "anthropic.com": "anthropic"}
MAX_TEXT = 256  # model names and ids come from the request or the upstream: keep spans small

Attributes = dict[str, str | bool | int | float | tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Server:
    """Who the spans say answered: the upstream's host and port, and the provider."""

    address: str
    port: int
    provider: str

    @classmethod
    def of(cls, upstream_url: str, upstream_name: str) -> Server:
        """The provider is known by the upstream's domain, else it is the upstream's name."""
        parts = urlsplit(upstream_url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        domain = ".".join(host.split(".")[-2:])
        return cls(host, port, _PROVIDERS.get(domain, upstream_name))


def error_type(ex: Exchange) -> str | None:
    """``error.type``: the sidecar's error type, else how the exchange broke off, else the
    HTTP status of an upstream error. All bounded; ``None`` for a success."""
    if ex.sidecar_error is not None:
        return ex.sidecar_error
    if ex.outcome not in (None, Outcome.COMPLETED, Outcome.REJECTED):
        return ex.outcome.value
    if ex.status is not None and ex.status >= 400:
        return str(ex.status)
    return None


def span_name(ex: Exchange) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}``; the HTTP method for other routes."""
    operation = OPERATIONS.get(ex.route)
    if operation is None:
        return ex.method
    return f"{operation} {ex.requested_model[:MAX_TEXT]}" if ex.requested_model else operation


def span_attributes(ex: Exchange, server: Server, upstream_name: str) -> Attributes:
    """Every attribute of the exchange's span; unknown facts are left out, never zero."""
    attrs: Attributes = {
        "server.address": server.address,
        "server.port": server.port,
        "http.request.method": ex.method,
        "deepseek_sidecar.request_id": ex.request_id[:MAX_TEXT],
        "deepseek_sidecar.upstream": upstream_name,
    }
    if ex.outcome is not None:
        attrs["deepseek_sidecar.outcome"] = ex.outcome.value
    if ex.status is not None:
        attrs["http.response.status_code"] = ex.status
    error = error_type(ex)
    if error is not None:
        attrs["error.type"] = error
    operation = OPERATIONS.get(ex.route)
    if operation is not None:
        _genai(attrs, ex, operation, server.provider)
    return attrs


def _genai(attrs: Attributes, ex: Exchange, operation: str, provider: str) -> None:
    attrs["gen_ai.operation.name"] = operation
    attrs["gen_ai.provider.name"] = provider
    if ex.requested_model:
        attrs["gen_ai.request.model"] = ex.requested_model[:MAX_TEXT]
    if ex.reported_model:
        attrs["gen_ai.response.model"] = ex.reported_model[:MAX_TEXT]
    if ex.stream:
        attrs["gen_ai.request.stream"] = True
    if ex.response_id:
        attrs["gen_ai.response.id"] = ex.response_id[:MAX_TEXT]
    if ex.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = tuple(r[:MAX_TEXT] for r in ex.finish_reasons)
    if ex.ttft_s is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = ex.ttft_s
    if ex.queue_s is not None:
        attrs["deepseek_sidecar.upstream.queue_duration"] = ex.queue_s
    _usage(attrs, ex, deepseek=provider == "deepseek")


def _usage(attrs: Attributes, ex: Exchange, deepseek: bool) -> None:
    """Token counts as billed; DeepSeek's cache hit/miss split under its own field names."""
    usage = ex.usage
    if usage is None:
        return
    named = [
        ("gen_ai.usage.input_tokens", usage.input),
        ("gen_ai.usage.output_tokens", usage.output),
        ("gen_ai.usage.cache_read.input_tokens", usage.cache_hit),
        ("gen_ai.usage.cache_creation.input_tokens", usage.cache_write),
        ("gen_ai.usage.reasoning.output_tokens", usage.reasoning),
    ]
    if deepseek:
        named.append(("deepseek.usage.prompt_cache_hit_tokens", usage.cache_hit))
        named.append(("deepseek.usage.prompt_cache_miss_tokens", usage.cache_miss))
    for name, value in named:
        if value is not None:
            attrs[name] = value


def metric_attributes(
    ex: Exchange, server: Server, request_model: str | None, response_model: str | None
) -> Attributes | None:
    """Attributes of the GenAI client metrics, or None when the exchange is no GenAI operation.

    Model values are label values (listed, capped, else ``other``): metric attributes stay
    bounded like every Prometheus label.
    """
    operation = OPERATIONS.get(ex.route)
    if operation is None:
        return None
    attrs: Attributes = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": server.provider,
        "server.address": server.address,
        "server.port": server.port,
    }
    if request_model is not None:
        attrs["gen_ai.request.model"] = request_model
    if response_model is not None:
        attrs["gen_ai.response.model"] = response_model
    return attrs
