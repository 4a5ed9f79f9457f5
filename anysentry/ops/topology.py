"""Agent topology (SPEC §24.5): who runs where, who observes them, and what they touch.

Nodes are agents, workspaces, collectors and the targets agents act on (tools by argv[0] basename,
network endpoints `peer:port` or DNS names, files, LLM endpoints, security actions); edges are
`runs_in`, `observed_by`, `executes`, `connects`, `resolves`, `accesses`, `calls_llm`, `triggers`, with
`edgeId = "<edgeType>:<sourceNodeId>-><targetNodeId>"`. The graph comes from one grouped read over
final decisions in the window; pins (edgeId, eventId) are resolved across the retention period.
`graph_from_events` builds the same shapes from a handful of events (evidence bundles)."""

from __future__ import annotations

import logging

from anysentry.events.redact import redact_text
from anysentry.events.timefmt import display_time, now_ms, parse_time
from anysentry.store.window import TimeWindow
from anysentry.ops.fields import clamp as _clamp, json_object as _json, text as _text

log = logging.getLogger("anysentry.ops.topology")

SEVERITIES = ("info", "low", "medium", "high", "critical")
RISK_LEVEL_TEXT = {"none": "No risk", "low": "Low risk", "medium": "Medium risk", "high": "High risk",
                   "critical": "Critical risk"}
RETENTION_MS = 90 * 86_400_000
MAX_ROWS = 50_000
# eventKind → (target node type, edge type, edge label)
KIND_EDGES = {
    "ToolExec": ("tool", "executes", "executes"),
    "Egress": ("network", "connects", "connects to"),
    "Dns": ("network", "resolves", "resolves"),
    "FileAccess": ("file", "accesses", "accesses"),
    "FileDelete": ("file", "accesses", "deletes"),
    "LlmCall": ("llm", "calls_llm", "calls"),
    "LlmApi": ("llm", "calls_llm", "calls"),
    "SecurityAction": ("security", "triggers", "triggers"),
}
TARGET_PREFIX = {"runs_in": "agent:", "observed_by": "agent:", "executes": "tool:", "connects": "network:",
                 "resolves": "network:", "accesses": "file:", "calls_llm": "llm:", "triggers": "security:"}
SUMMARY_TYPES = {"agent": "agentCount", "workspace": "workspaceCount", "collector": "collectorCount",
                 "tool": "toolTargetCount", "network": "externalEndpointCount", "file": "fileTargetCount",
                 "llm": "llmEndpointCount", "security": "securityTargetCount"}

_A = "attributes"
TARGET_SQL = (
    "multiIf("
    "eventKind = 'ToolExec', arrayElement(splitByChar('/', arrayElement(splitByChar(' ', "
    f"trimBoth(if(simpleJSONExtractString({_A}, 'argv') != '', simpleJSONExtractString({_A}, 'argv'), subject)))"
    ", 1)), -1), "
    f"eventKind = 'Egress', if(simpleJSONExtractString({_A}, 'peer') != '', concat(simpleJSONExtractString({_A}, 'peer'), ':', "
    f"if(simpleJSONExtractRaw({_A}, 'port') != '', trim(BOTH '\"' FROM simpleJSONExtractRaw({_A}, 'port')), '0')), "
    "replaceRegexpOne(subject, '^egress → ', '')), "
    f"eventKind = 'Dns', if(simpleJSONExtractString({_A}, 'query') != '', simpleJSONExtractString({_A}, 'query'), "
    "replaceRegexpOne(subject, '^dns ', '')), "
    f"eventKind IN ('FileAccess', 'FileDelete'), if(simpleJSONExtractString({_A}, 'path') != '', "
    f"simpleJSONExtractString({_A}, 'path'), replaceRegexpOne(subject, '^file ', '')), "
    f"eventKind IN ('LlmCall', 'LlmApi'), multiIf(simpleJSONExtractString({_A}, 'sni') != '', simpleJSONExtractString({_A}, 'sni'), "
    f"simpleJSONExtractString({_A}, 'peer') != '', simpleJSONExtractString({_A}, 'peer'), 'llm'), "
    f"eventKind = 'SecurityAction', if(simpleJSONExtractString({_A}, 'kind') != '', simpleJSONExtractString({_A}, 'kind'), "
    "replaceRegexpOne(subject, '^security ', '')), '')"
)
RISKY_SQL = "verdict IN ('block', 'escalate')"
FINAL_SQL = "decisionStatus IN ('succeeded', 'failed', 'timeout')"
SEVERITY_SQL = "multiIf(severity = 'critical', 4, severity = 'high', 3, severity = 'medium', 2, severity = 'low', 1, 0)"


