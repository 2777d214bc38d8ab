"""Settings for ``deepseek-sidecar run``: one table of options, four sources.

Precedence is flag > environment > TOML config file > default. Sources are plain mappings
(flags already parsed, an injected environ), so tests never touch ``os.environ``. Every
error names the key as the user wrote it (``--idle-timeout``, ``SIDECAR_IDLE_TIMEOUT_S`` or
``file.toml: idle_timeout_s``) and the bad value, in one line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from sidecar.admission.fallback import Fallback, FallbackConfigError, parse_fallbacks
from sidecar.setting_values import (
    Address as Address,  # re-exported: part of the settings' public shape
)
from sidecar.setting_values import (
    Parser,
    address,
    any_url,
    choice,
    integer,
    models,
    number,
    text,
    url,
    without_password,
)

DEFAULT_MODELS = (
    "deepseek-flash",
    "deepseek-v4-pro",
    "deepseek-v4-flash",
    "deepseek-v4-flash-vision-exp",
    "deepseek-chat",
    "deepseek-reasoner",
)


class SettingsError(ValueError):
    """A setting has a bad value; the message is the one line shown to the user."""


@dataclass(frozen=True, slots=True)
class Settings:
    upstream: str = "https://api.deepseek.com"
    upstream_name: str = "deepseek"
    listen: Address = Address("127.0.0.1", 8080)
    admin_listen: Address = Address("0.0.0.0", 9464)
    config: str | None = None
    log_level: str = "info"
    log_format: str = "json"
    connect_timeout_s: float = 10.0
    idle_timeout_s: float = 900.0
    max_request_bytes: int = 64 * 1024 * 1024
    shutdown_timeout_s: float = 30.0
    models: tuple[str, ...] = DEFAULT_MODELS
    max_models: int = 20
    catalogue: str | None = None
    limit_rpm: int = 0
    limit_tpm: int = 0
    limit_concurrency: int = 0
    max_concurrency: int = 0
    guard_max_wait_s: float = 30.0
    retry_max_attempts: int = 1
    retry_max_wait_s: float = 30.0
    api_key: str | None = None
    api_key_file: str | None = None
    balance_poll_s: float = 0.0
    log_queue_lines: int = 4096
    upstream_ca_file: str | None = None
    upstream_proxy: str | None = None
    client_timeout_s: float = 60.0
    guard_redis_url: str | None = None
    guard_key: str | None = None
    guard_lease_s: float = 30.0
    otlp_endpoint: str | None = None
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    fallback: tuple[Fallback, ...] = ()

    def masked(self) -> dict[str, Any]:
        """The effective settings for logs and ``check-config``, secrets replaced."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "api_key":
                value = None if value is None else "***"
            elif f.name == "fallback":
                value = [fb.masked() for fb in value]
            elif f.name in ("upstream_proxy", "guard_redis_url", "otlp_endpoint") and value:
                value = without_password(value)
            elif isinstance(value, Address):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    flag: str
    env: str
    parse: Parser
    help: str
    metavar: str = "VALUE"
    in_file: bool = True


