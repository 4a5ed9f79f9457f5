"""Agents and workspaces inventory (SPEC §24.1, §24.2).

An agent asset is what events say about one (workspacePath, agentId): counts, health and identity
(`agentAssetId`, §4.2), overlaid with what people said about it — metadata (owner, team,
criticality, ...) and a review decision that overrides the detected classification, kept in
`inventory_identity`. Only confirmed and probable agents are listed, plus metadata-only assets (known
to people, not seen in the window).

Event facts come from one grouped read per request over final decisions (`uniqExact(eventId)` over
rows with decisionStatus succeeded/failed/timeout, SPEC §29.1), bounded by the time window.
`event_item` is shared with topology and evidence so an event looks the same everywhere."""

from __future__ import annotations

import logging

from anysentry.events.timefmt import display_time, now_ms
from anysentry.store.window import TimeWindow

# one list-item shape and runtime label for /events/list, inventory, topology and evidence
from anysentry.store.event_items import list_item as _list_item
from anysentry.store.event_items import runtime_of as _runtime_of
from anysentry.ops.fields import clamp as _clamp, json_object as _json
from anysentry.ops.inventory_identity import (CLASSIFICATIONS, CRITICALITIES, IdentityOverlay, agent_asset_id,
                                              asset_id_of, clean, detected_classification, identity_ids)

log = logging.getLogger("anysentry.ops.inventory")

AGENT_CLASSES = ("confirmed_agent", "probable_agent")
HEALTH_STATES = ("risky", "active", "idle", "stale")
HEALTH_RANK = {state: i for i, state in enumerate(HEALTH_STATES)}
SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
RISK_LEVEL_TEXT = {"none": "No risk", "low": "Low risk", "medium": "Medium risk", "high": "High risk",
                   "critical": "Critical risk"}
ACTIVE_MS = 5 * 60_000
IDLE_MS = 60 * 60_000
RETENTION_MS = 90 * 86_400_000
RISKY_SQL = "verdict IN ('block', 'escalate')"
FINAL_SQL = "decisionStatus IN ('succeeded', 'failed', 'timeout')"
SEVERITY_SQL = "multiIf(severity = 'critical', 4, severity = 'high', 3, severity = 'medium', 2, severity = 'low', 1, 0)"
MAX_GROUPS = 20_000


def risk_level(max_severity_rank: int, risky: int) -> str:
    if not risky:
        return "none"
    return SEVERITIES[max(1, min(4, int(max_severity_rank)))]


def activity_state(last_at: int, now: int) -> str:
    age = now - (last_at or 0)
    if last_at and age <= ACTIVE_MS:
        return "active"
    if last_at and age <= IDLE_MS:
        return "idle"
    return "stale"


