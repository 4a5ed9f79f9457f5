"""The dashboard aggregates of SPEC §14.3, computed in SQL over the latest revision of each event.

Every aggregate reads one sub-query (`latest()`): per event (`GROUP BY cityHash64(eventId)`, rows with
a final `decisionStatus`, §29.1) a single `argMax(packed, decisionUpdatedAt)`, where `packed` is one
UInt64 holding just the decision fields that aggregate needs (verdict, tier, severity, risk category,
noise flag, tokens) as small codes. Each separate argMax costs ~40 ms per million rows and one
numeric argMax about as much as one LowCardinality argMax, so packing keeps an aggregate to one
pass. `riskScore` is derived from the latest verdict and severity exactly as the judge computes it
(§10.3). Identity fields, the same in every revision, come from `any()`. Visibility is the list's
(`scope`, `includeUnknown`, `noise`, exact identity filters), so the dashboard counts what the list
shows; the list's decision filters (verdict, tier, q) do not apply to aggregates."""

from __future__ import annotations

import math
from dataclasses import replace

from anysentry.events.timefmt import display_time, now_ms
from anysentry.judge.decision import SEVERITIES, TIERS, VERDICTS
from anysentry.judge.risk import RISK_LEVEL_TEXT, RISK_LEVELS, TAXONOMY, risk_level
from anysentry.store.queries import FINAL_STATUSES, NOISE_SQL, STATS_SAMPLE, EventQuery, Sql, _clamp
from anysentry.store.window import TimeWindow

# codes are 1-based positions (ClickHouse indexOf); 0 means a value outside the list
VERDICT_CODES = ("allow", "block", "escalate")
TIER_CODES = ("Rules", "Llm", "Agent")
CATEGORY_CODES = ("benign",) + tuple(TAXONOMY)
ALLOW, BLOCK, ESCALATE = 1, 2, 3
LLM, AGENT = 2, 3
RISKY = "v IN (2, 3)"

_array = lambda values: "[" + ", ".join(f"'{v}'" for v in values) + "]"  # noqa: E731 (constants only)
_codes = lambda values: _array(values) + ", [" + ", ".join(str(i + 1) for i in range(len(values))) + "], 0"  # noqa: E731
TOKEN_CAP = (1 << 44) - 1
# name → (per-row code, bits). Codes are 1-based positions; 0 is a value outside the list.
FIELDS = {
    "v": (f"transform(verdict, {_codes(VERDICT_CODES)})", 2),
    "t": (f"transform(tier, {_codes(TIER_CODES)})", 2),
    "sev": (f"transform(severity, {_codes(SEVERITIES)})", 3),
    "cat": (f"transform(riskCategory, {_codes(CATEGORY_CODES)})", 4),
    "noise": (NOISE_SQL, 1),
    "tokens": (f"least(tokenCount, {TOKEN_CAP})", 44),
}
# §10.3 riskScore from the latest verdict and severity (allow → 0), as the judge computes it
SCORE_SQL = "if(v = 1, 0, transform(sev, [1, 2, 3, 4, 5], [8, 28, 52, 76, 95], 8))"

# the three dashboard groups, each listing every taxonomy entry of its riskType (§10.1, §14.3)
GROUPS = (
    ("system", "systemRisks", "System risks", "#dc2626"),
    ("communication", "communicationRisks", "Communication risks", "#d97706"),
    ("atomic", "singleAgentRisks", "Single-agent risks", "#2563eb"),
)
GROUP_MEMBERS = {group: tuple(c for c, (kind, _) in TAXONOMY.items() if kind == group) for group, *_ in GROUPS}

DIMENSIONS = (
    ("command_danger", "Dangerous commands", ("command_danger",)),
    ("prompt_injection", "Prompt injection", ("prompt_injection",)),
    ("data_leak", "Data leakage", ("data_leak", "secret_exfil")),
    ("jailbreak", "Jailbreak", ("prompt_injection",)),
    ("communication_risk", "Anomalous communication", ("communication_risk",)),
    ("systemic_risk", "Systemic risk", ("systemic_risk", "privilege_escalation")),
)
TIER_INFO = (
    ("L1", "L1 rules", "deterministic rules, under 1 ms per event"),
    ("L2", "L2 fast review", "model review of L1 escalations, seconds"),
    ("L3", "L3 deep investigation", "agent investigation, up to ~90 s"),
)
HEALTH_BANDS = ((90, "Excellent"), (75, "Good"), (60, "Fair"), (40, "Poor"), (0, "Critical"))
PERFORMANCE_BUCKETS = 60


