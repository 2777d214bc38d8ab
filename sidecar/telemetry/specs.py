"""Every metric the sidecar exports, declared once: ``SPECS`` is the single source of truth.

Names, types, labels, help text and buckets live here and nowhere else: the metric families
(``metrics.py``), ``docs/metrics.md``, the dashboards, the rules and the runbooks are all
checked against this table by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

# Buckets cover LLM reality: DeepSeek may queue a request 10 minutes and run 30.
# fmt: off
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300,
                   450, 600, 900)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5,
                5)
TOKEN_BUCKETS = (16, 64, 256, 1024, 4096, 16384, 65536, 131072, 262144, 524288, 1048576)
RETRY_AFTER_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
GUARD_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)
# fmt: on

TOKEN_TYPES = ("input", "output", "cache_hit", "cache_miss", "reasoning", "cache_write")
PARSE_ERROR_KINDS = ("sse", "json", "decompress", "oversize", "websocket")
RATELIMIT_RESOURCES = ("requests", "tokens")
CONFIGURED_RESOURCES = ("requests_per_minute", "tokens_per_minute", "concurrency")


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()


# fmt: off
SPECS: tuple[Spec, ...] = (
    Spec("llm_requests_total", "counter",
         ("upstream", "route", "model", "stream", "code", "outcome"),
         "Exchanges finished."),
    Spec("llm_request_duration_seconds", "histogram", ("upstream", "route", "model", "stream"),
         "Request received to last byte relayed.", DURATION_BUCKETS),
    Spec("llm_time_to_first_token_seconds", "histogram", ("upstream", "route", "model"),
         "Streams: request received to the first event carrying generated content.",
         LATENCY_BUCKETS),
    Spec("llm_time_per_output_token_seconds", "histogram", ("upstream", "route", "model"),
         "Streams: (last token - first token) / (output tokens - 1).", TPOT_BUCKETS),
    Spec("llm_upstream_queue_seconds", "histogram", ("upstream", "route", "model"),
         "Time the upstream held the request with only keep-alives or blank lines.",
         LATENCY_BUCKETS),
    Spec("llm_tokens_total", "counter", ("upstream", "model", "type"),
         "Tokens as billed: input, output, cache_hit, cache_miss, reasoning, cache_write."),
    Spec("llm_request_tokens", "histogram", ("upstream", "model", "type"),
         "Tokens per request (input, output), for capacity planning.", TOKEN_BUCKETS),
    Spec("llm_usage_missing_total", "counter", ("upstream", "route", "model"),
         "Exchanges that should have carried usage but did not."),
    Spec("llm_in_flight_requests", "gauge", ("upstream", "route"), "Exchanges in progress."),
    Spec("llm_retry_after_seconds", "histogram", ("upstream",),
         "Retry-After / retry-after-ms values received.", RETRY_AFTER_BUCKETS),
    Spec("llm_upstream_concurrency_limit", "gauge", ("upstream", "source"),
         "Concurrency limit: reported in DeepSeek's last 429, or configured."),
    Spec("llm_ratelimit_limit", "gauge", ("upstream", "resource"),
         "x-ratelimit-limit-* from the last response carrying it."),
    Spec("llm_ratelimit_remaining", "gauge", ("upstream", "resource"),
         "x-ratelimit-remaining-* from the last response carrying it."),
    Spec("llm_ratelimit_reset_seconds", "gauge", ("upstream", "resource"),
         "x-ratelimit-reset-* from the last response carrying it, in seconds."),
    Spec("llm_ratelimit_configured", "gauge", ("upstream", "resource"),
         "Configured account limits: requests_per_minute, tokens_per_minute, concurrency."),
    Spec("llm_cost_usd_total", "counter", ("upstream", "model", "type"),
         "Estimated spend from the price catalogue: cache_hit, cache_miss, output."),
    Spec("llm_cache_savings_usd_total", "counter", ("upstream", "model"),
         "What cache hits saved versus the cache-miss price."),
    Spec("llm_upstream_attempts_total", "counter", ("upstream", "route", "code"),
         "Every upstream attempt, retries included."),
    Spec("llm_model_retirement_timestamp_seconds", "gauge", ("model",),
         "Catalogue retirement date of a model, Unix seconds."),
    Spec("llm_account_balance", "gauge", ("upstream", "currency"),
         "Account balance from /user/balance."),
    Spec("llm_account_available", "gauge", ("upstream",), "is_available from /user/balance (1/0)."),
    Spec("llm_sidecar_build_info", "gauge", ("version", "python"), "Always 1."),
    Spec("llm_sidecar_guard_wait_seconds", "histogram", ("upstream",),
         "Time spent queued by the opt-in concurrency guard.", GUARD_WAIT_BUCKETS),
    Spec("llm_sidecar_unpriced_requests_total", "counter", ("upstream", "model"),
         "Exchanges whose model has no price in the catalogue."),
    Spec("llm_sidecar_overhead_seconds", "histogram", ("upstream",),
         "Time the sidecar adds before the request leaves for the upstream.", OVERHEAD_BUCKETS),
    Spec("llm_sidecar_parse_errors_total", "counter", ("upstream", "kind"),
         "Observation gave up (sse, json, decompress, oversize, websocket); bytes still relayed."),
    Spec("llm_sidecar_balance_poll_failures_total", "counter", ("upstream", "reason"),
         "Balance polls that failed: connect, status, body, timeout."),
    Spec("llm_sidecar_fd_exhausted_total", "counter", (),
         "Accepts or upstream connects that failed for lack of file descriptors."),
    Spec("llm_sidecar_log_lines_dropped_total", "counter", (),
         "Log lines dropped because stdout stayed blocked longer than the log queue holds."),
    Spec("llm_fallbacks_total", "counter", ("from", "to", "reason"),
         "Exchanges sent to a fallback: 429, 5xx, connect, timeout, breaker_open."),
    Spec("llm_upstream_circuit_state", "gauge", ("upstream",),
         "Circuit breaker of an upstream: 0 closed, 1 open, 2 half-open."),
    Spec("llm_sidecar_guard_backend_up", "gauge", ("backend",),
         "1 while the shared guard's backend (Redis) answers, else 0."),
    Spec("llm_sidecar_guard_backend_errors_total", "counter", ("backend",),
         "Shared-guard backend calls that failed or timed out (the local guard took over)."),
    Spec("llm_sidecar_guard_in_flight", "gauge", ("scope",),
         "Exchanges holding a guard slot: local (this sidecar) or cluster (read from Redis)."),
    Spec("llm_sidecar_otel_dropped_total", "counter", ("signal",),
         "Spans or metric points the OpenTelemetry exporter dropped."),
)
# fmt: on
