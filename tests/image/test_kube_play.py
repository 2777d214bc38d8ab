"""The Kubernetes demo with the classic sidecar, run by `podman kube play` from its manifests.

`kubectl kustomize` renders deploy/k8s/examples/demo with the classic-sidecar component in place
of the native one (native sidecars do not start under podman 4.3: the app containers wait for the
init container to exit). podman then plays the workloads as rendered, with the few changes podman
needs (`for_podman`, and docs/kubernetes.md "Trying it with podman"):

    pod demo-traffic-pod-N:  loadgen ──► sidecar 127.0.0.1:8080 ──► deepseek-simulator:8000
                                         admin <pod IP>:9464 ◄── the test, as Prometheus would
    pod deepseek-simulator-pod-0:  simulator 0.0.0.0:8000 at <simulator pod IP>

The Service name resolves to the simulator pod's IP through a hostAliases entry, so the sidecar's
settings stay exactly as rendered. The files played are kept in .build/image/kube-play/. The
tests share one play and run in file order: `podman kube down` comes last.
"""

from __future__ import annotations

import copy
import shutil
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.image.helpers import BUILD_DIR, Built, http_get, http_get_quiet, podman, run
from tests.kube_helpers import (
    K8S,
    SIDECAR,
    by_kind,
    kustomize,
    named,
    pod_spec,
    require_binary,
    settings_file,
    yaml_all,
    yaml_text,
)

pytestmark = pytest.mark.timeout(1200)  # the first test to use the image may build it

SIMULATOR, TRAFFIC, LOADGEN = "deepseek-simulator", "demo-traffic", "traffic"
NATIVE, CLASSIC = "../../components/sidecar", "../../components/classic-sidecar"
ADMIN_PORT = 9464
PLAYED_DIR = BUILD_DIR / "kube-play"
Doc = dict[str, Any]


def render_classic_demo(where: Path) -> list[Doc]:
    """examples/demo rendered with the classic-sidecar component instead of the native one.

    kustomize takes components by relative path only, so the whole of deploy/k8s is copied and
    the copy's demo kustomization swaps that one component; everything else is the demo's own.
    """
    tree = where / "k8s"
    shutil.copytree(K8S, tree)
    kustomization = tree / "examples" / "demo" / "kustomization.yaml"
    (spec,) = yaml_all(kustomization.read_text(encoding="utf-8"))
    components: list[str] = spec["components"]
    assert NATIVE in components and CLASSIC not in components, components
    components[components.index(NATIVE)] = CLASSIC
    kustomization.write_text(yaml_text(spec), encoding="utf-8")
    return kustomize(kustomization.parent)


@dataclass
class ForPodman:
    """The rendered demo as podman 4.3 can play it, and what was left out or changed."""

    simulator: Doc
    traffic: Doc
    settings: Doc  # the sidecar's settings ConfigMap, played with the traffic
    secret: Doc  # created with `podman secret create` from its data (see `secret_data`)
    service_host: str
    service_port: int
    dropped: list[str] = field(default_factory=list)

    def secret_name(self) -> str:
        return str(self.secret["metadata"]["name"])

    def secret_data(self) -> bytes:
        """What podman 4.3's secretKeyRef reads: a JSON map of key to base64 value.

        A Secret played from YAML is stored as that YAML, which the same podman then fails to
        read back ("secret ... is not valid JSON"), hence `podman secret create` with this.
        """
        return orjson.dumps(self.secret["data"])

    def traffic_with_simulator_at(self, ip: str) -> Doc:
        """The traffic Deployment, its pods resolving the Service name to ``ip``."""
        doc = copy.deepcopy(self.traffic)
        pod_spec(doc)["hostAliases"] = [{"ip": ip, "hostnames": [self.service_host]}]
        return doc