def round_half_up(value: float, digits: int = 0) -> float:
    scale = 10 ** digits
    return math.floor(value * scale + 0.5) / scale


def latest(query: EventQuery, sql: Sql, table: str, *, fields: tuple[str, ...] = ("v",),
           identity: dict[str, str] | None = None, extras: dict[str, str] | None = None,
           window: TimeWindow | None = None, where: tuple[str, ...] = ()) -> str:
    """A FROM-able sub-query: one row per visible event, carrying the requested `fields` of its latest
    final revision (one packed argMax; `score` implies `v` and `sev`), the `extras` aggregates
    (`alias → expression`, e.g. `{"at": "max(at)"}`) and identity columns (`alias → column`, any())."""
    wanted = set(fields) | ({"v", "sev"} if "score" in fields else set())
    if query.scope == "agent" and query.noise == "hide":
        wanted.add("noise")
    names = [name for name in FIELDS if name in wanted]  # FIELDS order: tokens (widest) last
    parts, unpack, offset = [], [], 0
    for name in names:
        expr, bits = FIELDS[name]
        parts.append(f"toUInt64({expr}) * {1 << offset}")
        unpack.append(f"intDiv(p, {1 << offset}) % {1 << bits} AS {name}")
        offset += bits
    if "score" in fields:
        unpack.append(f"{SCORE_SQL} AS score")
    aggregates = [f"argMax({' + '.join(parts)}, decisionUpdatedAt) AS p"] if parts else []
    outer = list(unpack)
    for alias, expression in (extras or {}).items():
        aggregates.append(f"{expression} AS x_{alias}")
        outer.append(f"x_{alias} AS {alias}")
    for alias, column in (identity or {}).items():
        aggregates.append(f"any({column}) AS i_{alias}")
        outer.append(f"i_{alias} AS {alias}")
    predicates = query.row_predicates(sql, window=window, exclude_pins=False) + [FINAL_STATUSES, *where]
    hide = " WHERE noise = 0" if "noise" in names else ""
    return (f"(SELECT {', '.join(outer)} FROM (SELECT {', '.join(aggregates)} FROM {table} "
            f"WHERE {' AND '.join(predicates)} GROUP BY cityHash64(eventId)){hide})")


def _query(body: dict) -> EventQuery:
    # aggregates are over decisions: the decision filters of the list do not apply
    return replace(EventQuery.from_body(body), pins=(), verdict="", tier="", q="")


def _rate(part: int, whole: int) -> float:
    return round_half_up(100.0 * part / whole, 1) if whole else 0.0


def _now() -> str:
    return display_time(now_ms())


def health_card(queries, body: dict, **_) -> dict:
    query, sql = _query(body), Sql()
    n, blocks, escalations, tokens = queries.store.query_rows(
        f"SELECT count(), countIf(v = {BLOCK}), countIf(v = {ESCALATE}), sum(tokens) "
        f"FROM {latest(query, sql, queries.table, fields=('v', 'tokens'))}", sql.params)[0]
    n, tokens = int(n), int(tokens)
    score = 100 if n == 0 else int(round_half_up(max(1.0, min(100.0, 100 - 60 * blocks / n - 25 * escalations / n))))
    value, unit = tokens, ""
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if tokens >= threshold:
            value, unit = round_half_up(tokens / threshold, 1), suffix
            break
    return {"healthScore": score, "healthStatusText": next(text for floor, text in HEALTH_BANDS if score >= floor),
            "tokenConsumptionTotal": value, "tokenConsumptionUnit": unit, "tokenCount": tokens, "eventCount": n,
            "blockCount": int(blocks), "escalateCount": int(escalations), "updateTime": _now()}


