"""The Kubernetes manifests in deploy/k8s, rendered with kustomize and checked offline.

No cluster is needed: every overlay is rendered with ``kubectl kustomize``; the core objects are
validated against the Kubernetes 1.29, 1.31 and 1.34 OpenAPI schemas with unknown fields
forbidden (kubernetes-validate --strict); the Prometheus Operator objects, which that tool skips,
against typed models with extra fields forbidden, and their rules with promtool. Then the
properties the design relies on are asserted one by one on the rendered objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests.kube_helpers import (
    DEFAULT_LISTEN,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    EXAMPLES,
    INJECT_LABEL,
    ROOT,
    SIDECAR,
    by_kind,
    effective,
    env_value,
    generator,
    injected,
    kustomize,
    named,
    pod_spec,
    prestop_sleep_s,
    require_binary,
    require_module,
    settings_file,
    sidecars,
    workload,
    write_overlay,
    yaml_all,
    yaml_text,
)

Docs = list[dict[str, Any]]

KUBERNETES_VERSIONS = ("1.29", "1.31", "1.34")
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule"}
OVERLAYS = ("demo", "app", "native", "classic")

# The workloads of the throwaway overlays: every kind the components target, with the label,
# and the same kinds without it.
TEST_OBJECTS = [
    workload("Deployment", "web", labelled=True),
    workload("StatefulSet", "db", labelled=True),
    workload("Job", "batch", labelled=True),
    workload("Deployment", "plain", labelled=False),
    workload("Job", "plain-job", labelled=False),
]

EXPECTED_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
EXPECTED_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "128Mi"},
}


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Docs]:
    """Each overlay rendered once: the two examples and one throwaway overlay per mode."""
    tmp = tmp_path_factory.mktemp("overlays")
    monitoring = ["prometheus-operator", "prometheus-annotations", "grafana-dashboards"]
    native = write_overlay(tmp / "native", ["sidecar", *monitoring], TEST_OBJECTS)
    classic = write_overlay(tmp / "classic", ["classic-sidecar", *monitoring], TEST_OBJECTS)
    return {
        "demo": kustomize(EXAMPLES / "demo"),
        "app": kustomize(EXAMPLES / "app"),
        "native": kustomize(native),
        "classic": kustomize(classic),
    }


# -- generated files -----------------------------------------------------------------------


def test_generated_manifests_are_fresh() -> None:
    """The classic sidecar, inject's packaged patch, the PrometheusRule and the dashboards
    repeat their sources exactly."""
    require_module("ruamel.yaml")
    gen = generator()
    stale = [str(path.relative_to(ROOT)) for path in gen.stale(gen.render())]
    assert stale == [], f"stale generated files (run `make k8s`): {stale}"


def test_prometheus_rule_holds_exactly_the_rules_file(renders: dict[str, Docs]) -> None:
    (rules_file,) = yaml_all((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    (rule,) = by_kind(renders["demo"], "PrometheusRule")
    assert rule["spec"] == {"groups": rules_file["groups"]}


def test_every_dashboard_ships_as_a_grafana_configmap(renders: dict[str, Docs]) -> None:
    dashboards = sorted((ROOT / "dashboards").glob("*.json"))
    assert dashboards, "no dashboards found"
    shipped: dict[str, str] = {}
    for config in by_kind(renders["demo"], "ConfigMap"):
        if config["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            shipped.update(config["data"])
    assert sorted(shipped) == [path.name for path in dashboards]
    for path in dashboards:
        assert shipped[path.name] == path.read_text()
        orjson.loads(shipped[path.name])


# -- schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_match_the_kubernetes_schema(
    renders: dict[str, Docs], overlay: str, version: str
) -> None:
    """Strict schemas: an unknown or misplaced field fails, as `kubectl apply` would reject it."""
    kv = require_module("kubernetes_validate")
    assert version in {v.rsplit(".", 1)[0] for v in kv.utils.all_versions()}, (
        f"kubernetes-validate {kv.version.__version__} ships no schema for {version}"
    )
    errors = []
    for doc in renders[overlay]:
        if doc["kind"] in OPERATOR_KINDS:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            used = kv.validate(doc, f"{version}.0", strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{where}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")
        else:
            assert used == version
    assert errors == []


@pytest.mark.parametrize("overlay", ["demo", "app", "native", "classic"])
def test_operator_objects_match_their_crds(renders: dict[str, Docs], overlay: str) -> None:
    """PodMonitor and PrometheusRule against the Operator's CRD types, extra fields forbidden."""
    models = require_module("cloudcoil.models.prometheus_operator.v1")
    pydantic = require_module("pydantic")
    found = by_kind(renders[overlay], "PodMonitor") + by_kind(renders[overlay], "PrometheusRule")
    assert {doc["kind"] for doc in found} == OPERATOR_KINDS
    for doc in found:
        model = getattr(models, doc["kind"])
        try:
            model.model_validate(doc, extra="forbid")
        except pydantic.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_promtool_accepts_the_prometheus_rule(renders: dict[str, Docs], tmp_path: Path) -> None:
    promtool = require_binary("promtool", "apt-get install prometheus")
    (rule,) = by_kind(renders["demo"], "PrometheusRule")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml_text(rule["spec"]))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the sidecar ---------------------------------------------------------------------------