def for_podman(docs: list[Doc]) -> ForPodman:
    """Keep what podman can play; drop the container ports, which podman 4.3 would publish.

    podman 4.3 publishes every containerPort on the host's 0.0.0.0 (Kubernetes publishes none):
    the two traffic replicas would collide on 8080 and 9464, and the demo would occupy host ports.
    Nothing here needs them: containers of a pod share its loopback, and each pod has an IP.
    """
    simulator = copy.deepcopy(named(docs, "Deployment", SIMULATOR))
    traffic = copy.deepcopy(named(docs, "Deployment", TRAFFIC))
    settings_name, toml_text = settings_file(docs, traffic)
    settings = named(docs, "ConfigMap", settings_name)
    (secret,) = by_kind(docs, "Secret")
    service = named(docs, "Service", SIMULATOR)
    (port,) = service["spec"]["ports"]
    (sim_container,) = pod_spec(simulator)["containers"]
    target = next(p for p in sim_container["ports"] if p["name"] == port["targetPort"])
    # The hostAliases stand-in keeps the port: the Service must not remap it.
    assert target["containerPort"] == port["port"], (port, target)
    upstream = tomllib.loads(toml_text)["upstream"]
    assert upstream == f"http://{SIMULATOR}:{port['port']}", upstream
    for workload in (simulator, traffic):
        for container in pod_spec(workload)["containers"]:
            container.pop("ports", None)
    kept = {id(named(docs, "Deployment", n)) for n in (SIMULATOR, TRAFFIC)}
    kept |= {id(settings), id(secret)}
    dropped = [f"{d['kind']}/{d['metadata']['name']}" for d in docs if id(d) not in kept]
    return ForPodman(simulator, traffic, settings, secret, SIMULATOR, port["port"], dropped)


@dataclass
class Played:
    env: dict[str, str]
    files: dict[str, Path]
    simulator_ip: str
    traffic_pods: list[str]
    started: float

    def admin(self, pod: str) -> str:
        return f"http://{pod_ip(pod, self.env)}:{ADMIN_PORT}"

    def logs(self) -> str:
        """Every container's log of the demo, for assertion messages."""
        out = []
        for pod in [*pods_labelled(SIMULATOR, self.env), *self.traffic_pods]:
            names = run(
                ["podman", "ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}}"],
                self.env, check=False,
            ).stdout.split()  # fmt: skip
            for name in names:
                proc = run(["podman", "logs", "--tail", "20", name], self.env, check=False)
                out.append(f"--- {name}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return "\n".join(out)


def pod_ip(pod: str, env: dict[str, str]) -> str:
    """The pod's address on podman's network (its infra container's)."""
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod, env=env)
    return podman(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", infra,
        env=env,
    )  # fmt: skip


def pods_labelled(name: str, env: dict[str, str]) -> list[str]:
    """Pods that kube play made from the workload ``name`` (it copies the template's labels)."""
    label = f"label=app.kubernetes.io/name={name}"
    out = run(["podman", "pod", "ps", "--filter", label, "--format", "{{.Name}}"], env).stdout
    return sorted(out.split())


def names(kind: str, env: dict[str, str]) -> set[str]:
    """Names of podman's volumes or networks (``kind``), to remove only what the play added."""
    return set(run(["podman", kind, "ls", "--format", "{{.Name}}"], env).stdout.split())


def metrics(admin: str) -> dict[str, float]:
    """``llm_requests_total`` (all series), and ``llm_tokens_total`` by type, from /metrics."""
    status, body = http_get(f"{admin}/metrics")
    assert status == 200, body[:200]
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "llm_requests_total":
                key = "requests"
                if sample.labels.get("code") == "200":
                    totals["requests 200"] = totals.get("requests 200", 0.0) + sample.value
            elif sample.name == "llm_tokens_total":
                key = f"tokens {sample.labels['type']}"
            else:
                continue
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


@pytest.fixture(scope="session")
def demo_for_podman(tmp_path_factory: pytest.TempPathFactory) -> ForPodman:
    """Rendered first, so a missing kubectl skips (or fails) before any image is built."""
    require_binary("kubectl", "kubectl >= 1.27 renders the manifests with its kustomize")
    return for_podman(render_classic_demo(tmp_path_factory.mktemp("kube-play")))


