"""Kubernetes pod identity for observer events (SPEC §7.6, §7.7): which pod, container and agent
an event's `sessionId` or `agentId` names, and the identity and attribution that implies.

Pure logic, no I/O: `WorkloadIndex` is fed pod objects exactly as the Kubernetes API returns them
(by `anysentry.operator.pods`) and answers `match(key)` with one dict lookup, so events that name no
pod pay nothing. Decisions where the SPEC is silent:

- Keys: the pod UID, and for every container (current and last terminated, init containers too) its
  `containerID` as the status gives it (`containerd://<64hex>`), the bare 64-hex id and its 12-hex
  prefix. A UID names the pod's agent container; a container id names that very container.
- Classification: `anysentry.io/workload-kind` of `non-agent` or `infrastructure` → `non_agent`
  (confidence 1.0: an explicit statement wins over any selector); the agent selector matches, or
  `anysentry.io/workload-kind=agent` → `confirmed_agent` (1.0); only an `anysentry.io/agent-id`
  label → `probable_agent` (0.8); any other pod is not indexed, so its events are left unchanged.
- agentScopeId: the `anysentry.io/agent-id` label, else the owning workload's name — a Deployment
  (the ReplicaSet owner's name without its `pod-template-hash` suffix), StatefulSet, DaemonSet, Job
  or other controller — else the pod name.
- Container: `anysentry.io/agent-container` when the pod has a container of that name, else the
  first container of the spec. agentInstanceId is `k8s:<podUid>:<container>` (the §4.2 identity key).
- physicalWorkloadId: `k8s:<clusterId>:<namespace>/<pod>/<container>` (a StatefulSet pod keeps it
  across restarts, so a human review of it keeps applying); workspacePath `<namespace>/<pod>`.
- Agents get `agentId = agentScopeId`, `sessionId = agentInstanceId`, `workspacePath`; a non-agent
  event keeps its identity and only gains the attribution (routing then discards it, §7.7).
- A 12-hex prefix shared by two containers stays with the first one indexed (a 2^-48 event).
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping

WORKLOAD_KIND_LABEL = "anysentry.io/workload-kind"
AGENT_ID_LABEL = "anysentry.io/agent-id"
AGENT_CONTAINER_LABEL = "anysentry.io/agent-container"
ENVIRONMENT_LABEL = "anysentry.io/environment"
NON_AGENT_KINDS = frozenset({"non-agent", "infrastructure"})
DEFAULT_SELECTOR = "anysentry.io/workload-kind=agent"
DEFAULT_CLUSTER_ID = "default-cluster"
OFF_VALUES = frozenset({"off", "false", "0", "no", "disabled"})

CONFIRMED, PROBABLE, NON_AGENT = "confirmed_agent", "probable_agent", "non_agent"
CONFIDENCE = {CONFIRMED: 1.0, PROBABLE: 0.8, NON_AGENT: 1.0}

# ---- label selectors --------------------------------------------------------------------------

_KEY = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?)?"
_EXISTS = re.compile(rf"(!?)\s*({_KEY})")
_EQUALITY = re.compile(rf"({_KEY})\s*(==|=|!=)\s*({_VALUE})")
_SET = re.compile(rf"({_KEY})\s+(in|notin)\s*\(\s*({_VALUE}(?:\s*,\s*{_VALUE})*)\s*\)")
_TOP_LEVEL_COMMA = re.compile(r",(?![^()]*\))")


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes label selector (equality- and set-based, as `kubectl -l` takes it)."""

    text: str
    requirements: tuple[tuple[str, str, frozenset[str]], ...]  # (key, operator, values)

    @classmethod
    def parse(cls, text: str) -> "LabelSelector":
        """Raises ValueError naming the part that is not a requirement."""
        requirements = []
        for part in _TOP_LEVEL_COMMA.split(text.strip()) if text.strip() else []:
            part = part.strip()
            if m := _SET.fullmatch(part):
                values = frozenset(v.strip() for v in m.group(3).split(","))
                requirements.append((m.group(1), m.group(2), values))
            elif m := _EQUALITY.fullmatch(part):
                requirements.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset({m.group(3)})))
            elif m := _EXISTS.fullmatch(part):
                requirements.append((m.group(2), "!" if m.group(1) else "exists", frozenset()))
            else:
                raise ValueError(f"invalid label selector requirement {part!r} in {text!r}")
        return cls(text.strip(), tuple(requirements))

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, op, values in self.requirements:
            present = key in labels
            if op == "exists" and not present or op == "!" and present:
                return False
            if op in ("=", "in") and (not present or labels[key] not in values):
                return False
            if op in ("!=", "notin") and present and labels[key] in values:
                return False
        return True


