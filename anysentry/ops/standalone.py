"""Custom resources applied onto the running engine without Kubernetes (`anysentry serve CONFIG_DIR`).

The same manifests a platform team `kubectl apply`s are read from a folder, validated with the CRD
schemas (`anysentry.resources.manifests`), and applied to the policy, the source registry and the
operations books; the folder is polled, so an edited file takes effect without a restart."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from anysentry.judge.policy import PolicyError, policy_from_manifest
from anysentry.resources.manifests import LoadResult, load_manifests

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
    for kind, area in (("Objective", "objectives"), ("MaintenanceWindow", "maintenance"), ("NotificationRoute", "notifications")):
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