def explainability_scan(queries, body: dict, **_) -> dict:
    query, sql = _query(body), Sql()
    points = _clamp(body.get("seriesPoints"), 8, 72, 24)
    start = query.window.start
    width = max(1, math.ceil((query.window.end - start + 1) / points))
    source = latest(query, sql, queries.table, fields=("score",), extras={"at": "max(at)"}, identity={"session": "sessionId"})
    bucket = f"toUInt16(least(intDiv(at - {sql.bind(start, 'UInt64')}, {sql.bind(width, 'UInt64')}), {points - 1}))"
    (keys, counts, allowed, scores), blocks, sessions = queries.store.query_rows(
        f"SELECT sumMap([{bucket}], [toUInt64(1)], [toUInt64(v = {ALLOW})], [toUInt64(score)]), "
        f"countIf(v = {BLOCK}), uniqExact(session) FROM {source}", sql.params)[0]
    per_bin = {int(k): (int(c), int(a), int(s)) for k, c, a, s in zip(keys, counts, allowed, scores)}
    safe, risk = [], []
    for i in range(points):
        n, ok_count, score_sum = per_bin.get(i, (0, 0, 0))
        risk_value = round_half_up(score_sum / n, 1) if n else 0.0
        stat_time = display_time(start + i * width)
        safe.append({"statTime": stat_time, "value": round_half_up(100 - risk_value, 1) if n else 0.0, "activationCount": ok_count})
        risk.append({"statTime": stat_time, "value": risk_value, "activationCount": n - ok_count})
    return {"waveSeries": [{"safeSeries": safe, "riskSeries": risk}], "threatInterception": int(blocks),
            "sessionActiveCount": int(sessions), "seriesPoints": points, "updateTime": _now()}


def performance_card(queries, body: dict, **_) -> dict:
    query, sql = _query(body), Sql()
    start = query.window.start
    width = max(1000, math.ceil((query.window.end - start + 1) / PERFORMANCE_BUCKETS))
    source = latest(query, sql, queries.table, fields=(), extras={"at": "max(at)"}, identity={"latency": "latencyMs"})
    bucket = f"toUInt16(least(intDiv(at - {sql.bind(start, 'UInt64')}, {sql.bind(width, 'UInt64')}), {PERFORMANCE_BUCKETS - 1}))"
    (keys, counts), n, latency = queries.store.query_rows(
        f"SELECT sumMap([{bucket}], [toUInt64(1)]), count(), avgIf(latency, latency > 0) FROM {source}", sql.params)[0]
    per_bucket = dict(zip(map(int, keys), map(int, counts)))
    series = [per_bucket.get(i, 0) for i in range(PERFORMANCE_BUCKETS)]
    seconds = width / 1000
    current, peak, avg = series[-1], max(series), int(n) / PERFORMANCE_BUCKETS
    latency = 0.0 if latency is None or (isinstance(latency, float) and math.isnan(latency)) else float(latency)
    return {"componentRequestCount": {"current": current, "peak": peak, "avg": round_half_up(avg, 1)},
            "tps": {"current": round_half_up(current / seconds, 3), "peak": round_half_up(peak / seconds, 3),
                    "avg": round_half_up(avg / seconds, 3)},
            "avgLatency": {"value": round_half_up(latency, 1), "unit": "ms"},
            "bucketSeconds": seconds, "updateTime": _now()}


def _category_counts(queries, query: EventQuery, window: TimeWindow) -> tuple[dict[str, int], dict[str, int]]:
    """Risky (non-allow) events per riskCategory in `window` and in the equal window before it."""
    sql = Sql()
    previous = window.previous()
    span = TimeWindow(previous.start, window.end, window.time_type)
    rows = queries.store.query_rows(
        f"SELECT at >= {sql.bind(window.start, 'UInt64')} AS current, cat, count() "
        f"FROM {latest(query, sql, queries.table, fields=('v', 'cat'), extras={'at': 'max(at)'}, window=span)} "
        f"WHERE {RISKY} GROUP BY current, cat", sql.params)
    now: dict[str, int] = {}
    before: dict[str, int] = {}
    for current, code, n in rows:
        category = CATEGORY_CODES[code - 1] if 0 < code <= len(CATEGORY_CODES) else "other"
        target = now if current else before
        target[category] = target.get(category, 0) + int(n)
    return now, before