def _strip(text: str, prefix: str) -> str:
    return text[len(prefix):] if text.startswith(prefix) else text


def event_target(event: dict) -> str:
    """The target of one event, exactly as `TARGET_SQL` computes it."""
    kind = event.get("eventKind", "")
    attrs = _json(event.get("attributes"))
    subject = str(event.get("subject") or "")

    def attr(key: str) -> str:
        value = attrs.get(key)
        return "" if value is None or isinstance(value, bool) else str(value)

    if kind == "ToolExec":
        command = (attr("argv") or subject).strip()
        first = command.split(" ")[0] if command else ""
        return first.split("/")[-1]
    if kind == "Egress":
        if attr("peer"):
            return f"{attr('peer')}:{attr('port') or '0'}"
        return _strip(subject, "egress → ")
    if kind == "Dns":
        return attr("query") or _strip(subject, "dns ")
    if kind in ("FileAccess", "FileDelete"):
        return attr("path") or _strip(subject, "file ")
    if kind in ("LlmCall", "LlmApi"):
        return attr("sni") or attr("peer") or "llm"
    if kind == "SecurityAction":
        return attr("kind") or _strip(subject, "security ")
    return ""


def agent_node_id(workspace: str, agent: str) -> str:
    return f"agent:{workspace}|{agent}"


def edge_id(edge_type: str, source: str, target: str) -> str:
    return f"{edge_type}:{source}->{target}"


def parse_edge_id(value: str) -> dict | None:
    """edgeId → {type, source, target, workspacePath, agentId, collectorId?, targetType?, target value?}."""
    edge_type, sep, rest = value.partition(":")
    prefix = TARGET_PREFIX.get(edge_type)
    if not sep or prefix is None:
        return None
    marker = rest.find("->" + prefix)  # the target starts at the first `->agent:`, `->tool:`, ...
    if marker < 0:
        return None
    source, target = rest[:marker], rest[marker + 2:]
    agent_part = target if edge_type in ("runs_in", "observed_by") else source
    if not agent_part.startswith("agent:") or "|" not in agent_part:
        return None
    workspace, _, agent = agent_part[len("agent:"):].rpartition("|")
    out = {"type": edge_type, "source": source, "target": target, "workspacePath": workspace, "agentId": agent}
    if edge_type == "observed_by":
        if not source.startswith("collector:"):
            return None
        out["collectorId"] = source[len("collector:"):]
    elif edge_type == "runs_in":
        if source != f"workspace:{workspace}":
            return None
    else:
        out["targetValue"] = target[len(prefix):]
    return out


def _level(rank: int, risky: int) -> str:
    if not risky:
        return "none"
    return SEVERITIES[max(1, min(4, rank))]