# fmt: off
OPTIONS: tuple[Option, ...] = (
    Option("upstream", "--upstream", "SIDECAR_UPSTREAM", url, "upstream base URL", "URL"),
    Option("upstream_name", "--upstream-name", "SIDECAR_UPSTREAM_NAME", text, "upstream label"),
    Option("listen", "--listen", "SIDECAR_LISTEN", address, "proxy address", "HOST:PORT"),
    Option("admin_listen", "--admin-listen", "SIDECAR_ADMIN_LISTEN", address, "admin address",
           "HOST:PORT"),
    Option("config", "--config", "SIDECAR_CONFIG", text, "TOML config file", "FILE", False),
    Option("log_level", "--log-level", "SIDECAR_LOG_LEVEL",
           choice("debug", "info", "warning", "error"), "log level"),
    Option("log_format", "--log-format", "SIDECAR_LOG_FORMAT", choice("json", "console"),
           "log format"),
    Option("connect_timeout_s", "--connect-timeout", "SIDECAR_CONNECT_TIMEOUT_S",
           number(0, strict=True), "upstream connect timeout", "S"),
    Option("idle_timeout_s", "--idle-timeout", "SIDECAR_IDLE_TIMEOUT_S", number(0, strict=True),
           "longest upstream silence", "S"),
    Option("max_request_bytes", "--max-request-bytes", "SIDECAR_MAX_REQUEST_BYTES", integer(1),
           "largest request body", "N"),
    Option("shutdown_timeout_s", "--shutdown-timeout", "SIDECAR_SHUTDOWN_TIMEOUT_S", number(0),
           "drain time on SIGTERM", "S"),
    Option("models", "--models", "SIDECAR_MODELS", models, "known model names", "LIST"),
    Option("max_models", "--max-models", "SIDECAR_MAX_MODELS", integer(0), "model cap", "N"),
    Option("catalogue", "--catalogue", "SIDECAR_CATALOGUE", text, "model catalogue", "FILE"),
    Option("limit_rpm", "--limit-rpm", "SIDECAR_LIMIT_RPM", integer(0), "account RPM", "N"),
    Option("limit_tpm", "--limit-tpm", "SIDECAR_LIMIT_TPM", integer(0), "account TPM", "N"),
    Option("limit_concurrency", "--limit-concurrency", "SIDECAR_LIMIT_CONCURRENCY", integer(0),
           "account concurrency", "N"),
    Option("max_concurrency", "--max-concurrency", "SIDECAR_MAX_CONCURRENCY", integer(0),
           "concurrency guard (0 = off)", "N"),
    Option("guard_max_wait_s", "--guard-max-wait", "SIDECAR_GUARD_MAX_WAIT_S", number(0),
           "longest wait for the guard", "S"),
    Option("retry_max_attempts", "--retry-max-attempts", "SIDECAR_RETRY_MAX_ATTEMPTS",
           integer(1), "attempts per exchange", "N"),
    Option("retry_max_wait_s", "--retry-max-wait", "SIDECAR_RETRY_MAX_WAIT_S", number(0),
           "retry wait budget", "S"),
    Option("api_key", "", "SIDECAR_API_KEY", text, "API key", in_file=False),
    Option("api_key_file", "--api-key-file", "SIDECAR_API_KEY_FILE", text,
           "file holding the key", "FILE"),
    Option("balance_poll_s", "--balance-poll", "SIDECAR_BALANCE_POLL_S", number(0),
           "balance poll interval (0 = off)", "S"),
    Option("log_queue_lines", "--log-queue-lines", "SIDECAR_LOG_QUEUE_LINES", integer(1),
           "log lines held while stdout is blocked, then dropped", "N"),
    Option("upstream_ca_file", "--upstream-ca-file", "SIDECAR_UPSTREAM_CA_FILE", text,
           "extra PEM CA bundle for the upstream", "FILE"),
    Option("upstream_proxy", "--upstream-proxy", "SIDECAR_UPSTREAM_PROXY",
           any_url("http", "https"), "egress proxy (unset: HTTPS_PROXY etc.)", "URL"),
    Option("client_timeout_s", "--client-timeout", "SIDECAR_CLIENT_TIMEOUT_S",
           number(0, strict=True), "longest a client may take to send its request", "S"),
    Option("guard_redis_url", "--guard-redis-url", "SIDECAR_GUARD_REDIS_URL",
           any_url("redis", "rediss"), "share --max-concurrency through this Redis", "URL"),
    Option("guard_key", "--guard-key", "SIDECAR_GUARD_KEY", text,
           "shared budget name (default: upstream name)", "NAME"),
    Option("guard_lease_s", "--guard-lease-s", "SIDECAR_GUARD_LEASE_S", number(0, strict=True),
           "a dead sidecar's slots return within this time", "S"),
    Option("otlp_endpoint", "--otlp-endpoint", "SIDECAR_OTLP_ENDPOINT", any_url("http", "https"),
           "OTLP/HTTP endpoint for spans and GenAI metrics", "URL"),
    # Fallback (TOML file only): the breaker's schedule; the [[fallback]] tables are read by load.
    Option("breaker_failures", "", "", integer(1), "consecutive failures that open a breaker"),
    Option("breaker_cooldown_s", "", "", number(0, strict=True), "open time before a probe"),
)
# fmt: on
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
FILE_TABLES = frozenset({"fallback"})  # read by ``load`` itself: they need the environment


