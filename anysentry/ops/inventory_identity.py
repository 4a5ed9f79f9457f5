"""Agent identity and the people overlay of the inventory: metadata, human review and the identity
snapshot (SPEC §24.3, §24.4, §24.6).

What people said about an agent — metadata (owner, team, criticality, ...) and a review decision that
overrides the detected classification — is matched to events by identity (`agentAssetId` and the
identity keys of §4.2), not by name alone. It lives apart from the event facts (`inventory`) because
it is state people write and the pipeline consults on every event (`review_for_event`, the
`/events/list` overlay), while the facts are read per request; the snapshot hands the same decisions
(and the identities observed in the last hour) to forwarders."""

from __future__ import annotations

import functools
import hashlib
import logging
import time

import orjson

from anysentry.events.ids import hash_id
from anysentry.events.redact import redact_text, sanitize_attributes
from anysentry.events.timefmt import display_time, iso_time, now_ms
from anysentry.ops.book import Book
from anysentry.store.event_items import agent_asset_id as _asset_id
from anysentry.ops.fields import text_list, json_object as _json

log = logging.getLogger("anysentry.ops.inventory")

CLASSIFICATIONS = ("confirmed_agent", "probable_agent", "unknown", "non_agent")
REVIEW_DECISIONS = ("confirmed_agent", "unknown", "non_agent", "clear")
CRITICALITIES = ("low", "medium", "high", "critical")
CLASS_SQL = "classification"  # materialised column (store/schema.py)
SNAPSHOT_SCHEMA = "anysentry.workload_identity_snapshot.v1"
SNAPSHOT_WINDOW_MS = 3_600_000
SNAPSHOT_CACHE_SECS = 5.0
METADATA_TEXT = (("displayName", 200), ("owner", 120), ("team", 120), ("environment", 64), ("note", 2000),
                 ("agentAssetId", 64), ("physicalWorkloadId", 256), ("agentInstanceId", 256))


# ---- small helpers -------------------------------------------------------------------------------

def clean(value: object, limit: int = 256) -> str:
    """Trimmed, value-redacted text; containers and None become ""."""
    if value is None or isinstance(value, (dict, list, tuple, set)):
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return redact_text(str(value).strip())[:limit]


def clean_list(value: object, limit: int = 64, item_limit: int = 256) -> list[str]:
    return text_list(value, limit, item_limit, clean)


def clean_ref(value: object) -> dict:
    """A workloadRef: flat strings, key- and value-redacted (§5.2)."""
    if not isinstance(value, dict):
        return {}
    return sanitize_attributes(value, max_keys=32, max_value=256)


# ---- identity (§4.2, §7.2) -----------------------------------------------------------------------

def asset_id_of(key: str) -> str:
    return "agent_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def agent_asset_id(workspace: str, agent: str, attribution: dict | None = None, process: dict | None = None) -> str:
    return _asset_id(agent, workspace, attribution, process)


def detected_classification(attribution: dict | None, judgment: dict | None = None) -> str:
    for source in (attribution, judgment):
        if isinstance(source, dict) and source.get("classification") in CLASSIFICATIONS:
            return source["classification"]
    return "unknown"


def identity_ids(workspace: str, agent: str, session: str, attribution: dict | None, process: dict | None) -> set[str]:
    """Identity keys of an event a review can match (§24.4)."""
    attr = attribution if isinstance(attribution, dict) else {}
    proc = process if isinstance(process, dict) else {}
    ref = attr.get("workloadRef") if isinstance(attr.get("workloadRef"), dict) else {}
    ids = {str(v) for v in (attr.get("physicalWorkloadId"), attr.get("agentInstanceId"), ref.get("podUid"),
                            ref.get("containerId"), ref.get("systemdUnit"), proc.get("systemdUnit")) if v}
    if ref.get("podUid"):
        ids.add(f"k8s:{ref['podUid']}:{ref.get('containerName') or ''}")
    host, boot = proc.get("hostId"), proc.get("bootId")
    if host and boot and attr.get("rootPid") not in (None, ""):
        ids.add(f"{host}:{boot}:{attr['rootPid']}")
    if host and boot and proc.get("pid") and proc.get("startTimeTicks"):
        ids.add(f"{host}:{boot}:{proc['pid']}:{proc['startTimeTicks']}")
    return ids


