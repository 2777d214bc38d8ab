"""Add the sidecar to every pod template in a stream of Kubernetes YAML documents.

The container, its volumes and the pod-level settings come from ``sidecar.yaml``, a copy of
the kustomize component's patch (``deploy/k8s/components/sidecar``), so ``inject`` and the
component add the same thing. YAML is edited round-trip (ruamel.yaml), so comments and key
order survive. Injecting twice changes nothing: a pod that already has a container named
``deepseek-sidecar`` keeps it as it is.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

CONTAINER = "deepseek-sidecar"
INJECT_LABEL = "deepseek-sidecar.io/inject"
DEFAULT_IMAGE = "deepseek-sidecar:dev"
DEFAULT_CONFIG_MAP = "deepseek-sidecar"
DEFAULT_API_KEY_SECRET = "deepseek-sidecar-api-key"
# The classic sidecar gets SIGTERM with the application and keeps serving this long, so the
# application's last requests still find it (as in the classic-sidecar component).
PRESTOP_SLEEP_S = 10
PROXY = "http://127.0.0.1:8080"
# What the official SDKs read for their base URL; an app container that sets one keeps it.
BASE_URL_ENV = {
    "OPENAI_BASE_URL": PROXY,
    "DEEPSEEK_BASE_URL": PROXY,
    "ANTHROPIC_BASE_URL": f"{PROXY}/anthropic",
}
# kind → path from the document to its pod spec's parent (the object holding metadata + spec).
TEMPLATE_PATH: dict[str, tuple[str, ...]] = {
    "Pod": (),
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}

# Pods that must run to completion: a classic (regular) sidecar container would keep them alive.
RUN_TO_COMPLETION = ("Job ", "CronJob ")


class InjectError(ValueError):
    """The input cannot be injected; the message is the one line shown to the user."""


@dataclass(frozen=True, slots=True)
class Options:
    classic: bool = False
    image: str = DEFAULT_IMAGE
    upstream: str | None = None
    config_map: str = DEFAULT_CONFIG_MAP
    api_key_secret: str = DEFAULT_API_KEY_SECRET


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line the user wrote on one
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _patch() -> CommentedMap:
    """The component's pod-template patch: ``spec.template`` of ``sidecar.yaml``."""
    text = resources.files("sidecar.kube").joinpath("sidecar.yaml").read_text(encoding="utf-8")
    template: CommentedMap = _yaml().load(text)["spec"]["template"]
    return template


def sidecar_container(template: CommentedMap, options: Options) -> CommentedMap:
    """The sidecar container as the options want it."""
    container: CommentedMap = copy.deepcopy(template["spec"]["initContainers"][0])
    container["image"] = options.image
    for item in container["env"]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            ref["name"] = options.api_key_secret
    if options.upstream is not None:
        container["env"].append(CommentedMap(name="SIDECAR_UPSTREAM", value=options.upstream))
    if options.classic:
        _drop(container, "restartPolicy")
        sleep = ["sleep", str(PRESTOP_SLEEP_S)]
        container["lifecycle"] = CommentedMap(
            preStop=CommentedMap(exec=CommentedMap(command=sleep))
        )
    return container


def _drop(mapping: CommentedMap, key: str) -> None:
    """Delete ``key`` with the comment lines above it (ruamel keeps them on the previous key)."""
    keys = list(mapping)
    index = keys.index(key)
    if index > 0:
        mapping.ca.items.pop(keys[index - 1], None)
    del mapping[key]


def _seq(parent: CommentedMap, key: str) -> CommentedSeq:
    """``parent[key]`` as a block-style list we can append to (created when absent).

    A flow-style parent (``{name: app, image: x}``) or list turns block-style: items with
    nested maps and comments have no faithful flow form.
    """
    parent.fa.set_block_style()
    if parent.get(key) is None:
        parent[key] = CommentedSeq()
    value: CommentedSeq = parent[key]
    value.fa.set_block_style()
    return value


def _has_sidecar(spec: CommentedMap) -> bool:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return any(c.get("name") == CONTAINER for c in containers)


def _point_at_sidecar(container: CommentedMap) -> None:
    env = _seq(container, "env")
    present = {item.get("name") for item in env}
    for name, value in BASE_URL_ENV.items():
        if name not in present:
            env.append(CommentedMap(name=name, value=value))


def inject_template(pod: CommentedMap, template: CommentedMap, options: Options) -> None:
    """Add the sidecar to one pod template (or Pod) in place; a second call changes nothing."""
    spec = pod.get("spec")
    if not isinstance(spec, CommentedMap):
        raise InjectError("a pod template has no spec")
    if pod.get("metadata") is None:
        pod["metadata"] = CommentedMap()
    labels = pod["metadata"].get("labels")
    if labels is None:
        labels = pod["metadata"]["labels"] = CommentedMap()
    labels.setdefault(INJECT_LABEL, "true")
    for container in _seq(spec, "containers"):
        if container.get("name") != CONTAINER:
            _point_at_sidecar(container)
    if _has_sidecar(spec):
        return
    grace = template["spec"]["terminationGracePeriodSeconds"]
    if (spec.get("terminationGracePeriodSeconds") or 30) < grace:  # 30: Kubernetes' default
        spec["terminationGracePeriodSeconds"] = grace
    sidecar = sidecar_container(template, options)
    if options.classic:  # last: kubectl logs and exec default to the first container
        _seq(spec, "containers").append(sidecar)
    else:  # first: the app's own init containers can already reach the proxy
        _seq(spec, "initContainers").insert(0, sidecar)
    volumes = _seq(spec, "volumes")
    names = {v.get("name") for v in volumes}
    for volume in template["spec"]["volumes"]:
        if volume["name"] not in names:
            added = copy.deepcopy(volume)
            if "configMap" in added:
                added["configMap"]["name"] = options.config_map
            volumes.append(added)


def pod_templates(doc: Any) -> Iterator[tuple[str, CommentedMap]]:
    """Every pod template in a document (a ``List`` contributes its items' templates)."""
    if not isinstance(doc, CommentedMap):
        return
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List")):
        for item in doc.get("items") or []:
            yield from pod_templates(item)
        return
    path = TEMPLATE_PATH.get(kind) if isinstance(kind, str) else None
    if path is None:
        return
    node: Any = doc
    for key in path:
        node = node.get(key) if isinstance(node, CommentedMap) else None
    if not isinstance(node, CommentedMap):
        raise InjectError(f"{kind} {_name(doc)!r} has no pod template at {'.'.join(path)}")
    yield f"{kind} {_name(doc)!r}", node


def _name(doc: CommentedMap) -> str:
    metadata = doc.get("metadata")
    return str(metadata.get("name", "?")) if isinstance(metadata, CommentedMap) else "?"


def inject(text: str, options: Options) -> str:
    """``text`` (one or more YAML documents) with the sidecar in every pod template."""
    yaml = _yaml()
    try:
        docs = list(yaml.load_all(text))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise InjectError(f"bad YAML{where}: {problem}") from None
    template = _patch()
    for doc in docs:
        for what, pod in pod_templates(doc):
            if options.classic and what.startswith(RUN_TO_COMPLETION):
                raise InjectError(
                    f"--classic cannot inject {what}: a regular sidecar container never exits, "
                    "so its pods would never complete; use native sidecars (drop --classic)"
                )
            inject_template(pod, template, options)
    out = io.StringIO()
    yaml.dump_all(docs, out)
    return out.getvalue()