def _parse(option: Option, raw: Any, where: str) -> Any:
    try:
        return option.parse(raw)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{where}: invalid value {raw!r} ({exc})") from None


def read_config_file(path: str) -> dict[str, Any]:
    """Read the TOML file; unknown keys are errors so typos never pass silently."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"--config: cannot read {path!r} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"--config: {path!r} is not valid TOML ({exc})") from None
    for key in data:
        option = OPTIONS_BY_NAME.get(key)
        if key in FILE_TABLES:
            continue
        if option is None or not option.in_file:
            raise SettingsError(f"{path}: unknown key {key!r}")
    return data


def load(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Merge flags (already parsed, ``None`` = not given), environment and config file."""
    config_path = flags.get("config") or environ.get("SIDECAR_CONFIG") or None
    file_values = read_config_file(config_path) if config_path else {}
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if flags.get(option.name) is not None:
            values[option.name] = _parse(option, flags[option.name], option.flag)
        elif option.env and environ.get(option.env, "") != "":
            values[option.name] = _parse(option, environ[option.env], option.env)
        elif option.name in file_values:
            where = f"{config_path}: {option.name}"
            values[option.name] = _parse(option, file_values[option.name], where)
    if "fallback" in file_values:
        values["fallback"] = _fallbacks(file_values["fallback"], environ, config_path)
    settings = _with_key_from_file(Settings(**values))
    if any(fb.name == settings.upstream_name for fb in settings.fallback):
        raise SettingsError(
            f"{config_path}: fallback name {settings.upstream_name!r} is the upstream's own name"
        )
    if settings.balance_poll_s > 0 and settings.api_key is None:
        raise SettingsError(
            f"--balance-poll: invalid value {settings.balance_poll_s:g} "
            "(needs an API key: SIDECAR_API_KEY or --api-key-file)"
        )
    return _with_shared_guard(settings, environ)


def _fallbacks(raw: Any, environ: Mapping[str, str], path: str | None) -> tuple[Fallback, ...]:
    try:
        return parse_fallbacks(raw, environ)
    except FallbackConfigError as exc:
        raise SettingsError(f"{path}: {exc}") from None


def _with_shared_guard(settings: Settings, environ: Mapping[str, str]) -> Settings:
    """Check the shared guard's settings; a password from the environment joins the URL.

    The URL is the one place the password lives, so ``masked()`` hides it wherever it came from.
    """
    url = settings.guard_redis_url
    if url is None:
        return settings
    if not settings.max_concurrency:
        raise SettingsError("--guard-redis-url: needs --max-concurrency N (the budget it shares)")
    if settings.guard_lease_s < 1:
        raise SettingsError(
            f"--guard-lease-s: invalid value {settings.guard_lease_s:g} "
            "(must be >= 1: leases are renewed every third of it)"
        )
    try:
        import redis  # noqa: F401 - optional extra, checked here so the error is one line
    except ImportError:
        raise SettingsError(
            "--guard-redis-url: needs the redis package (pip install 'deepseek-sidecar[redis]')"
        ) from None
    password = environ.get("SIDECAR_GUARD_REDIS_PASSWORD", "")
    parts = urlsplit(url)
    if not password or parts.password is not None:
        return settings
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return _replace(settings, guard_redis_url=parts._replace(netloc=netloc).geturl())


def _with_key_from_file(settings: Settings) -> Settings:
    """Read the mounted secret once at start; the key itself is never echoed."""
    if settings.api_key is not None or settings.api_key_file is None:
        return settings
    try:
        key = Path(settings.api_key_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SettingsError(
            f"--api-key-file: cannot read {settings.api_key_file!r} ({exc.strerror})"
        ) from None
    if not key:
        raise SettingsError(f"--api-key-file: {settings.api_key_file!r} is empty")
    return _replace(settings, api_key=key)


def _replace(settings: Settings, **changes: Any) -> Settings:
    values = {f.name: getattr(settings, f.name) for f in fields(settings)}
    values.update(changes)
    return Settings(**values)
