"""Custom resources applied onto the running engine without Kubernetes (`anysentry serve CONFIG_DIR`).

The same manifests a platform team `kubectl apply`s are read from a folder, validated with the CRD
schemas (`anysentry.resources.manifests`), and applied to the policy, the source registry and the
operations books; the folder is polled, so an edited file takes effect without a restart.

A `NotificationRoute` receiver's webhook URL and HMAC key are read from local secrets (`local_secret`)
into a Secret-sourced channel (`ops.notification_secrets`): held in memory, stored without them. The
folder is applied at start before anything is served or delivered, so after a restart the values are
read again before a channel the store gave back without them is delivered to."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from anysentry.judge.policy import PolicyError, policy_from_manifest
from anysentry.ops.notification_secrets import SECRET_FIELDS, hold_channel
from anysentry.resources.manifests import LoadResult, load_manifests
from anysentry.resources.models import NotificationRoute

log = logging.getLogger("anysentry.config")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def resource_source_id(namespace: str, name: str) -> str:
    """The sourceId of a Source resource: readable, stable, and the same under kubectl and REST."""
    return "src_" + _UNSAFE.sub("-", f"{namespace}_{name}")[:150]


@dataclass
class ApplyReport:
    applied: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def source_body(resource) -> dict:
    spec = resource.to_k8s().get("spec", {})
    return {
        "name": resource.metadata.name,
        "type": spec.get("type", "custom"),
        "enabled": spec.get("enabled", True),
        "requireToken": spec.get("requireToken", False),
        "tokenRotationDays": spec.get("tokenRotationDays", 90),
        "collectorId": spec.get("collectorId", ""),
        "workspacePath": spec.get("workspacePath", ""),
        "owner": spec.get("owner", ""),
        "team": spec.get("team", ""),
        "environment": spec.get("environment", ""),
        "tags": spec.get("tags", []),
        "note": spec.get("note", ""),
    }


def apply_resources(services, result: LoadResult) -> ApplyReport:
    """Apply validated resources; an invalid Policy is reported and never applied."""
    report = ApplyReport(errors=[str(e) for e in result.errors])
    for resource in result.of_kind("Policy"):
        try:
            policy = policy_from_manifest(resource.to_k8s())
            services.policy.set(policy)
            report.applied.append(f"Policy/{resource.name}")
        except PolicyError as exc:
            report.errors.append(f"Policy/{resource.name}: {exc}")
    for resource in result.of_kind("Source"):
        source_id = resource_source_id(resource.metadata.namespace or "default", resource.metadata.name)
        services.sources.upsert(source_id, source_body(resource))
        report.applied.append(f"Source/{resource.name}")
    engine = services.ops
    for resource in result.of_kind("NotificationRoute"):
        receivers, problems = local_receivers(resource)
        obj = resource.to_k8s()
        obj["metadata"].setdefault("namespace", resource.metadata.namespace or "default")
        if apply_route(engine, obj, receivers) is None:
            report.errors.append(f"NotificationRoute/{resource.name}: notifications are not available")
            continue
        report.applied.append(f"NotificationRoute/{resource.name}")
        report.errors.extend(f"NotificationRoute/{resource.name}: {p}" for p in problems)
    for kind, area in (("Objective", "objectives"), ("MaintenanceWindow", "maintenance")):
        book = getattr(engine, area, None)
        apply = getattr(book, "apply_resource", None)
        for resource in result.of_kind(kind):
            if apply is None:
                report.errors.append(f"{kind}/{resource.name}: not supported in this build")
                continue
            try:
                apply(resource)
                report.applied.append(f"{kind}/{resource.name}")
            except Exception as exc:  # one bad object must not stop the others
                report.errors.append(f"{kind}/{resource.name}: {exc}")
    return report


# ---- notification routes: receivers reference Secrets --------------------------------------------

def route_id(obj: dict) -> str:
    from anysentry.ops.objectives import resource_id

    meta = obj["metadata"]
    return resource_id("rou", meta.get("namespace") or "default", meta["name"])


def channel_id(obj: dict, receiver: str) -> str:
    from anysentry.ops.objectives import resource_id

    meta = obj["metadata"]
    return resource_id("chn", meta.get("namespace") or "default", f"{meta['name']}_{receiver}")


def forget_channels(notifier, obj: dict, keep=()) -> None:
    """Remove the receiver channels of NotificationRoute `obj` from the notifier, but those in `keep`."""
    prefix = channel_id(obj, "")
    for cid in [c for c in list(notifier.channels.records) if c.startswith(prefix) and c not in keep]:
        notifier.channels.remove(cid)


def route_record(obj: dict, channel_ids: list[str]) -> dict:
    """The REST route record a NotificationRoute stands for: every process (serve, operator, api
    replicas) builds the same one, so each holds one record per resource."""
    spec = NotificationRoute.model_validate(obj).spec
    match = spec.match
    return {"routeId": route_id(obj), "name": obj["metadata"]["name"], "enabled": spec.enabled, "channelIds": channel_ids,
            "minSeverity": match.minSeverity, "kinds": list(match.kinds), "workspacePath": match.workspace,
            "agentId": match.agent, "collectorId": match.collector, "sourceId": match.source, "owner": match.owner,
            "team": match.team, "q": match.text, "description": spec.description}


# a channel's secret field → the receiver field naming the Secret key that holds it
REF_FIELDS = (("webhookUrl", "webhookUrlSecretRef"), ("signingKey", "hmacKeySecretRef"))


def secret_refs(receiver) -> dict:
    """The Secrets a receiver's values come from (names and keys: nothing secret)."""
    refs = {field_: getattr(receiver, ref_field) for field_, ref_field in REF_FIELDS}
    return {field_: {"name": ref.name, "key": ref.key} for field_, ref in refs.items() if ref is not None}