# ---- books -----------------------------------------------------------------------------------------

class MetadataBook(Book):
    """Agent metadata (§24.3), one record per (workspacePath, agentId)."""

    table_name = "agent_metadata"
    id_field = "metadataId"
    max_records = 20_000


class ReviewBook(Book):
    """Human review decisions (§24.4), one per (workspacePath, agentId); shares the metadata table."""

    table_name = "agent_metadata"
    id_field = "reviewId"
    max_records = 20_000


@functools.lru_cache(maxsize=8192)  # alerts look the owner up with every event of an incident
def metadata_id(workspace: str, agent: str) -> str:
    return hash_id("meta", [workspace, agent])


def review_id(workspace: str, agent: str) -> str:
    return hash_id("rev", [workspace, agent])


def _times(record: dict, keys=("createdAt", "updatedAt", "reviewedAt")) -> dict:
    out = {k: v for k, v in record.items() if not k.startswith("_")}
    for key in keys:
        if out.get(key):
            out[key] = display_time(out[key])
    return out


class IdentityOverlay:
    """Metadata and review books of the inventory and what reads them; `Inventory` adds the event facts."""

    def __init__(self, engine):
        self.engine = engine
        self.metadata = MetadataBook()
        self.reviews = ReviewBook()
        self._review_index: dict[str, dict] | None = None
        self.reviews.change_listeners.append(lambda _r: self._invalidate())
        self._snapshot_cache: dict[str, tuple[float, dict, tuple]] = {}

    # ---- metadata ------------------------------------------------------------------------------
    def metadata_for(self, workspace: str, agent: str) -> dict | None:
        return self.metadata.get(metadata_id(workspace or "", agent or ""))

    def has_agent_metadata(self, workspace: str, agent: str) -> bool:
        return self.metadata_for(workspace, agent) is not None

    def owner_of(self, workspace: str, agent: str, source_id: str = "") -> tuple[str, str]:
        """(owner, team): agent metadata first, else the ingestion source record (§16.2)."""
        meta = self.metadata_for(workspace, agent) if agent else None
        if meta and (meta.get("owner") or meta.get("team")):
            return meta.get("owner") or "", meta.get("team") or ""
        sources = getattr(self.engine, "sources", None)
        source = sources.get(source_id) if (sources is not None and source_id) else None
        if source:
            return source.get("owner") or "", source.get("team") or ""
        return "", ""

    def put_metadata(self, agent: str, body: dict, *, actor: dict | None = None, now: int | None = None) -> dict:
        """`PUT /agents/:agentId/metadata` (caller checks `workspacePath`); absent fields are kept."""
        now = now or now_ms()
        agent = clean(agent, 256)
        workspace = clean(body.get("workspacePath"), 1024)
        key = metadata_id(workspace, agent)
        record = self.metadata.get(key)
        creating = record is None
        if creating:
            record = {"metadataId": key, "agentId": agent, "workspacePath": workspace, "tags": [], "identityKeys": [],
                      "workloadRef": {}, "createdAt": now}
            for name, _ in METADATA_TEXT:
                record[name] = ""
            record["criticality"] = ""
        for name, limit in METADATA_TEXT:
            if name in body:
                record[name] = clean(body.get(name), limit)
        if "criticality" in body:
            value = clean(body.get("criticality"), 16).lower()
            record["criticality"] = value if value in CRITICALITIES else ""
        if "tags" in body:
            record["tags"] = clean_list(body.get("tags"), 32, 64)
        if "identityKeys" in body:
            record["identityKeys"] = clean_list(body.get("identityKeys"))
        if "workloadRef" in body:
            record["workloadRef"] = clean_ref(body.get("workloadRef"))
        record["updatedAt"] = max(now, (record.get("updatedAt") or 0) + 1) if not creating else now
        if actor and actor.get("id"):
            record["updatedBy"] = clean(actor.get("id"), 160)
        self.metadata.put(record)
        audit = getattr(self.engine, "audit", None)
        if audit is not None:
            audit.record("agent.metadata.updated", "agent", agent,
                         f"metadata of agent {agent} in {workspace} {'created' if creating else 'updated'}",
                         actor=actor, details={"agentId": agent, "workspacePath": workspace,
                                               "agentAssetId": record.get("agentAssetId") or "",
                                               "owner": record.get("owner"), "team": record.get("team"),
                                               "environment": record.get("environment"),
                                               "criticality": record.get("criticality"),
                                               "changed": sorted(k for k in body if k != "workspacePath")[:40]})
        return record

    def metadata_item(self, record: dict) -> dict:
        out = _times(record)
        review = self.review_for(record.get("workspacePath", ""), record.get("agentId", ""))
        if review is not None:
            out["reviewDecision"] = review["decision"]
        if not out.get("agentAssetId"):
            out["agentAssetId"] = asset_id_of(f"logical:{record.get('workspacePath', '')}:{record.get('agentId', '')}")
        return out

    async def metadata_list(self, now: int | None = None) -> dict:
        """`GET /agents/metadata`: every record, marked `metadataOnly` when no event was seen in 30 days."""
        now = now or now_ms()
        records = sorted(self.metadata.values(), key=lambda r: (r.get("workspacePath", ""), r.get("agentId", "")))
        seen: dict[tuple[str, str], int] = {}
        agents = sorted({r.get("agentId", "") for r in records if r.get("agentId")})
        store = getattr(self.engine, "store", None)
        if agents and store is not None:
            try:
                rows = await store.aquery_rows(
                    f"SELECT workspacePath, agentId, max(at) FROM {store.events_table} "
                    "WHERE at >= {start:UInt64} AND agentId IN {agents:Array(String)} "
                    "GROUP BY workspacePath, agentId LIMIT 20000",
                    {"start": now - 30 * 86_400_000, "agents": agents})
                seen = {(ws, agent): int(at) for ws, agent, at in rows}
            except Exception as exc:
                log.warning("metadata reconciliation read failed: %s", exc)
        items = []
        for record in records:
            item = self.metadata_item(record)
            last = seen.get((record.get("workspacePath", ""), record.get("agentId", "")))
            item["metadataOnly"] = last is None
            if last:
                item["lastSeen"] = display_time(last)
            items.append(item)
        reviews = [self.review_item(r) for r in sorted(self.reviews.values(), key=lambda r: -(r.get("updatedAt") or 0))]
        return {"items": items, "reviews": reviews, "total": len(items), "updateTime": display_time(now)}

    # ---- review --------------------------------------------------------------------------------
    def _invalidate(self) -> None:
        self._review_index = None

    def _index(self) -> dict[str, dict]:
        if self._review_index is None:
            index: dict[str, dict] = {}
            for review in sorted(self.reviews.values(), key=lambda r: r.get("updatedAt") or 0):
                for key in review.get("_ids", []):
                    index[f"id:{key}"] = review
                index[f"agent:{review.get('workspacePath', '')}\0{review.get('agentId', '')}"] = review
            self._review_index = index
        return self._review_index

    def review_for(self, workspace: str, agent: str, ids: set[str] | None = None) -> dict | None:
        """The review matching an identity: exact (workspace, agent), then agent in any workspace,
        then any identity key (§24.4)."""
        if not len(self.reviews.records):
            return None
        index = self._index()
        found = index.get(f"agent:{workspace or ''}\0{agent or ''}") or index.get(f"agent:\0{agent or ''}")
        if found is None and ids:
            for key in ids:
                found = index.get(f"id:{key}")
                if found is not None:
                    break
        return found

    def has_reviews(self) -> bool:
        return len(self.reviews.records) > 0

    def review_for_event(self, event: dict) -> dict | None:
        if not len(self.reviews.records):
            return None
        attribution, process = _json(event.get("attribution")), _json(event.get("process"))
        ids = identity_ids(event.get("workspacePath", ""), event.get("agentId", ""), event.get("sessionId", ""),
                           attribution, process)
        if event.get("sessionId"):
            ids.add(str(event["sessionId"]))
        return self.review_for(event.get("workspacePath", ""), event.get("agentId", ""), ids)

    def overlay(self, event: dict) -> str | None:
        """The review decision for an event (the `/events/list` overlay of `effectiveClassification`)."""
        review = self.review_for_event(event)
        return review["decision"] if review is not None else None

    def effective_classification(self, event: dict, detected: str | None = None) -> str:
        review = self.review_for_event(event)
        if review is not None:
            return review["decision"]
        if detected is not None:
            return detected
        return detected_classification(_json(event.get("attribution")), _json(event.get("judgment")))

    def put_review(self, agent: str, body: dict, *, actor: dict | None = None, now: int | None = None) -> dict:
        """`PUT /agents/:agentId/review` (caller validates the decision)."""
        now = now or now_ms()
        agent = clean(agent, 256)
        workspace = clean(body.get("workspacePath"), 1024)
        decision = clean(body.get("decision"), 32).lower()
        key = review_id(workspace, agent)
        audit = getattr(self.engine, "audit", None)
        if decision == "clear":
            existed = self.reviews.get(key) is not None
            self.reviews.remove(key)
            self._invalidate()
            if audit is not None:
                audit.record("agent.review.cleared", "agent", agent, f"review of agent {agent} in {workspace or 'any workspace'} cleared",
                             actor=actor, details={"agentId": agent, "workspacePath": workspace, "cleared": existed})
            return {"agentId": agent, "workspacePath": workspace, "decision": "clear", "cleared": existed,
                    "updateTime": display_time(now)}
        record = self.reviews.get(key) or {"reviewId": key, "agentId": agent, "workspacePath": workspace, "createdAt": now}
        previous = record.get("decision")
        record.update({
            "decision": decision,
            "currentClassification": clean(body.get("currentClassification"), 32),
            "agentAssetId": clean(body.get("agentAssetId"), 64),
            "identityKeys": clean_list(body.get("identityKeys")),
            "physicalWorkloadId": clean(body.get("physicalWorkloadId"), 256),
            "agentInstanceId": clean(body.get("agentInstanceId"), 256),
            "workloadRef": clean_ref(body.get("workloadRef")),
            "note": clean(body.get("note"), 2000),
            "reviewedAt": now, "updatedAt": now,
            "reviewedBy": clean((actor or {}).get("id") or "operator", 160),
        })
        ref = record["workloadRef"]
        ids = set(record["identityKeys"])
        ids.update(v for v in (record["physicalWorkloadId"], record["agentInstanceId"], ref.get("podUid"),
                               ref.get("containerId"), ref.get("systemdUnit")) if v)
        if ref.get("podUid"):
            ids.add(f"k8s:{ref['podUid']}:{ref.get('containerName') or ''}")
        record["_ids"] = sorted(ids)
        self.reviews.put(record)
        self._invalidate()
        if audit is not None:
            audit.record("agent.review.updated", "agent", agent,
                         f"agent {agent} in {workspace or 'any workspace'} reviewed as {decision}",
                         actor=actor, details={"agentId": agent, "workspacePath": workspace, "decision": decision,
                                               "previousDecision": previous,
                                               "currentClassification": record["currentClassification"],
                                               "agentAssetId": record["agentAssetId"],
                                               "identityKeys": record["identityKeys"][:20]})
        return record

    @staticmethod
    def review_item(record: dict) -> dict:
        return _times(record)

    # ---- identity snapshot (§24.6) -------------------------------------------------------------
    async def snapshot(self, node_name: str = "", *, now: int | None = None) -> dict:
        now = now or now_ms()
        node_name = clean(node_name, 256)
        reviews_state = self._reviews_state()
        cached = self._snapshot_cache.get(node_name)
        if cached is not None and time.monotonic() - cached[0] < SNAPSHOT_CACHE_SECS and cached[2] == reviews_state:
            return {**cached[1], "generatedAt": iso_time(now)}
        entries: list[dict] = []
        for review in sorted(self.reviews.values(), key=lambda r: -(r.get("updatedAt") or 0)):
            ids = [*review.get("_ids", [])]
            for extra in (review.get("agentId"), review.get("agentAssetId")):
                if extra and extra not in ids:
                    ids.append(extra)
            ref = review.get("workloadRef") or {}
            entries.append({
                "ids": ids, "classification": review["decision"], "physicalWorkloadId": review.get("physicalWorkloadId") or "",
                "source": "manual_review", "environment": ref.get("environment") or "",
                "agentScopeId": review.get("agentId") or "", "agentId": review.get("agentId") or "",
                "workspacePath": review.get("workspacePath") or "", "agentInstanceId": review.get("agentInstanceId") or "",
                "workloadRef": ref, "confidence": 1.0, "reviewedAt": iso_time(review.get("reviewedAt") or now),
                "evidence": [f"manual review by {review.get('reviewedBy') or 'operator'}"]
                + ([review["note"]] if review.get("note") else []),
            })
        errors: list[str] = []
        store = getattr(self.engine, "store", None)
        if store is not None:
            try:
                entries.extend(await self._observed_entries(store, node_name, now))
            except Exception as exc:
                log.warning("identity snapshot read failed: %s", exc)
                errors.append("observed workloads unavailable")
        digest = hashlib.sha1(orjson.dumps(entries, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        snapshot = {"schemaVersion": SNAPSHOT_SCHEMA, "version": f"v_{digest}", "generatedAt": iso_time(now),
                    "ready": not errors, "nodeName": node_name, "entries": entries, "errors": errors}
        if len(self._snapshot_cache) > 256:
            self._snapshot_cache.clear()
        self._snapshot_cache[node_name] = (time.monotonic(), snapshot, reviews_state)
        return snapshot

    def _reviews_state(self) -> tuple:
        return len(self.reviews.records), max((r.get("updatedAt") or 0 for r in self.reviews.values()), default=0)

    async def _observed_entries(self, store, node_name: str, now: int) -> list[dict]:
        """Workloads with an identity classification seen in the last hour (agents and non-agents)."""
        where = ["at >= {start:UInt64}", f"{CLASS_SQL} IN ('confirmed_agent', 'probable_agent', 'non_agent')"]
        params: dict = {"start": now - SNAPSHOT_WINDOW_MS}
        if node_name:
            where.append("(JSONExtractString(attribution, 'workloadRef', 'nodeName') = {node:String} "
                         "OR JSONExtractString(attributes, 'collectorNode') = {node:String})")
            params["node"] = node_name
        rows = await store.aquery_dicts(
            "SELECT workspacePath, agentId, argMax(attribution, at) AS lastAttribution, argMax(process, at) AS lastProcess "
            f"FROM {store.events_table} WHERE {' AND '.join(where)} GROUP BY workspacePath, agentId LIMIT 2000", params)
        out = []
        for row in rows:
            attribution, process = _json(row["lastAttribution"]), _json(row["lastProcess"])
            ref = attribution.get("workloadRef") if isinstance(attribution.get("workloadRef"), dict) else {}
            ids = sorted(identity_ids(row["workspacePath"], row["agentId"], "", attribution, process))
            if not ids:
                continue
            if self.review_for(row["workspacePath"], row["agentId"], set(ids)) is not None:
                continue  # the manual review entry above already speaks for it
            out.append({
                "ids": ids, "classification": detected_classification(attribution),
                "physicalWorkloadId": attribution.get("physicalWorkloadId") or "",
                "source": str(attribution.get("source") or ""), "environment": ref.get("environment") or "",
                "agentScopeId": attribution.get("agentScopeId") or row["agentId"], "agentId": row["agentId"],
                "workspacePath": row["workspacePath"], "agentInstanceId": attribution.get("agentInstanceId") or "",
                "workloadRef": ref, "confidence": float(attribution.get("confidence") or 0),
                "evidence": [clean(e, 300) for e in attribution.get("evidence", [])][:10]
                if isinstance(attribution.get("evidence"), list) else [],
            })
        return out
