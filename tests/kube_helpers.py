"""Rendering and reading the Kubernetes manifests of deploy/k8s for the tests.

Everything runs offline: ``kubectl kustomize`` renders, and the checks read the rendered objects.
Helpers skip a test when a tool is missing on a developer's machine, and fail it under
``CI=true``, where a silent skip would hide an unchecked manifest.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
COMPONENTS = K8S / "components"
EXAMPLES = K8S / "examples"

SIDECAR = "deepseek-sidecar"
INJECT_LABEL = "deepseek-sidecar.io/inject"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
# What the sidecar does when neither the environment nor its settings file says otherwise
# (docs/configuration.md).
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
DEFAULT_LISTEN = "127.0.0.1:8080"


def unavailable(what: str, hint: str) -> None:
    """Skip locally, fail in CI: a check that cannot run there is a check that does not run."""
    message = f"{what} is not available ({hint})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def require_binary(name: str, hint: str) -> str:
    """The path of a system tool (kubectl, promtool), or skip/fail as ``unavailable`` says."""
    path = shutil.which(name)
    if path is None:
        unavailable(name, hint)
        raise AssertionError("unreachable")
    return path


def require_module(name: str) -> ModuleType:
    """A dev-extra package, imported lazily so that a missing one skips only the tests using it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"Python package {name}", "make install: it is in the dev extras")
        raise AssertionError("unreachable") from None


def yaml_all(text: str) -> list[dict[str, Any]]:
    """Every non-empty document, as plain dicts and lists."""
    yaml = require_module("ruamel.yaml").YAML(typ="safe", pure=True)
    return [doc for doc in yaml.load_all(text) if doc]


def yaml_text(data: Any) -> str:
    """Block-style YAML, as kustomize and promtool read it."""
    yaml = require_module("ruamel.yaml").YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``: the objects ``kubectl apply -k DIR`` would send."""
    kubectl = require_binary("kubectl", "kubectl >= 1.27 ships kustomize v5")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    return yaml_all(result.stdout)


def write_overlay(
    where: Path,
    components: list[str],
    objects: list[dict[str, Any]],
    settings: str | None = 'upstream = "https://api.deepseek.com"\n',
) -> Path:
    """A throwaway overlay in ``where`` using some of the project's components.

    kustomize refuses absolute component paths, so they are written relative to ``where``.
    """
    where.mkdir(parents=True, exist_ok=True)
    (where / "objects.yaml").write_text("---\n".join(yaml_text(o) for o in objects))
    lines = [
        "apiVersion: kustomize.config.k8s.io/v1beta1",
        "kind: Kustomization",
        "resources: [objects.yaml]",
        "components:",
        *(f"  - {os.path.relpath(COMPONENTS / name, where)}" for name in components),
    ]
    if settings is not None:
        (where / "sidecar.toml").write_text(settings)
        lines += [
            "configMapGenerator:",
            f"  - name: {SIDECAR}",
            "    files: [sidecar.toml]",
        ]
    (where / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    return where


def workload(kind: str, name: str, labelled: bool) -> dict[str, Any]:
    """A minimal valid workload of ``kind``, with or without the opt-in label."""
    pod: dict[str, Any] = {
        "metadata": {"labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]},
    }
    meta: dict[str, Any] = {"name": name}
    if labelled:
        meta["labels"] = {INJECT_LABEL: "true"}
    spec: dict[str, Any] = {"template": pod}
    if kind == "Job":
        pod["spec"]["restartPolicy"] = "Never"
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": meta, "spec": spec}
    spec["selector"] = {"matchLabels": {"app": name}}
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Rendered objects of one kind, in render order."""
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of ``kind`` called ``name``; a missing or duplicated one fails loudly."""
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a workload's template (every kind the components target has one)."""
    spec: dict[str, Any] = doc["spec"]["template"]["spec"]
    return spec


def sidecars(doc: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """Every sidecar container of a workload, with True when it is a native (init) one."""
    spec = pod_spec(doc)
    native = [(c, True) for c in spec.get("initContainers", []) if c["name"] == SIDECAR]
    classic = [(c, False) for c in spec.get("containers", []) if c["name"] == SIDECAR]
    return native + classic


def injected(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Workloads that carry a sidecar."""
    return [d for d in docs if d["kind"] in WORKLOADS and sidecars(d)]


def env_value(container: dict[str, Any], name: str) -> str | None:
    """A literal environment value; None when unset or taken from a Secret or ConfigMap."""
    for var in container.get("env", []):
        if var["name"] == name:
            value: str | None = var.get("value")
            return value
    return None


def settings_file(docs: list[dict[str, Any]], doc: dict[str, Any]) -> tuple[str, str]:
    """The name of the ConfigMap mounted as the sidecar's settings, and its sidecar.toml."""
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    name = volumes[f"{SIDECAR}-config"]["configMap"]["name"]
    (config,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"] == name]
    return name, config["data"]["sidecar.toml"]


def effective(container: dict[str, Any], toml_text: str, key: str, default: Any) -> Any:
    """A setting as the sidecar resolves it: environment over settings file over default."""
    from_env = env_value(container, f"SIDECAR_{key.upper()}")
    if from_env is not None:
        return from_env
    return tomllib.loads(toml_text).get(key, default)


def prestop_sleep_s(container: dict[str, Any]) -> float:
    """Seconds a ``sleep N`` preStop hook holds the container before its SIGTERM."""
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    command = hook["exec"]["command"]
    assert command[0] == "sleep", f"unexpected preStop {command}"
    return float(command[1])


def generator() -> ModuleType:
    """deploy/k8s/generate.py, imported from its path (it is a script, not a package)."""
    path = K8S / "generate.py"
    spec = importlib.util.spec_from_file_location("deepseek_sidecar_k8s_generate", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