# ---- settings ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EnrichSettings:
    """SPEC §31: `ANYSENTRY_KUBE_ENRICH`, `ANYSENTRY_IDENTITY_NAMESPACES`,
    `ANYSENTRY_AGENT_LABEL_SELECTOR`, `ANYSENTRY_CLUSTER_ID`."""

    enabled: bool = True
    namespaces: tuple[str, ...] | None = None  # None: every namespace
    selector: LabelSelector = field(default_factory=lambda: LabelSelector.parse(DEFAULT_SELECTOR))
    cluster_id: str = DEFAULT_CLUSTER_ID

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "EnrichSettings":
        """Raises ValueError with the variable's name when the selector does not parse."""
        enabled = environ.get("ANYSENTRY_KUBE_ENRICH", "on").strip().lower() not in OFF_VALUES
        names = [n.strip() for n in environ.get("ANYSENTRY_IDENTITY_NAMESPACES", "*").split(",") if n.strip()]
        namespaces = None if not names or "*" in names else tuple(dict.fromkeys(names))
        try:
            selector = LabelSelector.parse(environ.get("ANYSENTRY_AGENT_LABEL_SELECTOR", "").strip() or DEFAULT_SELECTOR)
        except ValueError as exc:
            raise ValueError(f"ANYSENTRY_AGENT_LABEL_SELECTOR: {exc}") from None
        cluster_id = environ.get("ANYSENTRY_CLUSTER_ID", "").strip() or DEFAULT_CLUSTER_ID
        return cls(enabled, namespaces, selector, cluster_id)


# ---- identities -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WorkloadIdentity:
    """Who an event belongs to, as one pod container and the classification its labels give."""

    classification: str
    confidence: float
    reason: str
    agent_scope_id: str
    agent_instance_id: str
    physical_workload_id: str
    workspace_path: str
    workload_ref: tuple[tuple[str, str], ...]  # §7.7 workloadRef, empty values left out
    evidence: tuple[str, ...]

    def attribution(self) -> dict:
        """The §7.7 attribution (a fresh dict each call)."""
        return {"monitored": self.classification != NON_AGENT, "classification": self.classification,
                "agentScopeId": self.agent_scope_id, "agentInstanceId": self.agent_instance_id,
                "physicalWorkloadId": self.physical_workload_id, "workloadRef": dict(self.workload_ref),
                "confidence": self.confidence, "reason": self.reason, "source": "kubernetes",
                "evidence": list(self.evidence)}

    def overrides(self) -> dict:
        """The explicit /ingest fields (§8.1) an event of this workload is normalised with."""
        if self.classification == NON_AGENT:
            return {"attribution": self.attribution()}
        return {"agentId": self.agent_scope_id, "sessionId": self.agent_instance_id,
                "workspacePath": self.workspace_path, "attribution": self.attribution()}


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def classify(labels: Mapping[str, str], selector: LabelSelector) -> tuple[str, str] | None:
    """(classification, reason) of a pod's labels, or None for a pod that says nothing."""
    kind = _text(labels.get(WORKLOAD_KIND_LABEL)).lower()
    if kind in NON_AGENT_KINDS:
        return NON_AGENT, f"pod labelled {WORKLOAD_KIND_LABEL}={kind}"
    if selector.requirements and selector.matches(labels):
        return CONFIRMED, f"pod matches agent selector {selector.text}"
    if kind == "agent":
        return CONFIRMED, f"pod labelled {WORKLOAD_KIND_LABEL}=agent"
    if _text(labels.get(AGENT_ID_LABEL)):
        return PROBABLE, f"pod labelled {AGENT_ID_LABEL} without matching the agent selector"
    return None


