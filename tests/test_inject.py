"""``deepseek-sidecar inject``: every workload kind, idempotence, comments, the component's twin."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from sidecar.kube.inject import BASE_URL_ENV, CONTAINER, Options, inject
from tests.conftest import require_binary

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = (ROOT / "tests" / "fixtures" / "kube" / "workloads.yaml").read_text()
KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob")


def load_all(text: str) -> list[Any]:
    return list(YAML(typ="safe").load_all(text))


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["kind"] == "Pod":
        spec: dict[str, Any] = doc["spec"]
    elif doc["kind"] == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        spec = doc["spec"]["template"]["spec"]
    return spec


def sidecars(spec: dict[str, Any]) -> list[dict[str, Any]]:
    every = [*spec.get("initContainers", []), *spec.get("containers", [])]
    return [c for c in every if c["name"] == CONTAINER]


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", "inject", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def test_every_workload_kind_gets_one_native_sidecar_and_its_apps_point_at_it() -> None:
    docs = load_all(inject(WORKLOADS, Options()))
    workloads = [d for d in docs if d["kind"] in KINDS]
    assert [d["kind"] for d in workloads] == list(KINDS)
    for doc in workloads:
        spec = pod_spec(doc)
        (sidecar,) = sidecars(spec)
        assert sidecar in spec["initContainers"] and sidecar["restartPolicy"] == "Always"
        assert {v["name"] for v in spec["volumes"]} >= {"deepseek-sidecar-config"}
        assert spec["terminationGracePeriodSeconds"] >= 35
        for app in spec["containers"]:
            env = {e["name"]: e["value"] for e in app["env"]}
            assert set(BASE_URL_ENV) <= set(env)
    web = pod_spec(docs[1])
    assert web["terminationGracePeriodSeconds"] == 120  # a longer grace period is kept
    app_env = {e["name"]: e["value"] for e in web["containers"][0]["env"]}
    assert app_env["OPENAI_BASE_URL"] == "http://gateway.internal"
    assert app_env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8080/anthropic"
    assert docs[1]["spec"]["template"]["metadata"]["labels"]["deepseek-sidecar.io/inject"] == "true"


def test_documents_that_are_not_workloads_pass_through_unchanged() -> None:
    before = [d for d in load_all(WORKLOADS) if d["kind"] == "Service"]
    after = [d for d in load_all(inject(WORKLOADS, Options())) if d["kind"] == "Service"]
    assert after == before
    assert inject("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x # note\n", Options()) == (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x # note\n"
    )


@pytest.mark.parametrize("classic", [False, True])
def test_injecting_twice_changes_nothing(classic: bool) -> None:
    text = WORKLOADS if not classic else WORKLOADS.split("apiVersion: batch/v1")[0]
    once = inject(text, Options(classic=classic))
    assert inject(once, Options(classic=classic)) == once
    for doc in load_all(once):
        if doc and doc["kind"] in KINDS:
            assert len(sidecars(pod_spec(doc))) == 1


def test_comments_and_key_order_survive() -> None:
    out = inject(WORKLOADS, Options())
    for comment in ("# a bare pod", "# two replicas share one account", "# UTC",
                    "# the app's own choice wins", "# longer than the sidecar needs: kept",
                    "# Every kind of workload"):  # fmt: skip
        assert comment in out
    before, after = load_all(WORKLOADS), load_all(out)
    for old, new in zip(before, after, strict=True):
        assert list(new)[: len(old)] == list(old)
        assert list(new["metadata"])[: len(old["metadata"])] == list(old["metadata"])


def test_flags_set_image_upstream_config_map_and_secret() -> None:
    options = Options(
        image="registry.example/deepseek-sidecar:1.2",
        upstream="https://api.example.com",
        config_map="team-sidecar",
        api_key_secret="team-key",
    )
    doc = load_all(inject(WORKLOADS, options))[1]
    spec = pod_spec(doc)
    (sidecar,) = sidecars(spec)
    assert sidecar["image"] == "registry.example/deepseek-sidecar:1.2"
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["SIDECAR_UPSTREAM"]["value"] == "https://api.example.com"
    assert env["SIDECAR_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "team-key"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["deepseek-sidecar-config"]["configMap"]["name"] == "team-sidecar"


def test_classic_adds_a_regular_container_with_a_prestop_pause() -> None:
    text = WORKLOADS.split("apiVersion: batch/v1")[0]  # no Jobs: see the next test
    out = inject(text, Options(classic=True))
    assert "Native sidecar" not in out  # the comment went with restartPolicy
    for doc in load_all(out):
        if doc and doc["kind"] in KINDS:
            spec = pod_spec(doc)
            (sidecar,) = sidecars(spec)
            assert sidecar in spec["containers"] and "restartPolicy" not in sidecar
            assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
            assert "initContainers" not in spec


def test_classic_refuses_jobs_whose_pods_would_never_complete() -> None:
    result = run_cli("--classic", "-", stdin=WORKLOADS)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "Job 'once'" in result.stderr and "never complete" in result.stderr


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("kind: Deployment\nspec: [unclosed\n", "bad YAML at line 3"),
        ("a: b\n  c: d\n", "bad YAML at line 2"),
        ("kind: Deployment\nmetadata: {name: x}\nspec: {}\n", "Deployment 'x' has no pod template"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(stdin: str, expected: str) -> None:
    result = run_cli(stdin=stdin)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr


def test_a_missing_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli(str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "nope.yaml" in result.stderr


def test_the_cli_reads_a_file_and_writes_stdout(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(WORKLOADS)
    result = run_cli(str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == inject(WORKLOADS, Options())


@pytest.mark.parametrize(("classic", "component"), [(False, "sidecar"), (True, "classic-sidecar")])
def test_inject_adds_the_same_container_as_the_kustomize_component(
    tmp_path: Path, classic: bool, component: str
) -> None:
    kubectl = require_binary("kubectl")
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
        "  labels: {deepseek-sidecar.io/inject: 'true'}\nspec:\n"
        "  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n"
        "      labels: {app: web}\n    spec:\n      containers: [{name: app, image: web:1}]\n"
    )
    (tmp_path / "deployment.yaml").write_text(deployment)
    shutil.copytree(ROOT / "deploy" / "k8s" / "components", tmp_path / "components")
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [deployment.yaml]\ncomponents: [components/{component}]\n"
    )
    rendered = subprocess.run(
        [kubectl, "kustomize", str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout
    by_component = next(d for d in load_all(rendered) if d["kind"] == "Deployment")
    by_inject = load_all(inject(deployment, Options(classic=classic)))[0]
    (expected,) = sidecars(pod_spec(by_component))
    (actual,) = sidecars(pod_spec(by_inject))
    assert actual == expected
    spec_c, spec_i = pod_spec(by_component), pod_spec(by_inject)
    assert spec_i["terminationGracePeriodSeconds"] == spec_c["terminationGracePeriodSeconds"]
    assert {v["name"] for v in spec_i["volumes"]} == {v["name"] for v in spec_c["volumes"]}
