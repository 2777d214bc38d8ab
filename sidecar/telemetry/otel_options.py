"""Where and how OpenTelemetry export sends: the standard ``OTEL_*`` variables.

Read from an injected mapping (the process environment in production), so tests never touch
``os.environ``; a bad value is a settings error naming the variable and the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from sidecar import __version__
from sidecar.settings import SettingsError

SERVICE_NAME = "deepseek-sidecar"


def _int_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise SettingsError(f"{name}: expected a positive integer, got {raw!r}")
    return value


def _timeout_env(environ: Mapping[str, str], signal: str) -> float:
    """Seconds, as the Python OTLP exporter reads ``OTEL_EXPORTER_OTLP[_SIGNAL]_TIMEOUT``."""
    name = f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"
    if not environ.get(name):
        name = "OTEL_EXPORTER_OTLP_TIMEOUT"
    raw = environ.get(name, "").strip()
    try:
        value = float(raw) if raw else 10.0  # the exporter's own default
    except ValueError:
        value = 0.0
    if value <= 0:
        raise SettingsError(f"{name}: expected a positive number of seconds, got {raw!r}")
    return value


def _resource_attributes(raw: str) -> dict[str, str]:
    """``key=value,key=value`` with percent-encoded values; malformed pairs are skipped, as
    the SDK does."""
    out: dict[str, str] = {}
    for pair in raw.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            out[key.strip()] = unquote(value.strip())
    return out


@dataclass(frozen=True, slots=True)
class OtelOptions:
    """Where and how to export; the standard ``OTEL_*`` variables, read from an injected
    mapping. Headers, compression and TLS files are left to the exporter, which reads them
    from the process environment itself."""

    traces_endpoint: str
    metrics_endpoint: str
    traces_timeout_s: float = 10.0
    metrics_timeout_s: float = 10.0
    resource: dict[str, str] = field(default_factory=dict)
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    schedule_delay_ms: int = 5000
    metric_interval_ms: int = 60000

    @classmethod
    def from_environ(cls, endpoint: str, environ: Mapping[str, str]) -> OtelOptions:
        """``endpoint`` is a base URL, like ``OTEL_EXPORTER_OTLP_ENDPOINT``: signal paths are
        appended; ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`` win for their signal."""
        base = endpoint.rstrip("/")
        resource = _resource_attributes(environ.get("OTEL_RESOURCE_ATTRIBUTES", ""))
        resource["service.name"] = (
            environ.get("OTEL_SERVICE_NAME") or resource.get("service.name") or SERVICE_NAME
        )
        resource.setdefault("service.version", __version__)
        queue = _int_env(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)
        return cls(
            traces_endpoint=environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or base + "/v1/traces",
            metrics_endpoint=(
                environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or base + "/v1/metrics"
            ),
            traces_timeout_s=_timeout_env(environ, "TRACES"),
            metrics_timeout_s=_timeout_env(environ, "METRICS"),
            resource=resource,
            max_queue_size=queue,
            max_export_batch_size=min(
                queue, _int_env(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)
            ),
            schedule_delay_ms=_int_env(environ, "OTEL_BSP_SCHEDULE_DELAY", 5000),
            metric_interval_ms=_int_env(environ, "OTEL_METRIC_EXPORT_INTERVAL", 60000),
        )
