"""The event as every list shows it: stored row → `AgentEventListItem` (SPEC §7.2).

One shape, one asset id (§4.2) and one runtime label for `/events/list`, the timeline, inventory,
topology and evidence, so an event looks the same wherever it appears. Reading rows is `queries`;
this module only turns a row (or its identity fields) into what the API shows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import orjson

from anysentry.events.model import JSON_FIELDS
from anysentry.events.timefmt import display_time

CLASSIFICATIONS = ("confirmed_agent", "probable_agent", "unknown", "non_agent")


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def identity_key(agent_id: str, workspace: str, attribution: dict | None, process: dict | None) -> str:
    """The first available identity key of §4.2."""
    a = attribution if isinstance(attribution, dict) else {}
    for key in ("physicalWorkloadId", "agentInstanceId"):
        value = a.get(key)
        if isinstance(value, str) and value:
            return value
    ref = a.get("workloadRef") if isinstance(a.get("workloadRef"), dict) else {}
    pod = ref.get("podUid")
    scope = a.get("agentScopeId") if isinstance(a.get("agentScopeId"), str) and a.get("agentScopeId") else agent_id
    if isinstance(pod, str) and pod:
        container = ref.get("containerName")
        return f"k8s:{pod}:{container if isinstance(container, str) else ''}"
    proc = process if isinstance(process, dict) else {}
    root, host, boot = _scalar(a.get("rootPid")), proc.get("hostId"), proc.get("bootId")
    if root and isinstance(host, str) and host and isinstance(boot, str) and boot:
        return f"host-root:{host}:{boot}:{root}:{scope}:{workspace}"
    return f"logical:{workspace}:{scope}"


def agent_asset_id(agent_id: str, workspace: str, attribution: dict | None = None, process: dict | None = None) -> str:
    key = identity_key(agent_id, workspace, attribution, process)
    return "agent_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def runtime_of(attribution: dict | None, process: dict | None, attributes: dict | None) -> tuple[str, str | None]:
    """(`runtime`, `locationLabel`) of §7.2 from attribution, process and attributes."""
    a = attribution if isinstance(attribution, dict) else {}
    ref = a.get("workloadRef") if isinstance(a.get("workloadRef"), dict) else {}
    proc = process if isinstance(process, dict) else {}
    attrs = attributes if isinstance(attributes, dict) else {}
    cgroup = str(proc.get("cgroup") or attrs.get("cgroup") or "")
    if ref.get("podUid") or ref.get("podName") or a.get("source") == "kubernetes" or "/kubepods" in cgroup:
        namespace, pod = ref.get("namespace") or "", ref.get("podName") or ref.get("name") or ""
        label = f"{namespace}/{pod}" if namespace and pod else (pod or None)
        node = ref.get("nodeName")
        return "kubernetes", (f"{label} @ {node}" if label and node else label)
    if "docker" in cgroup:
        tail = cgroup.rstrip("/").rsplit("/", 1)[-1].removeprefix("docker-").removesuffix(".scope")
        return "docker", f"docker {tail[:12]}" if tail else "docker"
    if proc:
        host = proc.get("hostId") or attrs.get("collectorNode")
        return "host", (f"host {host}" if host else None)
    return "unknown", None


def json_field(value: object, key: str) -> object:
    """A stored JSON column (text) → its value; unparsable text is None, `attributes` always a dict."""
    if isinstance(value, (str, bytes)):
        try:
            value = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            value = None
    if key == "attributes" and not isinstance(value, dict):
        return {}
    return value


def list_item(row: dict, overlay: Callable[[dict], str | None] | None = None) -> dict:
    """A stored row → `AgentEventListItem` (§7.2)."""
    item = dict(row)
    item.pop("ts", None)
    for key in JSON_FIELDS:
        item[key] = json_field(item.get(key), key)
    item["decisionUpdatedAt"] = int(item.get("decisionUpdatedAt") or item.get("at") or 0)
    item["at"] = display_time(int(row["at"]))
    item["tokenCount"] = int(item.get("tokenCount") or 0)
    attribution = item.get("attribution") if isinstance(item.get("attribution"), dict) else {}
    item["agentAssetId"] = agent_asset_id(item.get("agentId", ""), item.get("workspacePath", ""), attribution, item.get("process"))
    detected = attribution.get("classification")
    detected = detected if detected in CLASSIFICATIONS else "unknown"
    item["detectedClassification"] = detected
    item["effectiveClassification"] = (overlay(item) if overlay else None) or detected
    name = attribution.get("agentDisplayName")
    if isinstance(name, str) and name:
        item["detectedName"] = name
        item["displayName"] = name
    item["runtime"], label = runtime_of(attribution, item.get("process"), item.get("attributes"))
    if label:
        item["locationLabel"] = label
    return item