def risk_summary(queries, body: dict, **_) -> dict:
    query = _query(body)
    counts, _ = _category_counts(queries, query, query.window)
    cards = [{"riskTypeCode": group, "riskTypeName": name,
              "eventCount": sum(counts.get(c, 0) for c in GROUP_MEMBERS[group])} for group, _, name, _ in GROUPS]
    return {"summaryCards": cards, "updateTime": _now()}


def change_rate(current: int, previous: int) -> float:
    if previous == 0:
        return 100.0 if current else 0.0
    return round_half_up(100.0 * (current - previous) / previous, 1)


def risk_breakdown(queries, body: dict, **_) -> dict:
    query = _query(body)
    now, before = _category_counts(queries, query, query.window)
    out: dict = {}
    for group, key, _, color in GROUPS:
        items = [{"riskCode": c, "riskName": TAXONOMY[c][1], "eventCount": now.get(c, 0),
                  "previousCount": before.get(c, 0), "changeRate": change_rate(now.get(c, 0), before.get(c, 0))}
                 for c in GROUP_MEMBERS[group]]
        out[key] = {"totalCount": sum(i["eventCount"] for i in items), "displayColor": color, "items": items}
    out["updateTime"] = _now()
    return out


def dimension_score(count: int) -> int:
    return 0 if count <= 0 else 1 if count == 1 else 2 if count <= 3 else 3


def composite_score(score_sum: float, events: int, risky: int) -> int:
    """§14.3: min(100, round(mean(riskScore) + 6·√(non-allow count)))."""
    if not events:
        return 0
    return int(min(100, round_half_up(score_sum / events + 6 * math.sqrt(risky))))


