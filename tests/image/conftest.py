"""Gate, host requirements and the summary for the container image tests (`make image-test`).

These tests build an image and run a pod: minutes, root, podman. They run only when
SIDECAR_IMAGE_TEST=1 (set by `make image-test`), so a plain `pytest` stays quick. A missing tool
skips them on a workstation but fails them under CI=true, where a skip would hide a broken image.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import orjson
import pytest

from tests.image.helpers import BUILD_DIR, IMAGE, STANDIN_BASE, ULIMITS, Built, podman, run

REPORT_FILE = BUILD_DIR / "report.json"
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


@pytest.fixture(scope="session")
def built(podman_env: dict[str, str], image_report: dict[str, str]) -> Built:
    """The stand-in base (cached), then `make image` on it, timed from cold wheels."""
    started = time.monotonic()
    run(["scripts/standin-base.sh", STANDIN_BASE], podman_env, timeout=900)
    base_s = time.monotonic() - started
    version = "import sys; print('%d.%d' % sys.version_info[:2])"
    python = podman("run", "--rm", *ULIMITS, STANDIN_BASE, "python3", "-c", version, env=podman_env)
    previous = run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", IMAGE], podman_env, check=False
    ).stdout.strip()
    started = time.monotonic()
    run(
        ["make", "image", f"BASE_IMAGE={STANDIN_BASE}", f"IMAGE_PYTHON={python}", f"IMAGE={IMAGE}"],
        podman_env,
        timeout=900,
    )
    build_s = time.monotonic() - started
    image_id = podman("image", "inspect", "--format", "{{.Id}}", IMAGE, env=podman_env)
    if previous and previous != image_id:
        # The previous build is now untagged; leave no dangling images behind (in use: kept).
        run(["podman", "rmi", previous], podman_env, check=False)
    size, base_size = (
        int(podman("image", "inspect", "--format", "{{.Size}}", name, env=podman_env))
        for name in (IMAGE, STANDIN_BASE)
    )
    image_report["image"] = f"{IMAGE} on {STANDIN_BASE} (Python {python})"
    image_report["image size"] = (
        f"{size / 1e6:.0f} MB ({(size - base_size) / 1e6:.0f} MB above the {base_size / 1e6:.0f} MB"
        " base)"
    )
    image_report["build time"] = f"{build_s:.1f} s (make image: wheels + image build)"
    image_report["stand-in base"] = f"{base_s:.1f} s (debootstrap when not cached)"
    return Built(image_id, python, build_s, size)


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