@pytest.fixture(scope="module")
def played(
    demo_for_podman: ForPodman,
    built: Built,
    podman_env: dict[str, str],
    image_report: dict[str, str],
) -> Iterator[Played]:
    """The simulator's pod, then the traffic pods with their sidecars; all removed at the end."""
    env, demo = podman_env, demo_for_podman
    for workload in (SIMULATOR, TRAFFIC):
        assert not pods_labelled(workload, env), (
            f"pods of {workload} already exist (an earlier play?): `podman pod rm -f"
            f" $(podman pod ps -q --filter label=app.kubernetes.io/name={workload})`"
        )
    shutil.rmtree(PLAYED_DIR, ignore_errors=True)
    PLAYED_DIR.mkdir(parents=True)
    files = {
        "simulator": PLAYED_DIR / f"{SIMULATOR}.yaml",
        "secret": PLAYED_DIR / f"{demo.secret_name()}.json",
        "traffic": PLAYED_DIR / f"{TRAFFIC}.yaml",
    }
    files["simulator"].write_text(yaml_text(demo.simulator), encoding="utf-8")
    files["secret"].write_bytes(demo.secret_data())
    volumes, networks = names("volume", env), names("network", env)
    started = time.monotonic()
    try:
        podman("kube", "play", str(files["simulator"]), env=env)
        (sim_pod,) = pods_labelled(SIMULATOR, env)
        ip = pod_ip(sim_pod, env)
        # As the Service would wait for the simulator's readiness probe (GET /models).
        deadline = time.monotonic() + 30
        models, auth = f"http://{ip}:{demo.service_port}/models", {"Authorization": "Bearer x"}
        while http_get_quiet(models, auth) != 200:
            assert time.monotonic() < deadline, f"the simulator at {ip} never answered"
            time.sleep(0.2)
        podman("secret", "create", demo.secret_name(), str(files["secret"]), env=env)
        traffic = yaml_text(demo.settings) + "---\n" + yaml_text(demo.traffic_with_simulator_at(ip))
        files["traffic"].write_text(traffic, encoding="utf-8")
        podman("kube", "play", str(files["traffic"]), env=env)
        pods = pods_labelled(TRAFFIC, env)
        image_report["kube play"] = (
            f"{len(pods)} {TRAFFIC} pods + 1 simulator pod started in"
            f" {time.monotonic() - started:.1f} s (classic sidecar); not played:"
            f" {', '.join(demo.dropped)}"
        )
        yield Played(env, files, ip, pods, started)
    finally:
        for name in ("traffic", "simulator"):
            if files[name].exists():
                run(["podman", "kube", "down", str(files[name])], env, timeout=120, check=False)
        for workload in (TRAFFIC, SIMULATOR):
            for pod in pods_labelled(workload, env):
                run(["podman", "pod", "rm", "--force", pod], env, check=False)
        run(["podman", "secret", "rm", demo.secret_name()], env, check=False)
        for volume in names("volume", env) - volumes:
            run(["podman", "volume", "rm", volume], env, check=False)
        for network in names("network", env) - networks:
            run(["podman", "network", "rm", network], env, check=False)


def startup_line(played: Played, container: str) -> dict[str, Any]:
    """The sidecar's first log line, its settings, once it has written it."""
    deadline = time.monotonic() + 30
    while not (lines := podman("logs", container, env=played.env).splitlines()):
        assert time.monotonic() < deadline, f"{container}: no log after 30 s\n{played.logs()}"
        time.sleep(0.2)
    line: dict[str, Any] = orjson.loads(lines[0])
    assert line["event"] == "startup", line
    return line


def test_the_classic_demo_renders_for_podman(demo_for_podman: ForPodman) -> None:
    spec = pod_spec(demo_for_podman.traffic)
    assert [c["name"] for c in spec["containers"]] == [LOADGEN, SIDECAR]  # classic: last
    assert not spec.get("initContainers")
    sidecar = spec["containers"][-1]
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    loadgen = spec["containers"][0]
    assert loadgen["args"] == ["loadgen"]
    assert {"name": "OPENAI_BASE_URL", "value": "http://127.0.0.1:8080"} in loadgen["env"]
    assert demo_for_podman.traffic["spec"]["replicas"] == 2
    for workload in (demo_for_podman.simulator, demo_for_podman.traffic):
        for container in pod_spec(workload)["containers"]:
            assert container["imagePullPolicy"] == "IfNotPresent"  # nothing is pulled
            assert "ports" not in container
    dropped_kinds = {name.split("/")[0] for name in demo_for_podman.dropped}
    assert {"Namespace", "Service", "PodMonitor", "PrometheusRule"} <= dropped_kinds