def level_of_composite(composite: int) -> str:
    return RISK_LEVELS[min(len(RISK_LEVELS) - 1, composite // 22)]


def highest_risk(queries, body: dict, **_) -> dict:
    """The session with the largest summed riskScore; its dimension counts come from the same pass
    (one countIf per dimension), its user and workspace from its newest row (a sort-key lookup)."""
    query, sql = _query(body), Sql()
    source = latest(query, sql, queries.table, fields=("score", "cat"), extras={"at": "max(at)"},
                    identity={"session": "sessionId"})
    dimensions = ", ".join(
        f"countIf({RISKY} AND cat IN ({', '.join(str(CATEGORY_CODES.index(c) + 1) for c in members)}))"
        for _, _, members in DIMENSIONS)
    top = queries.store.query_rows(
        f"SELECT session, sum(score) AS total, max(at) AS last, count(), countIf({RISKY}), {dimensions} "
        f"FROM {source} GROUP BY session ORDER BY total DESC, last DESC, session LIMIT 1", sql.params)
    if not top:
        return {"sessionId": "", "userId": "", "workspacePath": "", "riskLevel": "safe",
                "riskLevelText": RISK_LEVEL_TEXT["safe"], "compositeScore": 0, "lastEventTime": "", "eventCount": 0,
                "riskyEventCount": 0, "updateTime": _now(),
                "riskDimensions": [{"dimensionCode": c, "dimensionName": n, "score": 0} for c, n, _ in DIMENSIONS]}
    session, score_sum, last, n, risky, *counts = top[0]
    sql = Sql()
    newest = queries.store.query_rows(
        f"SELECT userId, workspacePath FROM {queries.table} WHERE at = {sql.bind(int(last), 'UInt64')} "
        f"AND sessionId = {sql.bind(session, 'String')} ORDER BY decisionUpdatedAt DESC LIMIT 1", sql.params)
    user, workspace = newest[0] if newest else ("", "")
    composite = composite_score(float(score_sum), int(n), int(risky))
    level = level_of_composite(composite)
    return {"sessionId": session, "userId": user, "workspacePath": workspace, "riskLevel": level,
            "riskLevelText": RISK_LEVEL_TEXT[level], "compositeScore": composite,
            "lastEventTime": display_time(int(last)), "eventCount": int(n), "riskyEventCount": int(risky),
            "riskDimensions": [{"dimensionCode": code, "dimensionName": name, "score": dimension_score(int(count))}
                               for (code, name, _), count in zip(DIMENSIONS, counts)],
            "updateTime": _now()}


def decision_funnel(queries, body: dict, **_) -> dict:
    query, sql = _query(body), Sql()
    n, l2, l3, blocks = (int(x) for x in queries.store.query_rows(
        f"SELECT count(), countIf(t IN ({LLM}, {AGENT})), countIf(t = {AGENT}), countIf(v = {BLOCK}) "
        f"FROM {latest(query, sql, queries.table, fields=('v', 't'))}", sql.params)[0])
    tiers = [{"tierCode": code, "tierName": name, "count": count, "percentage": _rate(count, n), "slaDesc": sla}
             for (code, name, sla), count in zip(TIER_INFO, (n, l2, l3))]
    return {"tiers": tiers, "finalBlock": {"count": blocks, "percentage": _rate(blocks, n)}, "updateTime": _now()}


def agent_observability(queries, body: dict, *, heartbeat_ok: bool | None = None, resource_util: float = 0.0,
                        infra_healthy: bool = True, **_) -> dict:
    query, sql = _query(body), Sql()
    now = now_ms()
    # decision latency: from the event to its latest final decision; transitions: revisions after the first
    source = latest(query, sql, queries.table, fields=("v",),
                    extras={"at": "max(at)", "latency": "greatest(max(decisionUpdatedAt), max(at)) - max(at)", "revisions": "count()"},
                    identity={"agent": "agentId", "session": "sessionId", "category": "eventCategory"})
    row = queries.store.query_rows(
        f"SELECT count(), countIf({RISKY}), countIf(at >= {sql.bind(now - 60_000, 'UInt64')}), "
        f"uniqExact(agent), countIf(category IN ('network', 'llm')), uniqExact(session), "
        f"uniqExactIf(session, v = {BLOCK}), countIf(at >= {sql.bind(now - 300_000, 'UInt64')}), "
        f"avg(latency), sum(revisions) FROM {source}", sql.params)[0]
    n, risky, last_minute, agents, comm, sessions, blocked_sessions, recent, latency, rows = row
    n = int(n)
    transitions = max(0, int(rows) - n)
    error_rate = _rate(int(risky), n)
    latency = 0.0 if not n or latency is None or math.isnan(float(latency)) else float(latency)
    minutes = max(1.0, query.window.span / 60_000)
    return {
        "health": {"heartbeatOk": bool(recent) if heartbeat_ok is None else bool(heartbeat_ok),
                   "resourceUtil": round_half_up(float(resource_util), 1), "errorRate": error_rate,
                   "decisionLatencyMs": round_half_up(latency, 1)},
        "behavioral": {"actionRate": int(last_minute), "decisionPattern": "drift" if error_rate > 25 else "baseline",
                       "stateTransitions": int(transitions),
                       "goalProgress": _rate(int(sessions) - int(blocked_sessions), int(sessions))},
        "system": {"agentCount": int(agents), "commThroughput": round_half_up(int(comm) / minutes, 2),
                   "infraHealthy": bool(infra_healthy)},
        "updateTime": _now(),
    }


def workspace_risk_distribution(queries, body: dict, **_) -> dict:
    query, sql = _query(body), Sql()
    limit = _clamp(body.get("limit"), 1, 500, 100)
    rows = queries.store.query_rows(
        f"SELECT workspace, uniqExact(session), sum(score) AS total, maxIf(sev, {RISKY}) FROM "
        f"{latest(query, sql, queries.table, fields=('score',), identity={'workspace': 'workspacePath', 'session': 'sessionId'})} "
        f"GROUP BY workspace ORDER BY total DESC, workspace LIMIT {sql.bind(limit, 'UInt32')}", sql.params)
    out = []
    for workspace, sessions, total, worst in rows:
        level = risk_level(SEVERITIES[worst - 1] if 0 < worst <= len(SEVERITIES) else None)
        out.append({"workspacePath": workspace, "sessionCount": int(sessions), "totalRiskScore": int(total),
                    "riskLevel": level, "riskLevelText": RISK_LEVEL_TEXT[level]})
    return {"list": out, "updateTime": _now()}


def stats(queries, body: dict) -> dict:
    """Counts over every stored event (or the time filter when one is given), latest revisions."""
    sql = Sql()
    where = "1"
    window = None
    if body.get("timeType"):
        window = TimeWindow.from_body(body)
        where = f"at >= {sql.bind(window.start, 'UInt64')} AND at <= {sql.bind(window.end, 'UInt64')}"
    # verdict and tier of the latest revision in one argMax: position in VERDICTS/TIERS (0 = other)
    code = f"transform(verdict, {_codes(VERDICTS)}) * 4 + transform(tier, {_codes(TIERS)})"
    rows = queries.store.query_rows(
        f"SELECT kind, code, count() FROM (SELECT any(eventKind) AS kind, argMax({code}, decisionUpdatedAt) AS code "
        f"FROM {queries.table} WHERE {where} GROUP BY cityHash64(eventId)) GROUP BY kind, code", sql.params)
    by_kind: dict[str, int] = {}
    by_verdict: dict[str, int] = {}
    by_tier: dict[str, int] = {}
    for kind, packed, n in rows:
        verdict = VERDICTS[packed // 4 - 1] if packed // 4 else "other"
        tier = TIERS[packed % 4 - 1] if packed % 4 else "other"
        by_kind[kind] = by_kind.get(kind, 0) + int(n)
        by_verdict[verdict] = by_verdict.get(verdict, 0) + int(n)
        by_tier[tier] = by_tier.get(tier, 0) + int(n)
    agents, sessions = queries.store.query_rows(
        f"SELECT uniqExact(agentId), uniqExact(sessionId) FROM {queries.table} WHERE {where}", sql.params)[0]
    sample_window = window or TimeWindow(0, now_ms(), "all")
    sample = queries.list_events(query=EventQuery(window=sample_window, noise="include", limit=STATS_SAMPLE),
                                 with_total=False)["items"]
    return {"total": sum(by_kind.values()), "distinctAgents": int(agents), "distinctSessions": int(sessions),
            "byKind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "byVerdict": {v: by_verdict.get(v, 0) for v in VERDICTS} | by_verdict,
            "byTier": {t: by_tier.get(t, 0) for t in TIERS} | by_tier, "sample": sample}


def collector_stats(queries, window: TimeWindow) -> dict[str, dict]:
    """{collectorId: {eventCount, riskyEventCount, agentCount, workspaceCount, lastEventAt (ms), eventCategoryCounts}}."""
    sql = Sql()
    rows = queries.store.query_rows(
        "SELECT collector, count(), countIf(verdict != 'allow'), uniqExact(agent), uniqExact(workspace), max(last), "
        "sumMap([category], [toUInt64(1)]) FROM ("
        "SELECT any(collectorId) AS collector, any(agentId) AS agent, any(workspacePath) AS workspace, "
        "any(eventCategory) AS category, argMax(verdict, decisionUpdatedAt) AS verdict, max(at) AS last "
        f"FROM {queries.table} WHERE at >= {sql.bind(window.start, 'UInt64')} AND at <= {sql.bind(window.end, 'UInt64')} "
        f"AND collectorId != '' AND {FINAL_STATUSES} GROUP BY cityHash64(eventId)) GROUP BY collector",
        sql.params)
    out = {}
    for collector, n, risky, agents, workspaces, last, (categories, counts) in rows:
        out[collector] = {"eventCount": int(n), "riskyEventCount": int(risky), "agentCount": int(agents),
                          "workspaceCount": int(workspaces), "lastEventAt": int(last),
                          "eventCategoryCounts": {str(c): int(k) for c, k in zip(categories, counts)}}
    return out


AGGREGATES = {
    "healthCard": health_card,
    "explainabilityScan": explainability_scan,
    "performanceCard": performance_card,
    "riskSummary": risk_summary,
    "riskBreakdown": risk_breakdown,
    "highestRisk": highest_risk,
    "decisionFunnel": decision_funnel,
    "agentObservability": agent_observability,
    "workspaceRiskDistribution": workspace_risk_distribution,
}