def owning_workload(metadata: dict, labels: Mapping[str, str]) -> tuple[str, str, str, str]:
    """(workload kind, workload name, owner kind, owner name) of a pod; a bare pod is its own workload."""
    owners = [o for o in _list(metadata.get("ownerReferences")) if isinstance(o, dict)]
    owner = next((o for o in owners if o.get("controller") is True), owners[0] if owners else None)
    if owner is None or not _text(owner.get("kind")) or not _text(owner.get("name")):
        return "Pod", _text(metadata.get("name")), "", ""
    kind, name = _text(owner.get("kind")), _text(owner.get("name"))
    template_hash = _text(labels.get("pod-template-hash"))
    if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
        return "Deployment", name[: -len(template_hash) - 1], kind, name
    return kind, name, kind, name


def _container_ids(status: dict) -> dict[str, list[str]]:
    """container name → its `containerID`s (current first, then the last terminated one)."""
    ids: dict[str, list[str]] = {}
    for group in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in _list(status.get(group)):
            if not isinstance(entry, dict) or not _text(entry.get("name")):
                continue
            found = ids.setdefault(entry["name"].strip(), [])
            last = _dict(_dict(entry.get("lastState")).get("terminated")).get("containerID")
            for raw in (entry.get("containerID"), last):
                if _text(raw) and _text(raw) not in found:
                    found.append(_text(raw))
    return ids


def _id_keys(container_id: str) -> tuple[str, ...]:
    """The forms an event may carry a container id in: as given, bare, and its 12-char prefix."""
    bare = container_id.rsplit("://", 1)[-1].lower()
    keys = [container_id]
    if bare and bare != container_id:
        keys.append(bare)
    if len(bare) > 12:
        keys.append(bare[:12])
    return tuple(keys)


def pod_identities(pod: dict, selector: LabelSelector, cluster_id: str = DEFAULT_CLUSTER_ID) -> dict[str, WorkloadIdentity]:
    """Every lookup key of a pod → the identity it names; empty for a pod its labels say nothing of."""
    metadata, spec, status = _dict(pod.get("metadata")), _dict(pod.get("spec")), _dict(pod.get("status"))
    uid, name, namespace = _text(metadata.get("uid")), _text(metadata.get("name")), _text(metadata.get("namespace"))
    labels = {str(k): str(v) for k, v in _dict(metadata.get("labels")).items()}
    verdict = classify(labels, selector) if uid and name else None
    if verdict is None:
        return {}
    classification, reason = verdict
    kind, workload, owner_kind, owner_name = owning_workload(metadata, labels)
    scope = _text(labels.get(AGENT_ID_LABEL)) or workload or name
    images: dict[str, str] = {}
    for group in ("containers", "initContainers", "ephemeralContainers"):
        for c in _list(spec.get(group)):
            if isinstance(c, dict) and _text(c.get("name")):
                images.setdefault(c["name"].strip(), _text(c.get("image")))
    first = next((_text(c.get("name")) for c in _list(spec.get("containers")) if isinstance(c, dict)), "")
    wanted = _text(labels.get(AGENT_CONTAINER_LABEL))
    agent_container = wanted if wanted in images else first
    ids = _container_ids(status)
    base_evidence = [f"pod {namespace}/{name} uid {uid}", reason]
    if kind != "Pod":
        base_evidence.append(f"owner {kind}/{workload}")
    if wanted and wanted not in images:
        base_evidence.append(f"{AGENT_CONTAINER_LABEL}={wanted} names no container; using {agent_container or 'none'}")

    def identity(container: str, container_id: str, matched_by: str) -> WorkloadIdentity:
        ref = {"environment": _text(labels.get(ENVIRONMENT_LABEL)), "kind": kind, "name": workload,
               "namespace": namespace, "podName": name, "podUid": uid, "nodeName": _text(spec.get("nodeName")),
               "containerName": container, "containerImage": images.get(container, ""), "containerId": container_id,
               "ownerKind": owner_kind, "ownerName": owner_name}
        return WorkloadIdentity(
            classification=classification, confidence=CONFIDENCE[classification], reason=reason,
            agent_scope_id=scope, agent_instance_id=f"k8s:{uid}:{container}",
            physical_workload_id=f"k8s:{cluster_id}:{namespace}/{name}/{container}",
            workspace_path=f"{namespace}/{name}", workload_ref=tuple((k, v) for k, v in ref.items() if v),
            evidence=(*base_evidence, matched_by))

    keys: dict[str, WorkloadIdentity] = {}
    agent_ids = ids.get(agent_container, [])
    keys[uid] = identity(agent_container, agent_ids[0] if agent_ids else "", "matched by pod uid")
    for container, container_ids in ids.items():
        for container_id in container_ids:
            found = identity(container, container_id, f"matched by container id of {container}")
            for key in _id_keys(container_id):
                keys.setdefault(key, found)
    return keys