def test_every_traffic_pod_runs_the_loadgen_and_the_sidecar(
    played: Played, demo_for_podman: ForPodman
) -> None:
    demo = demo_for_podman
    assert len(played.traffic_pods) == demo.traffic["spec"]["replicas"]
    for pod in played.traffic_pods:
        for container in (LOADGEN, SIDECAR):
            name = f"{pod}-{container}"
            state = orjson.loads(
                podman("inspect", "--format", "{{json .State}}", name, env=played.env)
            )
            assert state["Status"] == "running", f"{name}: {state}\n{played.logs()}"
        sidecar = f"{pod}-{SIDECAR}"
        user = podman("inspect", "--format", "{{.Config.User}}", sidecar, env=played.env)
        assert user == "10001:10001"  # the securityContext of the rendered container
        read_only = podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", sidecar,
                           env=played.env)  # fmt: skip
        assert read_only == "true"
        # The settings as rendered: the ConfigMap mounted, its upstream the Service name.
        startup = startup_line(played, sidecar)
        assert startup["settings"]["upstream"] == f"http://{SIMULATOR}:{demo.service_port}"
        assert startup["settings"]["config"] == "/etc/deepseek-sidecar/sidecar.toml"
        hosts = podman("exec", sidecar, "cat", "/etc/hosts", env=played.env)
        assert [played.simulator_ip, SIMULATOR] in [line.split() for line in hosts.splitlines()]


def test_the_sidecars_are_ready(played: Played) -> None:
    for pod in played.traffic_pods:
        admin = played.admin(pod)
        deadline = time.monotonic() + 30
        while http_get_quiet(f"{admin}/readyz") != 200:
            assert time.monotonic() < deadline, f"{pod}: not ready after 30 s\n{played.logs()}"
            time.sleep(0.2)
        assert http_get(f"{admin}/readyz") == (200, b'{"status": "ready"}')


def test_the_sidecars_count_the_loadgen_traffic(
    played: Played, image_report: dict[str, str]
) -> None:
    first: dict[str, dict[str, float]] = {}
    last: dict[str, dict[str, float]] = {}
    for pod in played.traffic_pods:
        admin = played.admin(pod)
        deadline = time.monotonic() + 30
        while (seen := metrics(admin)).get("requests 200", 0.0) < 1:
            assert time.monotonic() < deadline, f"{pod}: no exchange counted\n{played.logs()}"
            time.sleep(0.5)
        first[pod] = seen
    for pod in played.traffic_pods:
        # The demo mix sends a burst every 5 s, and steady requests between bursts.
        admin, deadline = played.admin(pod), time.monotonic() + 20
        while (seen := metrics(admin))["requests"] <= first[pod]["requests"]:
            assert time.monotonic() < deadline, f"{pod}: the count stopped\n{played.logs()}"
            time.sleep(0.5)
        last[pod] = seen
        for kind in ("input", "output"):
            assert seen.get(f"tokens {kind}", 0.0) > 0, f"{pod}: no {kind} tokens: {seen}"
    for pod in played.traffic_pods:
        assert "loadgen: sending the demo mix to http://127.0.0.1:8080" in podman(
            "logs", f"{pod}-{LOADGEN}", env=played.env
        )
    per_pod = " + ".join(f"{m['requests']:.0f}" for m in last.values())
    requests = sum(m["requests"] for m in last.values())
    ok = sum(m["requests 200"] for m in last.values())
    tokens = sum(m.get("tokens input", 0.0) + m.get("tokens output", 0.0) for m in last.values())
    image_report["kube play traffic"] = (
        f"llm_requests_total {per_pod} = {requests:.0f} ({ok:.0f} with code 200), {tokens:.0f}"
        f" tokens, {time.monotonic() - played.started:.1f} s after play"
    )


def test_kube_down_removes_the_demo(played: Played, image_report: dict[str, str]) -> None:
    started = time.monotonic()
    for name in ("traffic", "simulator"):
        podman("kube", "down", str(played.files[name]), env=played.env, timeout=120)
    down_s = time.monotonic() - started
    for workload in (TRAFFIC, SIMULATOR):
        assert pods_labelled(workload, played.env) == []
    image_report["kube down"] = f"{down_s:.1f} s for both files"