def test_the_components_inject_the_labelled_workloads_they_target(
    renders: dict[str, Docs],
) -> None:
    """Native: Deployments, StatefulSets and Jobs. Classic: not Jobs, whose pods would never
    complete with a regular container that never exits."""
    native, classic = renders["native"], renders["classic"]
    for kind, name in [("Deployment", "web"), ("StatefulSet", "db"), ("Job", "batch")]:
        assert [is_native for _, is_native in sidecars(named(native, kind, name))] == [True]
    for kind, name in [("Deployment", "web"), ("StatefulSet", "db")]:
        assert [is_native for _, is_native in sidecars(named(classic, kind, name))] == [False]
    assert sidecars(named(classic, "Job", "batch")) == []


@pytest.mark.parametrize("overlay", ["native", "classic"])
def test_unlabelled_workloads_are_left_untouched(renders: dict[str, Docs], overlay: str) -> None:
    for original in TEST_OBJECTS:
        if original["metadata"].get("labels"):
            continue
        rendered = named(renders[overlay], original["kind"], original["metadata"]["name"])
        assert rendered == original


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_sidecar_has_probes_security_resources_and_ports(
    renders: dict[str, Docs], overlay: str
) -> None:
    workloads = injected(renders[overlay])
    assert workloads, f"{overlay}: no workload carries the sidecar"
    for doc in workloads:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        assert doc["spec"]["template"]["metadata"]["labels"][INJECT_LABEL] == "true", where
        for container, _ in sidecars(doc):
            assert container["image"].split(":")[0].endswith(SIDECAR), where
            assert container["args"] == ["run"], where
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports == {"metrics": 9464, "proxy": 8080}, where
            for probe, path in [
                ("startupProbe", "/healthz"),
                ("readinessProbe", "/readyz"),
                ("livenessProbe", "/healthz"),
            ]:
                assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, where
            startup = container["startupProbe"]
            assert startup["periodSeconds"] * startup["failureThreshold"] >= 10, where
            assert container["securityContext"] == EXPECTED_SECURITY, where
            assert container["resources"] == EXPECTED_RESOURCES, where
            config = env_value(container, "SIDECAR_CONFIG")
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert config == "/etc/deepseek-sidecar/sidecar.toml", where
            assert mounts["/etc/deepseek-sidecar"].get("readOnly") is True, where
            assert "/tmp" in mounts, where
            (key,) = [v for v in container["env"] if v["name"] == "SIDECAR_API_KEY"]
            assert key["valueFrom"]["secretKeyRef"]["optional"] is True, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_native_sidecars_start_first_and_classic_ones_come_last(
    renders: dict[str, Docs], overlay: str
) -> None:
    """A native sidecar leads the init containers, so the application's own init containers
    already reach it; a classic one follows the application's containers, so kubectl logs and
    exec still default to the application."""
    for doc in injected(renders[overlay]):
        spec = pod_spec(doc)
        for container, native in sidecars(doc):
            if native:
                assert spec["initContainers"][0] is container
                assert container["restartPolicy"] == "Always"
                assert "lifecycle" not in container
            else:
                assert spec["containers"][-1] is container
                assert len(spec["containers"]) > 1
                assert "restartPolicy" not in container
                assert prestop_sleep_s(container) > 0