# ---- the index --------------------------------------------------------------------------------

class WorkloadIndex:
    """The classified pods a watcher has seen, by every key an event may name them by.

    Writers (the watch thread) hold a lock; `match` reads without one (a dict lookup is atomic), so a
    pod being updated is, for an instant, matched by its old or its new keys."""

    def __init__(self, selector: LabelSelector | str = DEFAULT_SELECTOR, cluster_id: str = DEFAULT_CLUSTER_ID):
        self.selector = LabelSelector.parse(selector) if isinstance(selector, str) else selector
        self.cluster_id = cluster_id
        self._keys: dict[str, WorkloadIdentity] = {}
        self._pods: dict[str, tuple[str, tuple[str, ...]]] = {}  # uid → (namespace, keys it owns)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: EnrichSettings) -> "WorkloadIndex":
        return cls(settings.selector, settings.cluster_id)

    def __len__(self) -> int:
        return len(self._pods)

    def match(self, key: str) -> WorkloadIdentity | None:
        """The workload a pod UID or container id (as given, 64-hex or 12-hex) names."""
        return self._keys.get(key)

    def upsert(self, pod: dict) -> bool:
        """Add or refresh a pod; a pod whose labels no longer classify it is dropped. True when indexed."""
        metadata = _dict(pod.get("metadata"))
        uid = _text(metadata.get("uid"))
        if not uid:
            return False
        keys = pod_identities(pod, self.selector, self.cluster_id)
        with self._lock:
            self._drop(uid)
            if not keys:
                return False
            owned = []
            for key, identity in keys.items():
                if key not in self._keys:
                    self._keys[key] = identity
                    owned.append(key)
            self._pods[uid] = (_text(metadata.get("namespace")), tuple(owned))
        return True

    def remove(self, uid: str) -> bool:
        with self._lock:
            return self._drop(uid)

    def replace(self, pods: Iterable[dict], namespace: str | None = None) -> None:
        """A fresh listing of `namespace` (None: of every namespace): pods missing from it are gone."""
        seen = set()
        for pod in pods:
            self.upsert(pod)
            seen.add(_text(_dict(pod.get("metadata")).get("uid")))
        with self._lock:
            for uid, (ns, _) in list(self._pods.items()):
                if uid not in seen and (namespace is None or ns == namespace):
                    self._drop(uid)

    def _drop(self, uid: str) -> bool:
        entry = self._pods.pop(uid, None)
        if entry is None:
            return False
        for key in entry[1]:
            self._keys.pop(key, None)
        return True
