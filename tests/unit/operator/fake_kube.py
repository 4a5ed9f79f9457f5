"""An in-memory stand-in for anysentry.operator.kube.Kube: enough API-server behaviour (objects by
kind/namespace/name, uid, resourceVersion, generation on spec change, merge patch, apply, status
subresource, generateName, label selectors on list) for the handlers to run as plain functions
without a cluster."""

from __future__ import annotations

import copy
import itertools
import uuid

from anysentry.events.workloads import LabelSelector
from anysentry.operator.kube import PLURALS, KubeError

_BY_PLURAL = {plural: kind for kind, (_, plural) in PLURALS.items()}


def merge(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class FakeKube:
    def __init__(self):
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.calls: list[tuple] = []
        self._rv = itertools.count(1)

    # ---- helpers -----------------------------------------------------------------------------
    def put(self, obj: dict) -> dict:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
        return copy.deepcopy(obj)

    def events(self, reason: str | None = None) -> list[dict]:
        return [o for (k, _, _), o in self.objects.items() if k == "Event" and (reason is None or o["reason"] == reason)]

    def writes(self, verb: str | None = None) -> list[tuple]:
        return [c for c in self.calls if c[0] != "get" and c[0] != "list" and (verb is None or c[0] == verb)]

    # ---- the Kube interface ------------------------------------------------------------------
    def get(self, kind, namespace, name, subresource=None):
        self.calls.append(("get", kind, namespace, name))
        obj = self.objects.get((kind, namespace or "", name))
        return copy.deepcopy(obj) if obj else None

    def list(self, kind, namespace=None, *, label_selector=None, field_selector=None):
        self.calls.append(("list", kind, namespace))
        selector = LabelSelector.parse(label_selector or "")  # `k=v`, `k!=v`, `k`, `!k`, `k in (...)`, comma-separated
        return [copy.deepcopy(o) for (k, ns, _), o in sorted(self.objects.items())
                if k == kind and (namespace is None or ns == namespace)
                and selector.matches((o.get("metadata") or {}).get("labels") or {})]

    def create(self, manifest, namespace=None):
        self.calls.append(("create", manifest["kind"], namespace, manifest["metadata"].get("name")))
        manifest = copy.deepcopy(manifest)
        meta = manifest["metadata"]
        meta.setdefault("namespace", namespace or "")
        if "name" not in meta:
            meta["name"] = meta.pop("generateName", "x.") + uuid.uuid4().hex[:5]
        if (manifest["kind"], meta["namespace"], meta["name"]) in self.objects:
            raise KubeError(409, "AlreadyExists", f"{meta['name']} exists")
        return self.put(manifest)

    def apply(self, manifest, *, force=True):
        self.calls.append(("apply", manifest["kind"], manifest["metadata"].get("namespace"), manifest["metadata"]["name"]))
        manifest = copy.deepcopy(manifest)
        meta = manifest["metadata"]
        key = (manifest["kind"], meta.get("namespace", ""), meta["name"])
        current = self.objects.get(key)
        if current is None:
            return self.put(manifest)
        updated = copy.deepcopy(current)
        for field, value in manifest.items():
            if field == "metadata":
                for mkey, mvalue in value.items():
                    if isinstance(mvalue, dict) and mkey in ("labels", "annotations"):
                        updated["metadata"][mkey] = {**updated["metadata"].get(mkey, {}), **mvalue}
                    else:
                        updated["metadata"][mkey] = mvalue
            elif field != "status":
                updated[field] = value
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if updated == current:
            return copy.deepcopy(current)
        return self.put(updated)

    def merge_patch(self, kind, namespace, name, patch, subresource=None):
        self.calls.append(("patch" if subresource != "status" else "patch-status", kind, namespace, name))
        key = (kind, namespace or "", name)
        current = self.objects.get(key)
        if current is None:
            raise KubeError(404, "NotFound", name)
        if subresource == "status":
            patch = {"status": patch.get("status")}
        else:
            patch = {k: v for k, v in patch.items() if k != "status"}
        updated = merge(current, patch)
        if updated.get("spec") != current.get("spec"):
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return self.put(updated)

    def delete(self, kind, namespace, name):
        self.calls.append(("delete", kind, namespace, name))
        return self.objects.pop((kind, namespace or "", name), None) is not None

    def request(self, method, url, body=None, *, query=None, content_type="application/json", timeout=None):
        parts = url.strip("/").split("/")
        ns = parts[parts.index("namespaces") + 1] if "namespaces" in parts else None
        plural = parts[parts.index("namespaces") + 2] if "namespaces" in parts else parts[-2]
        name = parts[-1]
        kind = _BY_PLURAL[plural]
        if method == "PATCH" and "apply-patch" in content_type:
            return self.apply(body)
        if method == "PATCH":
            return self.merge_patch(kind, ns, name, body)
        if method == "GET":
            return self.get(kind, ns, name)
        raise NotImplementedError(method)