def test_native_and_classic_sidecars_are_the_same_container(renders: dict[str, Docs]) -> None:
    native = named(renders["native"], "Deployment", "web")
    classic = named(renders["classic"], "Deployment", "web")
    ((native_container, _),) = sidecars(native)
    ((classic_container, _),) = sidecars(classic)
    assert {k: v for k, v in native_container.items() if k != "restartPolicy"} == {
        k: v for k, v in classic_container.items() if k != "lifecycle"
    }
    native_pod = {k: v for k, v in pod_spec(native).items() if k != "initContainers"}
    classic_pod = dict(pod_spec(classic))
    classic_pod["containers"] = classic_pod["containers"][:-1]
    assert native_pod == classic_pod
    assert native["spec"]["template"]["metadata"] == classic["spec"]["template"]["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_drain(renders: dict[str, Docs], overlay: str) -> None:
    """The kubelet kills whatever still runs when the grace period ends: the sidecar's drain,
    plus the classic sidecar's preStop pause before it, must fit, with a margin."""
    for doc in injected(renders[overlay]):
        _, settings = settings_file(renders[overlay], doc)
        grace = pod_spec(doc).get("terminationGracePeriodSeconds", 30)
        for container, _ in sidecars(doc):
            drain = float(
                effective(container, settings, "shutdown_timeout_s", DEFAULT_SHUTDOWN_TIMEOUT_S)
            )
            assert grace >= drain + prestop_sleep_s(container) + 5, (
                f"{overlay}: {doc['metadata']['name']}: grace {grace} s, drain {drain} s"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_sidecar_mounts_valid_settings(
    renders: dict[str, Docs], overlay: str, tmp_path: Path
) -> None:
    """The mounted ConfigMap exists in the same render and `check-config` accepts its file with
    the container's environment, as the sidecar would read it at start."""
    for doc in injected(renders[overlay]):
        name, settings = settings_file(renders[overlay], doc)
        path = tmp_path / f"{name}.toml"
        path.write_text(settings)
        ((container, _), *_) = sidecars(doc)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        environ.update({v["name"]: v["value"] for v in container["env"] if "value" in v})
        environ.pop("SIDECAR_CONFIG")
        environ["SIDECAR_API_KEY"] = "sk-test-not-a-key"  # stands for the optional Secret
        result = subprocess.run(
            [sys.executable, "-m", "sidecar", "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=environ,
            cwd=ROOT,
        )
        assert result.returncode == 0, f"{overlay}: {name}: {result.stderr}"


@pytest.mark.parametrize(
    ("overlay", "kind", "name", "container"),
    [("demo", "Deployment", "demo-traffic", "traffic"), ("app", "Deployment", "my-app", "my-app")],
)
def test_the_application_talks_to_its_own_sidecar(
    renders: dict[str, Docs], overlay: str, kind: str, name: str, container: str
) -> None:
    doc = named(renders[overlay], kind, name)
    (app,) = [c for c in pod_spec(doc)["containers"] if c["name"] == container]
    ((sidecar, _),) = sidecars(doc)
    _, settings = settings_file(renders[overlay], doc)
    listen = effective(sidecar, settings, "listen", DEFAULT_LISTEN)
    assert listen == "127.0.0.1:8080"
    assert env_value(app, "OPENAI_BASE_URL") == f"http://{listen}"


def test_the_demo_upstream_is_the_simulator_service(renders: dict[str, Docs]) -> None:
    docs = renders["demo"]
    traffic = named(docs, "Deployment", "demo-traffic")
    ((sidecar, _),) = sidecars(traffic)
    _, settings = settings_file(docs, traffic)
    upstream = urlsplit(effective(sidecar, settings, "upstream", None))
    service = named(docs, "Service", upstream.hostname or "")
    assert upstream.port in [p["port"] for p in service["spec"]["ports"]]
    simulator = named(docs, "Deployment", "deepseek-simulator")
    assert service["spec"]["selector"].items() <= (
        simulator["spec"]["template"]["metadata"]["labels"].items()
    )
    (sim,) = pod_spec(simulator)["containers"]
    assert sim["args"] == ["simulate", "--listen", "0.0.0.0:8000", "--scenario", "demo"]
    (app,) = pod_spec(traffic)["containers"]
    assert app["args"] == ["loadgen"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_finds_every_sidecar(renders: dict[str, Docs], overlay: str) -> None:
    """The PodMonitor's selector and the scrape annotations lead to the sidecar's admin port."""
    docs = renders[overlay]
    (monitor,) = by_kind(docs, "PodMonitor")
    assert monitor["metadata"]["labels"]["release"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    for doc in injected(docs):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        for container, _ in sidecars(doc):
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert endpoint["port"] in ports
            annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
            if overlay != "app":
                assert annotations["prometheus.io/scrape"] == "true"
                assert annotations["prometheus.io/port"] == str(ports["metrics"])
                assert annotations["prometheus.io/path"] == endpoint["path"]


# -- the demo under the restricted Pod Security Standard ------------------------------------


RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def test_the_demo_meets_the_restricted_pod_security_standard(renders: dict[str, Docs]) -> None:
    """The demo namespace enforces `restricted`; every pod of the demo must pass its checks."""
    docs = renders["demo"]
    (namespace,) = by_kind(docs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in by_kind(docs, "Deployment"):
        spec = pod_spec(doc)
        pod = spec.get("securityContext", {})
        for volume in spec.get("volumes", []):
            assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{doc['metadata']['name']}/{container['name']}"
            own = container.get("securityContext", {})
            assert own.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in own.get("capabilities", {}).get("drop", []), where
            assert set(own.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}, where
            assert not own.get("privileged"), where
            assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where
            assert own.get("runAsUser", pod.get("runAsUser")) != 0, where
            seccomp = own.get("seccompProfile", pod.get("seccompProfile", {}))
            assert seccomp.get("type") in {"RuntimeDefault", "Localhost"}, where
