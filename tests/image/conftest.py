"""Gate, host requirements and the summary for the container image tests (`make image-test`).

These tests build an image and run a pod: minutes, root, podman. They run only when
SIDECAR_IMAGE_TEST=1 (set by `make image-test`), so a plain `pytest` stays quick. A missing tool
skips them on a workstation but fails them under CI=true, where a skip would hide a broken image.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest

REPORT_FILE = Path(__file__).resolve().parents[2] / ".build" / "image" / "report.json"
REPORT = pytest.StashKey[dict[str, str]]()

# Hosts like CI's (cgroups v1/hybrid, capped rlimits) need runc and explicit ulimits for every
# container. A pod's infra container takes no --ulimit flag, so they must come from containers.conf.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""


def unavailable(reason: str) -> None:
    """Skip locally; fail under CI=true, where the image test is required."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required when CI=true; .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def image_test_enabled() -> None:
    if os.environ.get("SIDECAR_IMAGE_TEST") != "1":
        pytest.skip("slow container image test: run it with `make image-test`")


@pytest.fixture(scope="session")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for podman: the tools are checked, and containers.conf defaults supplied.

    An existing /etc/containers/containers.conf (or CONTAINERS_CONF) is the host's choice and is
    used as it is; without one, a private file gives the pod's infra container its ulimits.
    """
    missing = [t for t in ("podman", "buildah", "runc", "debootstrap") if not shutil.which(t)]
    if missing:
        unavailable(
            f"{', '.join(missing)} not installed"
            " (apt-get install buildah podman runc debootstrap catatonit)"
        )
    if os.geteuid() != 0:
        unavailable("needs root: debootstrap and rootful podman")
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and not Path("/etc/containers/containers.conf").exists():
        conf = tmp_path_factory.mktemp("containers") / "containers.conf"
        conf.write_text(CONTAINERS_CONF, encoding="utf-8")
        env["CONTAINERS_CONF"] = str(conf)
    return env


@pytest.fixture(scope="session")
def image_report(request: pytest.FixtureRequest) -> dict[str, str]:
    """Measurements (size, build time) for the summary and .build/image/report.json."""
    return request.config.stash.setdefault(REPORT, {})


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    report = config.stash.get(REPORT, {})
    if report:
        REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
        REPORT_FILE.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        terminalreporter.section("container image")
        for key, value in report.items():
            terminalreporter.write_line(f"{key}: {value}")
