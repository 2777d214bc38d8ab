"""Settings: precedence, and bad values as a table of input → exact one-line error."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.cli.run import settings_from
from sidecar.settings import Address, Settings, SettingsError


def test_defaults_are_transparent() -> None:
    s = settings_from([], {})
    assert s == Settings()
    assert s.upstream == "https://api.deepseek.com"
    assert s.listen == Address("127.0.0.1", 8080) and s.admin_listen == Address("0.0.0.0", 9464)
    assert (s.max_concurrency, s.retry_max_attempts, s.api_key, s.balance_poll_s) == (0, 1, None, 0)
    assert s.max_request_bytes == 67108864 and s.idle_timeout_s == 900


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text(
        'upstream = "http://file:1"\nupstream_name = "file"\nidle_timeout_s = 11\n'
        'models = ["a", "b"]\nmax_models = 3\n'
    )
    environ = {
        "SIDECAR_CONFIG": str(config),
        "SIDECAR_UPSTREAM": "http://env:2",
        "SIDECAR_UPSTREAM_NAME": "env",
    }
    s = settings_from(["--upstream", "http://flag:3/prefix/"], environ)
    assert s.upstream == "http://flag:3/prefix"
    assert s.upstream_name == "env"
    assert s.idle_timeout_s == 11.0
    assert s.models == ("a", "b") and s.max_models == 3
    assert s.connect_timeout_s == 10.0


def test_models_from_env_are_comma_separated() -> None:
    assert settings_from([], {"SIDECAR_MODELS": "x, y,,z"}).models == ("x", "y", "z")


def test_api_key_from_file_is_masked(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-secret-123\n")
    s = settings_from(["--api-key-file", str(key)], {})
    assert s.api_key == "sk-secret-123"
    assert s.masked()["api_key"] == "***"
    assert "sk-secret-123" not in repr(s.masked())
    assert settings_from([], {"SIDECAR_API_KEY": "sk-env"}).api_key == "sk-env"


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (
            ["--idle-timeout", "abc"],
            {},
            "--idle-timeout: invalid value 'abc' (could not convert string to float: 'abc')",
        ),
        (["--idle-timeout", "0"], {}, "--idle-timeout: invalid value '0' (must be > 0)"),
        (
            [],
            {"SIDECAR_CONNECT_TIMEOUT_S": "-1"},
            "SIDECAR_CONNECT_TIMEOUT_S: invalid value '-1' (must be > 0)",
        ),
        (
            ["--upstream", "ftp://x"],
            {},
            "--upstream: invalid value 'ftp://x' (expected an http:// or https:// URL)",
        ),
        (["--listen", "8080"], {}, "--listen: invalid value '8080' (expected HOST:PORT)"),
        (
            ["--log-format", "xml"],
            {},
            "--log-format: invalid value 'xml' (expected one of json, console)",
        ),
        (
            ["--max-request-bytes", "1.5"],
            {},
            "--max-request-bytes: invalid value '1.5' "
            "(invalid literal for int() with base 10: '1.5')",
        ),
        (
            [],
            {"SIDECAR_RETRY_MAX_ATTEMPTS": "0"},
            "SIDECAR_RETRY_MAX_ATTEMPTS: invalid value '0' (must be >= 1)",
        ),
        (
            ["--models", " , "],
            {},
            "--models: invalid value ' , ' (expected at least one model name)",
        ),
    ],
)
def test_bad_values_name_the_key_and_value(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        settings_from(argv, environ)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "idle_timeout_s = true\n",
            "{path}: idle_timeout_s: invalid value True (expected a number)",
        ),
        ("idle_timeot_s = 5\n", "{path}: unknown key 'idle_timeot_s'"),
        ("api_key = 'sk-x'\n", "{path}: unknown key 'api_key'"),
        ("max_models = 2.5\n", "{path}: max_models: invalid value 2.5 (expected a whole number)"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as info:
        settings_from(["--config", str(config)], {})
    assert str(info.value) == message.format(path=config)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^--config: cannot read '/nonexistent.toml'"):
        settings_from(["--config", "/nonexistent.toml"], {})
    bad = tmp_path / "bad.toml"
    bad.write_text("= broken")
    with pytest.raises(SettingsError, match=r"is not valid TOML"):
        settings_from(["--config", str(bad)], {})


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_cli_settings_error_is_one_line_and_exit_2() -> None:
    result = run_cli("run", "--idle-timeout", "soon")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--idle-timeout" in result.stderr and "'soon'" in result.stderr


def test_cli_unknown_flag_exits_2() -> None:
    result = run_cli("--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_check_config_prints_masked_effective_settings(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-never-print-me")
    config = tmp_path / "c.toml"
    config.write_text(f'upstream = "http://127.0.0.1:9"\napi_key_file = "{key}"\n')
    result = run_cli("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert '"upstream": "http://127.0.0.1:9"' in result.stdout
    assert '"api_key": "***"' in result.stdout
    assert "sk-never-print-me" not in result.stdout + result.stderr
    config.write_text("max_models = -1\n")
    result = run_cli("check-config", str(config))
    assert result.returncode == 2 and "max_models" in result.stderr and "-1" in result.stderr


def test_a_taken_port_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "--listen", f"127.0.0.1:{port}", "--admin-listen", "127.0.0.1:0")
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"deepseek-sidecar: --listen: cannot listen on 127.0.0.1:{port}"
    )
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