class Inventory(IdentityOverlay):
    """The overlay (metadata, reviews, snapshot) plus what events say about each asset."""

    # ---- event facts ---------------------------------------------------------------------------
    async def agent_rows(self, window: TimeWindow | None, *, workspaces: list[str] | None = None,
                         agents: list[str] | None = None, collector: str = "", source: str = "",
                         user: str = "", start: int | None = None, end: int | None = None) -> list[dict]:
        """One grouped read: per (workspacePath, agentId) facts over final decisions in the window."""
        store = getattr(self.engine, "store", None)
        if store is None:
            return []
        where = [FINAL_SQL, "at >= {start:UInt64}", "at <= {end:UInt64}"]
        params: dict = {"start": start if start is not None else window.start,
                        "end": end if end is not None else window.end}
        if workspaces:
            where.append("workspacePath IN {wss:Array(String)}")
            params["wss"] = list(workspaces)
        if agents:
            where.append("agentId IN {agents:Array(String)}")
            params["agents"] = list(agents)
        if collector:
            where.append("collectorId = {collector:String}")
            params["collector"] = collector
        if source:
            where.append("sourceId = {source:String}")
            params["source"] = source
        if user:
            where.append("userId = {user:String}")
            params["user"] = user
        # phase 1: counts from narrow columns only (a wide scan must not touch the JSON columns)
        sql = (
            "SELECT workspacePath, agentId, uniqExact(eventId) AS eventCount, "
            f"uniqExactIf(eventId, {RISKY_SQL}) AS riskyEventCount, min(at) AS firstAt, max(at) AS lastAt, "
            "uniqExact(sessionId) AS sessionCount, uniqExact(runId) AS runCount, uniqExact(traceId) AS traceCount, "
            "sum(tokenCount) AS tokenCount, avgIf(latencyMs, latencyMs > 0) AS avgLatencyMs, "
            "argMax(eventId, at) AS lastEventId, "
            f"maxIf({SEVERITY_SQL}, {RISKY_SQL}) AS maxSeverityRank, "
            f"topKIf(1)((riskCategory, riskName), {RISKY_SQL}) AS topRisk, "
            "sumMap([eventCategory], [toUInt64(1)]) AS categories, sumMap([source], [toUInt64(1)]) AS sources, "
            "groupUniqArrayIf(64)(collectorId, collectorId != '') AS collectorIds, "
            "groupUniqArrayIf(64)(sourceId, sourceId != '') AS sourceIds "
            f"FROM {store.events_table} WHERE {' AND '.join(where)} "
            f"GROUP BY workspacePath, agentId LIMIT {MAX_GROUPS}"
        )
        try:
            rows = await store.aquery_dicts(sql, params)
        except Exception as exc:
            log.warning("inventory read failed: %s", exc)
            return []
        if not rows:
            return rows
        # phase 2: identity from each asset's latest event, read by (at, eventId): a few granules
        try:
            latest = await store.aquery_dicts(
                "SELECT eventId, subject, userId, attribution, process, judgment, decisionUpdatedAt "
                f"FROM {store.events_table} WHERE at IN {{ats:Array(UInt64)}} AND eventId IN {{ids:Array(String)}}",
                {"ats": sorted({int(r["lastAt"]) for r in rows}), "ids": sorted({r["lastEventId"] for r in rows})})
        except Exception as exc:
            log.warning("inventory identity read failed: %s", exc)
            latest = []
        by_id: dict[str, dict] = {}
        for row in latest:
            have = by_id.get(row["eventId"])
            if have is None or int(row["decisionUpdatedAt"] or 0) >= int(have["decisionUpdatedAt"] or 0):
                by_id[row["eventId"]] = row
        for row in rows:
            last = by_id.get(row["lastEventId"], {})
            row["lastEventSubject"] = last.get("subject", "")
            row["lastUserId"] = last.get("userId", "")
            row["lastAttribution"] = last.get("attribution")
            row["lastProcess"] = last.get("process")
            row["lastJudgment"] = last.get("judgment")
            row["instances"] = 1
        return rows

    def _open_incidents(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = {}
        incidents = getattr(self.engine, "incidents", None)
        for incident in incidents.values() if incidents is not None else []:
            if incident.get("status") == "open":
                key = (incident.get("workspacePath") or "", incident.get("agentId") or "")
                out[key] = out.get(key, 0) + 1
        return out

    def asset(self, row: dict | None, meta: dict | None, open_count: int, now: int, *,
              workspace: str = "", agent: str = "") -> dict:
        """One inventory item (§24.1) from a fact row and/or a metadata record."""
        row = row or {}
        workspace = row.get("workspacePath", workspace if not meta else meta.get("workspacePath", ""))
        agent = row.get("agentId", agent if not meta else meta.get("agentId", ""))
        attribution, process = _json(row.get("lastAttribution")), _json(row.get("lastProcess"))
        judgment = _json(row.get("lastJudgment"))
        detected = detected_classification(attribution, judgment)
        detected = detected if detected in CLASSIFICATIONS else "unknown"
        ids = identity_ids(workspace, agent, "", attribution, process)
        review = self.review_for(workspace, agent, ids)
        classification = review["decision"] if review is not None else detected
        meta = meta or {}
        ref = attribution.get("workloadRef") if isinstance(attribution.get("workloadRef"), dict) else {}
        asset_id = agent_asset_id(workspace, agent, attribution, process) if row else (
            meta.get("agentAssetId") or asset_id_of(f"logical:{workspace}:{agent}"))
        last_at = int(row.get("lastAt") or 0)
        health = "risky" if open_count else activity_state(last_at, now)
        risky = int(row.get("riskyEventCount") or 0)
        level = risk_level(int(row.get("maxSeverityRank") or 0), risky)
        top = (row.get("topRisk") or [None])[0] if row.get("topRisk") else None
        categories = row.get("categories") or ([], [])
        sources = row.get("sources") or ([], [])
        item = {
            "agentId": agent, "agentAssetId": asset_id, "workspacePath": workspace,
            "userId": row.get("lastUserId") or "",
            "displayName": meta.get("displayName") or attribution.get("agentDisplayName") or None,
            "detectedName": attribution.get("agentDisplayName") or attribution.get("agentScopeId") or ref.get("name") or None,
            "detectedClassification": detected, "classification": classification,
            "owner": meta.get("owner") or None, "team": meta.get("team") or None,
            "environment": meta.get("environment") or None, "criticality": meta.get("criticality") or None,
            "tags": list(meta.get("tags") or []), "note": meta.get("note") or None,
            "runtime": _runtime_of(attribution, process, None)[0] if row else "unknown",
            "locationLabel": _runtime_of(attribution, process, None)[1],
            "instanceCount": max(1, int(row.get("instances") or 0)) if row else 0,
            "confidence": 1.0 if review is not None else float(attribution.get("confidence") or 0),
            "attributionSource": "manual_review" if review is not None else str(attribution.get("source") or ""),
            "attributionEvidence": [clean(e, 300) for e in attribution.get("evidence", [])][:10]
            if isinstance(attribution.get("evidence"), list) else [],
            "physicalWorkloadId": attribution.get("physicalWorkloadId") or meta.get("physicalWorkloadId") or None,
            "agentInstanceId": attribution.get("agentInstanceId") or meta.get("agentInstanceId") or None,
            "workloadRef": ref or meta.get("workloadRef") or None,
            "reviewDecision": review["decision"] if review is not None else None,
            "firstSeen": display_time(row["firstAt"]) if row.get("firstAt") else None,
            "lastSeen": display_time(last_at) if last_at else None,
            "healthState": health, "riskLevel": level, "riskLevelText": RISK_LEVEL_TEXT[level],
            "eventCount": int(row.get("eventCount") or 0), "riskyEventCount": risky, "openIncidentCount": open_count,
            "sessionCount": int(row.get("sessionCount") or 0), "runCount": int(row.get("runCount") or 0),
            "traceCount": int(row.get("traceCount") or 0), "tokenCount": int(row.get("tokenCount") or 0),
            "avgLatencyMs": round(float(row.get("avgLatencyMs") or 0), 2) if row.get("avgLatencyMs") == row.get("avgLatencyMs") else 0.0,
            "topRiskCategory": top[0] if top else None, "topRiskName": top[1] if top else None,
            "lastEventSubject": row.get("lastEventSubject") or "", "lastEventId": row.get("lastEventId") or None,
            "eventCategoryCounts": dict(zip(categories[0], (int(v) for v in categories[1]))),
            "sourceCounts": dict(zip(sources[0], (int(v) for v in sources[1]))),
            "collectorIds": list(row.get("collectorIds") or []), "sourceIds": list(row.get("sourceIds") or []),
            "metadataOnly": not row,
            "_lastAt": last_at, "_matchIds": {asset_id, meta.get("agentAssetId") or ""} - {""},
        }
        return {k: v for k, v in item.items() if v is not None}

    async def assets(self, window: TimeWindow, now: int, **filters) -> list[dict]:
        """Every asset with events matching `filters` in the window (no visibility rule applied)."""
        rows = await self.agent_rows(window, **filters)
        opened = self._open_incidents()
        out = []
        for row in rows:
            key = (row["workspacePath"], row["agentId"])
            out.append(self.asset(row, self.metadata_for(*key), opened.get(key, 0), now))
        return out

    @staticmethod
    def public(item: dict) -> dict:
        return {k: v for k, v in item.items() if not k.startswith("_")}

    # ---- agents inventory (§24.1) --------------------------------------------------------------
    async def agents(self, body: dict, *, now: int | None = None) -> dict:
        now = now or now_ms()
        body = body if isinstance(body, dict) else {}
        window = TimeWindow.from_body(body, now=now)
        text = lambda key, limit=1024: clean(body.get(key), limit)  # noqa: E731
        agent, workspace, asset_pin = text("agentId", 256), text("workspacePath"), text("agentAssetId", 64)
        user = text("userId", 256)
        health = text("healthState", 16).lower()
        health = health if health in HEALTH_STATES else ""
        criticality = text("criticality", 16).lower()
        criticality = criticality if criticality in CRITICALITIES else ""
        owner, environment, tag = text("owner", 120), text("environment", 64), text("tag", 64)
        q = text("q", 200).lower()
        include_unclassified = _truthy(body.get("includeUnclassified"))
        limit = _clamp(body.get("limit"), 1, 500, 100)
        pin_ws = bool(workspace) and not agent
        pin_pair = bool(workspace and agent)
        any_pin = pin_ws or pin_pair or bool(asset_pin)
        filtered = bool(health or criticality or owner or environment or tag or q or user or (agent and not pin_pair))
        opened = self._open_incidents()

        assets: dict[tuple[str, str], dict] = {}
        if not any_pin or filtered:
            for item in await self.assets(window, now, agents=[agent] if agent else None, user=user):
                assets[(item["workspacePath"], item["agentId"])] = item
            for meta in self.metadata.values():
                key = (meta.get("workspacePath", ""), meta.get("agentId", ""))
                if key not in assets and (not agent or key[1] == agent) and not user:
                    assets[key] = self.asset(None, meta, opened.get(key, 0), now)

        def visible(item: dict) -> bool:
            if item.get("metadataOnly"):
                return True
            if item["classification"] in AGENT_CLASSES:
                return True
            return include_unclassified and bool(agent) and item["agentId"] == agent

        def wanted(item: dict) -> bool:
            if not visible(item):
                return False
            if health and item["healthState"] != health:
                return False
            if criticality and item.get("criticality") != criticality:
                return False
            if owner and item.get("owner") != owner:
                return False
            if environment and item.get("environment") != environment:
                return False
            if tag and tag not in item.get("tags", []):
                return False
            if q and q not in " ".join(str(item.get(k) or "") for k in (
                    "agentId", "agentAssetId", "workspacePath", "displayName", "detectedName", "owner", "team",
                    "environment", "note", "locationLabel", "lastEventSubject", "userId")).lower() \
                    and not any(q in t.lower() for t in item.get("tags", [])):
                return False
            return True

        pinned = await self._pinned_assets(now, workspace if any_pin else "", agent if pin_pair else "", asset_pin) \
            if any_pin else []
        pinned_keys = {(p["workspacePath"], p["agentId"]) for p in pinned}
        visible_items = [a for a in assets.values() if visible(a)]
        rows = [a for a in visible_items if (not any_pin or filtered) and wanted(a)
                and (a["workspacePath"], a["agentId"]) not in pinned_keys]
        rows.sort(key=_agent_order)
        pinned.sort(key=_agent_order)
        result = pinned + rows
        summary_base = visible_items + [p for p in pinned if (p["workspacePath"], p["agentId"]) not in assets]
        return {"items": [self.public(a) for a in result[:limit]], "total": len(result),
                "summary": agent_summary(summary_base), "updateTime": display_time(now)}

    async def _pinned_assets(self, now: int, workspace: str, agent: str, asset_pin: str) -> list[dict]:
        """Exact pins across the retention period, metadata-only assets included, no visibility rule."""
        start, opened = now - RETENTION_MS, self._open_incidents()
        metas = [m for m in self.metadata.values()
                 if (workspace and m.get("workspacePath") == workspace and (not agent or m.get("agentId") == agent))
                 or (asset_pin and m.get("agentAssetId") == asset_pin)]
        found: dict[tuple[str, str], dict] = {}
        if workspace:
            for item in await self.assets(None, now, workspaces=[workspace], agents=[agent] if agent else None,
                                          start=start, end=now):
                found[(item["workspacePath"], item["agentId"])] = item
        if asset_pin:
            keys = [(m.get("workspacePath", ""), m.get("agentId", "")) for m in metas if m.get("agentAssetId") == asset_pin]
            if keys:
                items = await self.assets(None, now, workspaces=sorted({k[0] for k in keys}),
                                          agents=sorted({k[1] for k in keys}), start=start, end=now)
            else:  # no metadata names it: the asset id is derived from events, look at every asset
                items = await self.assets(None, now, start=start, end=now)
            for item in items:
                if asset_pin in item["_matchIds"]:
                    found[(item["workspacePath"], item["agentId"])] = item
        for meta in metas:
            key = (meta.get("workspacePath", ""), meta.get("agentId", ""))
            if key not in found:
                item = self.asset(None, meta, opened.get(key, 0), now)
                if not asset_pin or asset_pin in item["_matchIds"] or workspace:
                    found[key] = item
        return list(found.values())

    # ---- workspaces inventory (§24.2) ----------------------------------------------------------
    def workspace_item(self, workspace: str, agents: list[dict], now: int) -> dict:
        states = {s: sum(1 for a in agents if a["healthState"] == s) for s in HEALTH_STATES}
        health = next((s for s in HEALTH_STATES if states[s]), "stale")
        risky = sum(a.get("riskyEventCount", 0) for a in agents)
        level_rank = max((SEVERITIES.index(a["riskLevel"]) if a["riskLevel"] in SEVERITIES else 0 for a in agents), default=0)
        level = risk_level(level_rank, risky)
        last = max((a.get("_lastAt") or 0 for a in agents), default=0)
        firsts = [a["firstSeen"] for a in agents if a.get("firstSeen")]
        collectors = sorted({c for a in agents for c in a.get("collectorIds", [])})

        def rollup(key: str) -> list[str]:
            counts: dict[str, int] = {}
            for a in agents:
                if a.get(key):
                    counts[a[key]] = counts.get(a[key], 0) + 1
            return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

        owners, teams, envs = rollup("owner"), rollup("team"), rollup("environment")
        crit = max((CRITICALITIES.index(a["criticality"]) for a in agents if a.get("criticality") in CRITICALITIES), default=-1)
        categories: dict[str, int] = {}
        for a in agents:
            for k, v in a.get("eventCategoryCounts", {}).items():
                categories[k] = categories.get(k, 0) + v
        tops: dict[tuple[str, str], int] = {}
        for a in agents:
            if a.get("topRiskCategory"):
                key = (a["topRiskCategory"], a.get("topRiskName", ""))
                tops[key] = tops.get(key, 0) + a.get("riskyEventCount", 0)
        top = max(tops.items(), key=lambda kv: kv[1])[0] if tops else None
        maintenance = getattr(self.engine, "maintenance", None)
        window = None
        if maintenance is not None:
            try:
                window = maintenance.active_for_workspace(workspace, now)
            except Exception:
                log.exception("maintenance lookup failed")
        item = {
            "workspacePath": workspace, "healthState": health, "riskLevel": level, "riskLevelText": RISK_LEVEL_TEXT[level],
            "owner": owners[0] if owners else None, "team": teams[0] if teams else None,
            "environment": envs[0] if envs else None, "criticality": CRITICALITIES[crit] if crit >= 0 else None,
            "owners": owners, "teams": teams, "environments": envs,
            "agentCount": len(agents), "activeAgents": states["active"], "idleAgents": states["idle"],
            "staleAgents": states["stale"], "riskyAgents": states["risky"],
            "agentIds": sorted(a["agentId"] for a in agents)[:100],
            "collectorCount": len(collectors), "collectorIds": collectors[:64],
            "eventCount": sum(a.get("eventCount", 0) for a in agents), "riskyEventCount": risky,
            "openIncidentCount": sum(a.get("openIncidentCount", 0) for a in agents),
            "sessionCount": sum(a.get("sessionCount", 0) for a in agents),
            "runCount": sum(a.get("runCount", 0) for a in agents),
            "traceCount": sum(a.get("traceCount", 0) for a in agents),
            "tokenCount": sum(a.get("tokenCount", 0) for a in agents),
            "topRiskCategory": top[0] if top else None, "topRiskName": top[1] if top else None,
            "eventCategoryCounts": categories,
            "firstSeen": min(firsts) if firsts else None, "lastSeen": display_time(last) if last else None,
            "maintenanceActive": window is not None,
            "maintenanceWindowId": window.get("windowId") if window else None,
            "maintenanceTitle": window.get("title") if window else None,
            "_lastAt": last,
        }
        return {k: v for k, v in item.items() if v is not None}

    async def workspaces(self, body: dict, *, now: int | None = None) -> dict:
        now = now or now_ms()
        body = body if isinstance(body, dict) else {}
        window = TimeWindow.from_body(body, now=now)
        text = lambda key, limit=1024: clean(body.get(key), limit)  # noqa: E731
        pin = text("workspacePath")
        health = text("healthState", 16).lower()
        health = health if health in HEALTH_STATES else ""
        criticality = text("criticality", 16).lower()
        criticality = criticality if criticality in CRITICALITIES else ""
        owner, environment, q = text("owner", 120), text("environment", 64), text("q", 200).lower()
        limit = _clamp(body.get("limit"), 1, 500, 100)
        filtered = bool(health or criticality or owner or environment or q)
        opened = self._open_incidents()

        def group(items: list[dict], visibility: bool) -> dict[str, list[dict]]:
            out: dict[str, list[dict]] = {}
            for item in items:
                if visibility and not (item.get("metadataOnly") or item["classification"] in AGENT_CLASSES):
                    continue
                out.setdefault(item["workspacePath"], []).append(item)
            return out

        groups: dict[str, list[dict]] = {}
        if not pin or filtered:
            items = await self.assets(window, now)
            have = {(i["workspacePath"], i["agentId"]) for i in items}
            for meta in self.metadata.values():
                key = (meta.get("workspacePath", ""), meta.get("agentId", ""))
                if key not in have:
                    items.append(self.asset(None, meta, opened.get(key, 0), now))
            groups = group(items, True)
        pinned: list[dict] = []
        if pin:
            items = await self.assets(None, now, workspaces=[pin], start=now - RETENTION_MS, end=now)
            have = {(i["workspacePath"], i["agentId"]) for i in items}
            for meta in self.metadata.values():
                key = (meta.get("workspacePath", ""), meta.get("agentId", ""))
                if meta.get("workspacePath") == pin and key not in have:
                    items.append(self.asset(None, meta, opened.get(key, 0), now))
            if items:
                pinned.append(self.workspace_item(pin, items, now))
        all_items = [self.workspace_item(ws, agents, now) for ws, agents in groups.items()]
        rows = []
        if not pin or filtered:
            for item in all_items:
                if item["workspacePath"] == pin:
                    continue
                if health and item["healthState"] != health:
                    continue
                if criticality and item.get("criticality") != criticality:
                    continue
                if owner and owner not in item.get("owners", []):
                    continue
                if environment and environment not in item.get("environments", []):
                    continue
                if q and q not in " ".join([item["workspacePath"], *item.get("owners", []), *item.get("teams", []),
                                            *item.get("environments", []), *item.get("agentIds", [])]).lower():
                    continue
                rows.append(item)
        rows.sort(key=lambda w: (HEALTH_RANK.get(w["healthState"], 9), -w.get("riskyEventCount", 0), -w.get("_lastAt", 0),
                                 w["workspacePath"]))
        result = pinned + rows
        summary_base = all_items + [p for p in pinned if p["workspacePath"] not in groups]
        summary = {
            "totalWorkspaces": len(summary_base),
            "riskyWorkspaces": sum(1 for w in summary_base if w["healthState"] == "risky"),
            "activeWorkspaces": sum(1 for w in summary_base if w["healthState"] == "active"),
            "idleWorkspaces": sum(1 for w in summary_base if w["healthState"] == "idle"),
            "staleWorkspaces": sum(1 for w in summary_base if w["healthState"] == "stale"),
            "maintenanceWorkspaces": sum(1 for w in summary_base if w.get("maintenanceActive")),
            "totalAgents": sum(w["agentCount"] for w in summary_base),
            "observedEventCount": sum(w["eventCount"] for w in summary_base),
            "riskyEventCount": sum(w["riskyEventCount"] for w in summary_base),
        }
        return {"items": [self.public(w) for w in result[:limit]], "total": len(result), "summary": summary,
                "updateTime": display_time(now)}


# ---- event items (§7.2) ----------------------------------------------------------------------------

def event_item(row: dict, inventory: Inventory | None = None) -> dict:
    """An `AgentEventListItem` (§7.2) exactly as `/events/list` shows it, review overlay included."""
    return _list_item(row, inventory.overlay if inventory is not None else None)


# ---- summaries and ordering --------------------------------------------------------------------------

def _agent_order(item: dict) -> tuple:
    return (HEALTH_RANK.get(item["healthState"], 9), -item.get("riskyEventCount", 0), -(item.get("_lastAt") or 0),
            item["workspacePath"], item["agentId"])


def agent_summary(items: list[dict]) -> dict:
    return {
        "totalAgents": len(items),
        "managedAgents": sum(1 for a in items if a.get("owner") or a.get("team")),
        "productionAgents": sum(1 for a in items if str(a.get("environment") or "").lower() in ("production", "prod")),
        "highCriticalityAgents": sum(1 for a in items if a.get("criticality") in ("high", "critical")),
        "activeAgents": sum(1 for a in items if a["healthState"] == "active"),
        "idleAgents": sum(1 for a in items if a["healthState"] == "idle"),
        "staleAgents": sum(1 for a in items if a["healthState"] == "stale"),
        "riskyAgents": sum(1 for a in items if a["healthState"] == "risky"),
        "openIncidentAgents": sum(1 for a in items if a.get("openIncidentCount")),
        "observedEventCount": sum(a.get("eventCount", 0) for a in items),
        "riskyEventCount": sum(a.get("riskyEventCount", 0) for a in items),
    }


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, (str, int)) and str(value).strip().lower() in ("1", "true", "yes", "on")


def setup(engine) -> Inventory:
    inventory = Inventory(engine)
    engine.inventory = inventory
    engine.register_book(inventory.metadata)
    engine.register_book(inventory.reviews)
    engine.owner_of = inventory.owner_of
    engine.has_agent_metadata = inventory.has_agent_metadata
    engine.review_for_event = inventory.review_for_event
    queries = getattr(engine, "queries", None)
    if queries is not None and hasattr(queries, "overlay") and getattr(queries, "overlay", None) is None:
        queries.overlay = inventory.overlay  # effectiveClassification in /events/list follows reviews
    return inventory