class Graph:
    """Nodes and edges accumulated from fact rows (grouped or one row per event)."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}
        self.edges: dict[str, dict] = {}

    def _node(self, node_id: str, kind: str, label: str, row: dict, **extra) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            node = {"nodeId": node_id, "type": kind, "label": redact_text(label)[:300], **extra,
                    "eventCount": 0, "riskyEventCount": 0, "_rank": 0, "_last": 0}
            self.nodes[node_id] = node
        node["eventCount"] += row["eventCount"]
        node["riskyEventCount"] += row["riskyEventCount"]
        if row["riskyEventCount"]:
            node["_rank"] = max(node["_rank"], row["riskyRank"])
        node["_last"] = max(node["_last"], row["lastAt"])

    def _edge(self, kind: str, source: str, target: str, label: str, row: dict) -> None:
        key = edge_id(kind, source, target)
        edge = self.edges.get(key)
        if edge is None:
            edge = {"edgeId": key, "sourceNodeId": source, "targetNodeId": target, "type": kind, "label": label,
                    "eventCount": 0, "riskyEventCount": 0, "_rank": 0, "_last": 0, "_sample": (-1, 0),
                    "sampleEventId": "", "sampleSubject": "", "_categories": {}}
            self.edges[key] = edge
        edge["eventCount"] += row["eventCount"]
        edge["riskyEventCount"] += row["riskyEventCount"]
        edge["_rank"] = max(edge["_rank"], row["maxRank"])
        edge["_last"] = max(edge["_last"], row["lastAt"])
        sample_key = (1 if row["riskyEventCount"] else 0, row["sampleAt"])
        if row.get("sampleEventId") and sample_key > edge["_sample"]:
            edge["_sample"] = sample_key
            edge["sampleEventId"] = row["sampleEventId"]
            edge["sampleSubject"] = redact_text(row.get("sampleSubject") or "")[:300]
        category = row.get("riskCategory") or ""
        if category and category != "benign":
            entry = edge["_categories"].setdefault(category, {"riskCategory": category,
                                                               "riskName": row.get("riskName") or category,
                                                               "eventCount": 0})
            entry["eventCount"] += row["eventCount"]

    def add(self, row: dict) -> None:
        workspace, agent, collector = row["workspacePath"], row["agentId"], row.get("collectorId") or ""
        agent_id = agent_node_id(workspace, agent)
        self._node(agent_id, "agent", agent, row, subtitle=workspace, agentId=agent, workspacePath=workspace)
        ws_id = f"workspace:{workspace}"
        self._node(ws_id, "workspace", workspace, row, workspacePath=workspace)
        self._edge("runs_in", ws_id, agent_id, "runs in", row)
        if collector:
            cid = f"collector:{collector}"
            self._node(cid, "collector", collector, row, collectorId=collector)
            self._edge("observed_by", cid, agent_id, "observed by", row)
        spec = KIND_EDGES.get(row.get("eventKind", ""))
        target = row.get("target") or ""
        if spec and target:
            node_type, edge_type, label = spec
            target_id = f"{node_type}:{target}"
            self._node(target_id, node_type, target, row, subtitle=row.get("eventKind", ""))
            self._edge(edge_type, agent_id, target_id, label, row)

    @staticmethod
    def node_item(node: dict) -> dict:
        level = _level(node["_rank"], node["riskyEventCount"])
        out = {k: v for k, v in node.items() if not k.startswith("_")}
        out.update(riskLevel=level, riskLevelText=RISK_LEVEL_TEXT[level], lastSeen=display_time(node["_last"]))
        return out

    @staticmethod
    def edge_item(edge: dict) -> dict:
        out = {k: v for k, v in edge.items() if not k.startswith("_")}
        out["maxSeverity"] = SEVERITIES[max(0, min(4, edge["_rank"]))]
        out["lastSeen"] = display_time(edge["_last"])
        out["riskCategories"] = sorted(edge["_categories"].values(), key=lambda c: (-c["eventCount"], c["riskCategory"]))
        return out


def _row_from_event(event: dict) -> dict:
    """A fact row for one event (stored row or list item)."""
    risky = event.get("verdict") in ("block", "escalate")
    rank = SEVERITIES.index(event["severity"]) if event.get("severity") in SEVERITIES else 0
    at = event.get("_at") if isinstance(event.get("_at"), int) else event.get("at")
    if not isinstance(at, int):
        at = parse_time(at, 0)
    return {"workspacePath": event.get("workspacePath", ""), "agentId": event.get("agentId", ""),
            "collectorId": event.get("collectorId", ""), "eventKind": event.get("eventKind", ""),
            "target": event_target(event), "riskCategory": event.get("riskCategory", ""),
            "riskName": event.get("riskName", ""), "eventCount": 1, "riskyEventCount": 1 if risky else 0,
            "maxRank": rank, "riskyRank": rank if risky else 0, "lastAt": at, "sampleAt": at,
            "sampleEventId": event.get("eventId", ""), "sampleSubject": event.get("subject", "")}


def summarize(nodes: list[dict], edges: list[dict]) -> dict:
    summary = {name: 0 for name in SUMMARY_TYPES.values()}
    for node in nodes:
        name = SUMMARY_TYPES.get(node["type"])
        if name:
            summary[name] += 1
    summary.update(nodeCount=len(nodes), edgeCount=len(edges),
                   riskyEdgeCount=sum(1 for e in edges if e["riskyEventCount"]))
    return summary


def render(graph: Graph, pinned: set[str] | None = None, *, include_benign: bool = True, q: str = "",
           limit: int = 1000) -> dict:
    """The wire shape: edges (pinned first, then risky, busy), the nodes they touch, the summary."""
    pinned = pinned or set()
    edges = []
    for edge in graph.edges.values():
        if edge["edgeId"] in pinned:
            edges.append(edge)
            continue
        if not include_benign and not edge["riskyEventCount"]:
            continue
        if q:
            text = " ".join([edge["edgeId"], edge["label"],
                             graph.nodes[edge["sourceNodeId"]]["label"], graph.nodes[edge["targetNodeId"]]["label"]]).lower()
            if q not in text:
                continue
        edges.append(edge)
    edges.sort(key=lambda e: (e["edgeId"] not in pinned, -e["riskyEventCount"], -e["eventCount"], e["edgeId"]))
    edges = edges[:limit]
    node_ids: list[str] = []
    for edge in edges:
        for nid in (edge["sourceNodeId"], edge["targetNodeId"]):
            if nid not in node_ids:
                node_ids.append(nid)
    nodes = [Graph.node_item(graph.nodes[n]) for n in node_ids]
    edge_items = [Graph.edge_item(e) for e in edges]
    return {"nodes": nodes, "edges": edge_items, "summary": summarize(nodes, edge_items)}


def graph_from_events(events: list[dict]) -> dict:
    """The topology of a set of events (evidence bundles): every edge they form, nothing else."""
    graph = Graph()
    for event in events:
        graph.add(_row_from_event(event))
    return render(graph)


class Topology:
    def __init__(self, engine):
        self.engine = engine

    async def rows(self, start: int, end: int, *, workspace: str = "", agent: str = "", collector: str = "",
                   source: str = "", kinds: list[str] | None = None) -> list[dict]:
        store = getattr(self.engine, "store", None)
        if store is None:
            return []
        where = [FINAL_SQL, "at >= {start:UInt64}", "at <= {end:UInt64}"]
        params: dict = {"start": start, "end": end}
        for column, value, name in (("workspacePath", workspace, "ws"), ("agentId", agent, "agent"),
                                    ("collectorId", collector, "collector"), ("sourceId", source, "source")):
            if value:
                where.append(f"{column} = {{{name}:String}}")
                params[name] = value
        if kinds:
            where.append("eventKind IN {kinds:Array(String)}")
            params["kinds"] = kinds
        sql = (
            f"SELECT workspacePath, agentId, collectorId, eventKind, {TARGET_SQL} AS target, riskCategory, "
            "any(riskName) AS riskName, uniqExact(eventId) AS eventCount, "
            f"uniqExactIf(eventId, {RISKY_SQL}) AS riskyEventCount, max({SEVERITY_SQL}) AS maxRank, "
            f"maxIf({SEVERITY_SQL}, {RISKY_SQL}) AS riskyRank, max(at) AS lastAt, "
            f"argMax(eventId, ({RISKY_SQL}, at)) AS sampleEventId, argMax(subject, ({RISKY_SQL}, at)) AS sampleSubject, "
            f"max(at) AS sampleAt "
            f"FROM {store.events_table} WHERE {' AND '.join(where)} "
            f"GROUP BY workspacePath, agentId, collectorId, eventKind, target, riskCategory LIMIT {MAX_ROWS}"
        )
        try:
            rows = await store.aquery_dicts(sql, params)
        except Exception as exc:
            log.warning("topology read failed: %s", exc)
            return []
        for row in rows:
            for key in ("eventCount", "riskyEventCount", "maxRank", "riskyRank", "lastAt", "sampleAt"):
                row[key] = int(row[key] or 0)
        return rows

    async def _event(self, event_id: str) -> dict | None:
        store = getattr(self.engine, "store", None)
        if store is None:
            return None
        try:
            rows = await store.aquery_dicts(
                "SELECT eventId, at, workspacePath, agentId, collectorId, eventKind, subject, attributes, verdict, "
                f"severity, riskCategory, riskName, decisionUpdatedAt FROM {store.events_table} "
                "WHERE eventId = {id:String} ORDER BY decisionUpdatedAt DESC LIMIT 1", {"id": event_id})
        except Exception as exc:
            log.warning("topology event read failed: %s", exc)
            return None
        return rows[0] if rows else None

    async def pinned_edges(self, graph: Graph, edge_pin: str, event_pin: str, now: int, window: TimeWindow) -> set[str]:
        """Add the pinned edges' facts to `graph` (across the retention period); return their ids."""
        pinned: set[str] = set()
        if edge_pin:
            parsed = parse_edge_id(edge_pin)
            if parsed is not None:
                kinds = [k for k, spec in KIND_EDGES.items() if spec[1] == parsed["type"]] or None
                rows = await self.rows(now - RETENTION_MS, now, workspace=parsed["workspacePath"],
                                       agent=parsed["agentId"], collector=parsed.get("collectorId", ""), kinds=kinds)
                if parsed.get("targetValue") is not None:
                    rows = [r for r in rows if r["target"] == parsed["targetValue"]]
                sub = Graph()
                for row in rows:
                    sub.add(row)
                if edge_pin in sub.edges:
                    self._merge(graph, sub, {edge_pin})
                    pinned.add(edge_pin)
        if event_pin:
            event = await self._event(event_pin)
            if event is not None:
                row = _row_from_event(event)
                sub = Graph()
                sub.add(row)
                ids = set(sub.edges)
                context = await self.rows(min(window.start, event["at"]), max(window.end, event["at"]),
                                          workspace=event["workspacePath"], agent=event["agentId"])
                full = Graph()
                for r in context:
                    full.add(r)
                for eid in ids:
                    if eid not in full.edges:  # e.g. a pending revision outside the final-decision read
                        full.edges[eid] = sub.edges[eid]
                        for nid in (sub.edges[eid]["sourceNodeId"], sub.edges[eid]["targetNodeId"]):
                            full.nodes.setdefault(nid, sub.nodes[nid])
                for eid in ids:
                    edge = full.edges[eid]
                    edge["sampleEventId"] = event["eventId"]
                    edge["sampleSubject"] = redact_text(event.get("subject") or "")[:300]
                self._merge(graph, full, ids)
                pinned |= ids
        return pinned

    @staticmethod
    def _merge(graph: Graph, sub: Graph, edge_ids: set[str]) -> None:
        """Pinned edges replace whatever the window read found for them (their counts are all-time)."""
        for eid in edge_ids:
            edge = sub.edges[eid]
            graph.edges[eid] = edge
            for nid in (edge["sourceNodeId"], edge["targetNodeId"]):
                if nid not in graph.nodes:
                    graph.nodes[nid] = sub.nodes[nid]

    async def query(self, body: dict, *, now: int | None = None) -> dict:
        """`POST /agents/topology`."""
        now = now or now_ms()
        body = body if isinstance(body, dict) else {}
        window = TimeWindow.from_body(body, now=now)
        text = lambda key, limit=1024: _text(body.get(key), limit)  # noqa: E731
        edge_pin, event_pin = text("edgeId", 4096), text("eventId", 200)
        workspace, agent, collector, source = text("workspacePath"), text("agentId", 256), text("collectorId", 256), text("sourceId", 256)
        q = text("q", 200).lower()
        include_benign = body.get("includeBenign") is not False and str(body.get("includeBenign")).lower() not in ("false", "0", "no")
        limit = _clamp(body.get("limit"), 20, 1000, 300)
        filtered = bool(workspace or agent or collector or source or q) or not include_benign
        any_pin = bool(edge_pin or event_pin)
        graph = Graph()
        if not any_pin or filtered:
            for row in await self.rows(window.start, window.end, workspace=workspace, agent=agent,
                                       collector=collector, source=source):
                graph.add(row)
        pinned = await self.pinned_edges(graph, edge_pin, event_pin, now, window) if any_pin else set()
        result = render(graph, pinned, include_benign=include_benign, q=q, limit=limit)
        if any_pin and not filtered:
            result = render(_only(graph, pinned), pinned, limit=limit)
        result["updateTime"] = display_time(now)
        return result


def _only(graph: Graph, edge_ids: set[str]) -> Graph:
    out = Graph()
    for eid in edge_ids:
        edge = graph.edges.get(eid)
        if edge is None:
            continue
        out.edges[eid] = edge
        for nid in (edge["sourceNodeId"], edge["targetNodeId"]):
            out.nodes[nid] = graph.nodes[nid]
    return out


def setup(engine) -> Topology:
    topology = Topology(engine)
    engine.topology = topology
    return topology