def route_differs(notifier, body: dict) -> bool:
    """Whether the notifier's route `body["routeId"]` would change by taking `body`: the candidate is
    normalised as the notifier stores it (names and match fields cut, the description redacted), so a
    field longer than the notifier keeps compares equal once held. A field the record lacks counts as
    empty."""
    existing = notifier.routes.get(body["routeId"])
    if existing is None:
        return True
    candidate = dict(existing)
    notifier._apply_route(candidate, body)  # on a copy: the books are not touched
    return any(existing.get(k, [] if isinstance(v, list) else "") != v for k, v in candidate.items())


def apply_route(engine, obj: dict, receivers: dict[str, dict]) -> dict | None:
    """Channels and route in the notifier, changed only when they differ (no audit noise). Each
    receiver's channel is Secret-sourced: the values in `receivers` (read from its Secrets) stay in
    this process's memory, the store gets the channel without them."""
    notifier = getattr(engine, "notifications", None)
    if notifier is None or not hasattr(notifier, "create_route"):
        return None
    resource = NotificationRoute.model_validate(obj)
    spec = resource.spec
    refs = {receiver.name: secret_refs(receiver) for receiver in spec.receivers}
    actor = {"type": "system", "id": "anysentry-operator"}
    channel_ids = []
    for name, values in receivers.items():
        cid = channel_id(obj, name)
        channel_ids.append(cid)
        body = {"channelId": cid, "name": f"{obj['metadata']['name']}/{name}", "enabled": spec.enabled,
                **{k: values.get(k, "") for k in SECRET_FIELDS}}
        hold_channel(notifier, body, refs.get(name, {}), actor)
    forget_channels(notifier, obj, keep=channel_ids)
    body = route_record(obj, channel_ids)
    if route_differs(notifier, body):
        notifier.create_route(body, actor=actor)
    return notifier.routes.get(body["routeId"])


def local_secret(name: str, key: str) -> str | None:
    """A Secret value without Kubernetes: `$ANYSENTRY_SECRETS_DIR/<name>/<key>` (the layout of a
    mounted Secret) or the environment variable `ANYSENTRY_SECRET_<NAME>_<KEY>`."""
    folder = os.environ.get("ANYSENTRY_SECRETS_DIR")
    if folder:
        try:
            return (Path(folder) / name / key).read_text(encoding="utf-8").strip() or None
        except OSError:
            pass
    variable = "ANYSENTRY_SECRET_" + re.sub(r"[^A-Za-z0-9]+", "_", f"{name}_{key}").upper()
    return os.environ.get(variable, "").strip() or None


def local_receivers(resource) -> tuple[dict[str, dict], list[str]]:
    """{receiver: {webhookUrl, signingKey}} from local secrets, and what is missing."""
    out, problems = {}, []
    for receiver in resource.spec.receivers:
        values = {}
        for field_, ref in secret_refs(receiver).items():
            value = local_secret(ref["name"], ref["key"])
            if value is None:
                problems.append(f"receiver {receiver.name}: secret {ref['name']}/{ref['key']} not set "
                                f"(ANYSENTRY_SECRETS_DIR/{ref['name']}/{ref['key']} or ANYSENTRY_SECRET_*)")
            else:
                values[field_] = value
        out[receiver.name] = values
    return out, problems


def _fingerprint(folder: Path) -> tuple:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


class ConfigFolder:
    """Loads a folder of manifests at start and again whenever a file in it changes."""

    def __init__(self, folder: str | Path, poll_secs: float = 2.0):
        self.folder = Path(folder)
        self.poll_secs = poll_secs
        self._seen: tuple = ()
        self.last_report: ApplyReport | None = None

    def load(self, services) -> ApplyReport:
        self._seen = _fingerprint(self.folder) if self.folder.is_dir() else ()
        report = apply_resources(services, load_manifests(self.folder))
        for line in report.errors:
            log.error("configuration: %s", line)
        log.info("configuration from %s: %s", self.folder, ", ".join(report.applied) or "nothing applied")
        self.last_report = report
        return report

    async def watch(self, services) -> None:
        while True:
            await asyncio.sleep(self.poll_secs)
            try:
                current = await asyncio.to_thread(_fingerprint, self.folder) if self.folder.is_dir() else ()
            except OSError:
                continue
            if current != self._seen:
                self.load(services)
