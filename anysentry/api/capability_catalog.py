"""The capabilities catalog (SPEC §13): what module `security-center` declares to an agent, kept
apart from the request handling in `capabilities` so the catalog reads as data.

Module `security-center` has four operations: `assessRuntimeAction` (the runtime guard, §12),
`recordSecurityEvents` (the universal ingest request, §8.3), `buildEvidenceBundle` (§26) and
`planNextActions` (§21.6). Each operation's params are described once, as a JSON Schema (draft
2020-12); its parameter list, its request body schema and the dry-run validation all derive from
that one description, so what `describe` says is exactly what `dryRun` checks."""

from __future__ import annotations

from anysentry.events.generic import SOURCE_TYPES
from anysentry.judge import guard as G

MODULE = "security-center"
MODULE_PATH = "/security-center"
ENDPOINT = "/security-center/capabilities"
ACTIONS = ("list", "search", "describe", "execute")
DIALECT = "https://json-schema.org/draft/2020-12/schema"

# ---------------------------------------------------------------- params schemas

TIME_TYPES = ["last_30m", "last_1h", "last_2h", "last_3h", "last_1d", "last_7d", "last_30d", "custom"]
SEVERITIES = ["info", "low", "medium", "high", "critical"]
TIME = ["string", "number"]


def _s(description: str, limit: int = 512, **extra) -> dict:
    return {"type": "string", "maxLength": limit, "description": description, **extra}


def _time_filter(default: str) -> dict:
    return {
        "timeType": {"type": "string", "enum": TIME_TYPES, "default": default,
                     "description": "Time window; `custom` uses startTime..endTime."},
        "startTime": {"type": TIME, "description": "Window start for `custom`: ISO-8601, `YYYY-MM-DD HH:MM:SS` (UTC) or epoch s/ms."},
        "endTime": {"type": TIME, "description": "Window end for `custom` (capped at now)."},
    }


_TEXT_INPUT = ["string", "object", "array"]
GUARD_PARAMS = {
    "type": "object",
    "additionalProperties": False,
    "description": "The action an agent is about to take (§12.1). Never put secrets in these fields.",
    "properties": {
        "autonomy": {"type": "string", "enum": list(G.AUTONOMY_MODES), "default": G.DEFAULT_AUTONOMY,
                     "description": "suggest: never stronger than warn; guarded: block becomes require_approval; "
                                    "auto: block stays block."},
        "stage": {"type": "string", "enum": list(G.STAGES) + sorted(G.STAGE_ALIASES), "default": G.DEFAULT_STAGE,
                  "description": "Where in the agent loop the action happens; aliases map to input, plan, tool, "
                                 "retrieval, memory, llm, output, feedback, runtime.",
                  "example": "tool"},
        "action": _s("The action as text (tool stage: used as argv when command is absent).", 4096),
        "toolName": _s("The tool being called.", 256, example="bash"),
        "toolArgs": {"type": ["object", "array", "string"],
                     "description": "The tool arguments (recorded as progressive.toolArgs)."},
        "command": {"type": ["string", "array"], "items": {"type": "string"}, "maxItems": 128,
                    "description": "The command line (string, shell-split) or argv list.", "example": "git status"},
        "argv": {"type": ["array", "string"], "items": {"type": "string"}, "maxItems": 128,
                 "description": "argv, read by the fallback checks."},
        "target": _s("What the action reaches: a path, URL, host or model endpoint.", 2048),
        "resource": _s("Alternative to target.", 2048),
        "input": {"type": _TEXT_INPUT, "description": "Input text (input stage)."},
        "prompt": {"type": _TEXT_INPUT, "description": "Prompt text."},
        "output": {"type": _TEXT_INPUT, "description": "Output text (output stage)."},
        "model": _s("The model name (llm stage).", 256),
        "subject": _s("A short summary of the action.", 2000),
        "labels": {"type": "object", "maxProperties": 20, "additionalProperties": {"type": ["string", "number", "boolean"]},
                   "description": "Caller labels, recorded as progressive.label.<name>."},
        "evidence": {"type": ["object", "array", "string"], "description": "Caller evidence (recorded as progressive.evidence)."},
        "workspacePath": _s("Workspace of the agent.", 1024),
        "agentId": _s("Agent id."),
        "sessionId": _s("Agent session id."),
        "userId": _s("User on whose behalf the agent acts."),
        "traceId": _s("Trace id to correlate with.", 256),
        "runId": _s("Run id (e.g. a deployment or job).", 512, example="deploy-42"),
        "collectorId": _s("Collector id.", 256),
        "sourceId": _s("Ingestion source id.", 256),
        "sourceName": _s("Ingestion source name (default progressive-security-runtime-client).", 256),
        "token": _s("Ingest token of the source, when it requires one (prefer the X-AnySentry-Ingest-Token header).", 512),
        "constraints": {"type": "object", "additionalProperties": False,
                        "properties": {"autonomy": {"type": "string", "enum": list(G.AUTONOMY_MODES)}},
                        "description": "Alternative place for autonomy."},
    },
}

_EVENT_PROPERTIES = {
    "id": _s("Producer event id (idempotency).", 256), "sourceEventId": _s("Producer event id (idempotency).", 256),
    "at": {"type": TIME, "description": "Event time: epoch s/ms, ISO-8601 or display format."},
    "timestamp": {"type": TIME, "description": "Alternative to at."},
    "kind": _s("Event kind or alias (tool, egress, dns, file, llm, llm_api, ssl, security, finding, process, runtime, ...).", 128),
    "eventKind": _s("Event kind or alias (wins over kind).", 128),
    "category": _s("Event category override.", 32), "eventCategory": _s("Event category override.", 32),
    "workspacePath": _s("Workspace.", 1024), "agentId": _s("Agent id."), "sessionId": _s("Session id."),
    "userId": _s("User id."), "traceId": _s("Trace id.", 256), "spanId": _s("Span id.", 256),
    "parentSpanId": _s("Parent span id.", 256), "runId": _s("Run id."), "taskId": _s("Task id.", 256),
    "collectorId": _s("Collector id.", 256), "nodeName": _s("Node name.", 256),
    "pid": {"type": ["integer", "string"]}, "uid": {"type": ["integer", "string"]}, "cwd": _s("Working directory.", 1024),
    "argv": {"type": ["array", "string"], "items": {"type": ["string", "number", "boolean"]}, "description": "Command argv."},
    "command": {"type": ["string", "array"], "items": {"type": ["string", "number", "boolean"]}, "description": "Command line or argv."},
    "peer": _s("Network peer.", 1024), "port": {"type": ["integer", "string"]}, "query": _s("DNS query.", 1024),
    "path": _s("File path.", 4096), "sni": _s("TLS server name.", 1024), "endpoint": _s("Endpoint (LLM or network).", 2048),
    "content": {"type": ["string", "object", "array"], "description": "Content (ssl_content)."},
    "data": {"type": ["string", "object", "array"], "description": "Alternative to content."},
    "promptTokens": {"type": ["integer", "string"]}, "completionTokens": {"type": ["integer", "string"]},
    "status": _s("Status (security: failed/error marks a finding; process: exit status).", 256),
    "runtimeKind": _s("Runtime event kind.", 256), "subject": _s("Short summary.", 2000),
    "rawPreview": {"type": ["string", "object", "array"], "description": "Raw input preview (redacted before storage)."},
    "tokenCount": {"type": ["number", "string"]}, "latencyMs": {"type": ["number", "string"]},
    "attributes": {"type": "object", "description": "Flat attributes: string, number or boolean values (redacted, ≤120 keys)."},
    "source": {"type": "string", "enum": ["api", "synthetic", "observer"], "default": "api"},
}
EVENT_SCHEMA = {"type": "object", "properties": _EVENT_PROPERTIES,
                "description": "One event (§8.3.2); producer verdict/severity are ignored: the judge decides."}
INGEST_PARAMS = {
    "type": ["object", "array"],
    "description": "The universal ingest request (§8.3): {events: [...]}, {event: {...}} or one top-level event, "
                   "a structured CloudEvent (its envelope attributes and extensions are accepted), or an array of "
                   "requests or CloudEvents.",
    "items": {"type": "object"}, "maxItems": 500,
    "properties": {
        "sourceId": _s("Ingestion source id.", 256), "sourceName": _s("Ingestion source name.", 256),
        "sourceType": {"type": "string", "enum": list(SOURCE_TYPES), "default": "custom", "description": "Source type."},
        "token": _s("Ingest token (prefer the X-AnySentry-Ingest-Token header).", 512),
        "nodeName": _s("Node name default.", 256),
        "events": {"type": "array", "maxItems": 500, "items": EVENT_SCHEMA, "description": "Events (at most 500)."},
        "event": EVENT_SCHEMA,
        **{k: v for k, v in _EVENT_PROPERTIES.items() if k not in ("source",)},
    },
}
_IDS = ("auditId", "edgeId", "eventId", "incidentId", "alertId", "taskId", "objectiveId", "issueId", "deliveryId", "windowId",
        "workspacePath", "agentId", "collectorId", "sourceId", "traceId", "runId", "sessionId")
BUNDLE_PARAMS = {
    "type": "object",
    "additionalProperties": False,
    "description": "Evidence bundle query (§26.1): one primary selector (precedence audit > topology edge > delivery > "
                   "maintenance window > objective > task > alert > incident > event > coverage issue > scope).",
    "properties": {
        **_time_filter("last_30d"),
        **{k: _s(f"Exact {k} selector.", 1024) for k in _IDS},
        "limit": {"type": "integer", "minimum": 10, "maximum": 100, "default": 60, "description": "Events at most."},
    },
}
PLAN_PARAMS = {
    "type": "object",
    "additionalProperties": False,
    "description": "Remediation query plus plan options (§21.5, §21.6).",
    "properties": {
        **_time_filter("last_3h"),
        "includeBacklog": {"type": "boolean", "default": True, "description": "Active tasks regardless of the window."},
        **{k: _s(f"Exact {k} pin.", 200) for k in ("taskId", "incidentId", "alertId", "eventId", "objectiveId", "issueId")},
        "status": {"type": "string", "enum": ["open", "in_progress", "blocked", "done", "dismissed", "active"],
                   "description": "Candidates with this status (default: not done/dismissed)."},
        "severity": {"type": "string", "enum": SEVERITIES},
        "sourceType": {"type": "string", "enum": ["incident", "alert", "coverage"]},
        "actionKind": {"type": "string", "enum": ["source", "collector", "policy", "credential", "ownership", "investigate",
                                                  "network", "file"]},
        "q": _s("Free text.", 200),
        "workspacePath": _s("Exact workspace.", 1024), "agentId": _s("Exact agent."), "collectorId": _s("Exact collector.", 256),
        "sourceId": _s("Exact ingestion source.", 256), "owner": _s("Owner.", 120),
        "limit": {"type": "integer", "minimum": 1, "maximum": 200},
        "maxActions": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
        "includeCompletedSteps": {"type": "boolean", "default": False},
    },
}

# ---------------------------------------------------------------- output schemas

_STR_OR_NULL = {"type": ["string", "null"]}
GUARD_RESULT = {
    "type": "object",
    "required": ["schemaVersion", "module", "operation", "capabilityId", "autonomy", "stage", "policyAction",
                 "recommendedAction", "accepted", "eventId", "verdict", "tier", "severity", "riskCategory", "reason", "evidence"],
    "properties": {
        "schemaVersion": {"const": G.RESULT_SCHEMA}, "module": {"const": MODULE}, "operation": {"const": G.OPERATION},
        "capabilityId": {"const": G.CAPABILITY_ID}, "autonomy": {"enum": list(G.AUTONOMY_MODES)},
        "stage": {"enum": list(G.STAGES)}, "policyAction": {"enum": list(G.POLICY_ACTIONS)},
        "recommendedAction": {"enum": ["continue", "review", "stop"]}, "accepted": {"type": "boolean"},
        "sourceId": _STR_OR_NULL, "eventId": _STR_OR_NULL, "traceId": _STR_OR_NULL, "runId": _STR_OR_NULL,
        "verdict": {"enum": ["allow", "block", "escalate"]}, "tier": {"enum": ["Rules", "Llm", "Agent"]},
        "severity": {"enum": SEVERITIES}, "riskCategory": {"type": "string"}, "reason": {"type": "string"},
        "evidence": {"type": "object", "properties": {"eventId": _STR_OR_NULL, "eventsHref": _STR_OR_NULL,
                                                      "bundleHint": {"type": "object"}}},
    },
}
INGEST_RESULT = {
    "type": "object",
    "required": ["accepted", "acceptedEvents", "rejectedEvents", "items"],
    "properties": {
        "accepted": {"type": "boolean"}, "sourceId": _STR_OR_NULL, "acceptedEvents": {"type": "integer"},
        "rejectedEvents": {"type": "integer"},
        "items": {"type": "array", "items": {"type": "object", "required": ["index", "accepted"], "properties": {
            "index": {"type": "integer"}, "accepted": {"type": "boolean"}, "reason": {"type": "string"},
            **{k: {"type": ["string", "null"]} for k in ("eventId", "traceId", "spanId", "runId", "verdict", "tier",
                                                          "severity", "riskCategory", "decisionStatus", "evaluationId")}}}},
    },
}
_LISTS = ("events", "incidents", "alerts", "remediations", "objectives", "notificationDeliveries", "maintenanceWindows",
          "coverageIssues", "agents", "workspaces", "sources", "collectors", "audits")
BUNDLE_RESULT = {
    "type": "object",
    "required": ["schemaVersion", "bundleId", "generatedAt", "scope", "summary", "primary"],
    "properties": {
        "schemaVersion": {"const": "anysentry.evidence_bundle.v1"}, "bundleId": {"type": "string"},
        "generatedAt": {"type": "string"},
        "scope": {"type": "object", "properties": {"primaryType": {"enum": [
            "audit", "topology", "notification", "maintenance", "objective", "remediation", "alert", "incident", "event",
            "coverage", "scope"]}}},
        "summary": {"type": "object"}, "primary": {"type": "object"}, "timeline": {"type": "object"},
        "topology": {"type": "object"}, **{k: {"type": "array"} for k in _LISTS},
    },
}
PLAN_RESULT = {
    "type": "object",
    "required": ["schemaVersion", "module", "operation", "generatedAt", "scope", "summary", "actions"],
    "properties": {
        "schemaVersion": {"const": "anysentry.progressive.next_action_plan.v1"}, "module": {"const": MODULE},
        "operation": {"const": "planNextActions"}, "generatedAt": {"type": "string"}, "scope": {"type": "object"},
        "summary": {"type": "object", "properties": {k: {"type": "integer"} for k in (
            "totalCandidates", "returnedActions", "criticalActions", "overdueActions", "approvalRequiredActions")}},
        "actions": {"type": "array", "items": {"type": "object", "required": ["actionId", "taskId", "rank", "priority"],
                                               "properties": {"priority": {"enum": ["critical", "high", "medium", "low"]},
                                                              "needsApproval": {"type": "boolean"},
                                                              "evidence": {"type": "object"},
                                                              "nextSteps": {"type": "array"}}}},
    },
}

# ---------------------------------------------------------------- the catalog

_GUARD_EXAMPLE = {"action": "execute", "module": MODULE, "operation": "assessRuntimeAction",
                  "params": {"autonomy": "guarded", "stage": "tool", "toolName": "bash",
                             "command": "bash -lc curl http://169.254.169.254/latest/meta-data",
                             "agentId": "coder-1", "sessionId": "s-1", "runId": "deploy-42", "workspacePath": "team/app"}}
SPECS = (
    {"name": "assessRuntimeAction", "action": "execute", "resource": "runtimeAction",
     "tags": ["security", "runtime-guard", "guard", "enforcement", "policy", "agent"],
     "aliases": ["security.runtimeGuard", "assessAction"],
     "description": "Judge an agent action before it runs (tool call, command, retrieval, memory, LLM call, prompt or "
                    "output) and get a policy action: allow (proceed), warn (surface), require_approval (needs a human) "
                    "or block (must stop). The action is recorded as an evidence event.",
     "params": GUARD_PARAMS, "result": GUARD_RESULT,
     "examples": [{"title": "Guard a shell command", "request": _GUARD_EXAMPLE,
                   "response": {"policyAction": "require_approval", "recommendedAction": "review", "verdict": "escalate",
                                "severity": "critical", "riskCategory": "systemic_risk"}},
                  {"title": "Validate only (no writes)", "request": {**_GUARD_EXAMPLE, "dryRun": True}}]},
    {"name": "recordSecurityEvents", "action": "create", "resource": "securityEvents",
     "tags": ["security", "events", "ingest", "evidence", "telemetry"],
     "aliases": ["security.eventIngest", "recordEvents"],
     "description": "Record security events (tool executions, network egress, DNS, file access, LLM calls, content, "
                    "findings) with the universal ingest request; every event is judged and stored.",
     "params": INGEST_PARAMS, "result": INGEST_RESULT,
     "examples": [{"title": "Record a tool execution and a finding", "request": {
         "action": "execute", "module": MODULE, "operation": "recordSecurityEvents",
         "params": {"sourceName": "my-agent", "agentId": "coder-1", "sessionId": "s-1", "events": [
             {"kind": "tool", "command": "git status"},
             {"kind": "finding", "status": "failed", "subject": "dependency scan failed"}]}}}]},
    {"name": "buildEvidenceBundle", "action": "get", "resource": "evidenceBundle",
     "tags": ["security", "evidence", "bundle", "investigation", "audit", "read-only"],
     "aliases": ["security.evidenceBundle", "buildBundle"],
     "description": "Build a read-only evidence bundle around an event, incident, alert, remediation task, objective, "
                    "coverage issue, delivery, maintenance window, audit record, topology edge or a scope "
                    "(workspace, agent, collector, source, trace, run, session), following exact links.",
     "params": BUNDLE_PARAMS, "result": BUNDLE_RESULT,
     "examples": [{"title": "Bundle around a guard decision", "request": {
         "action": "execute", "module": MODULE, "operation": "buildEvidenceBundle", "params": {"eventId": "evt_0123456789abcdef"}}}]},
    {"name": "planNextActions", "action": "execute", "resource": "nextActions",
     "tags": ["security", "remediation", "next-actions", "plan", "triage"],
     "aliases": ["security.nextActions"],
     "description": "Rank open remediation work (from incidents, alerts and coverage issues) into the next actions to "
                    "take, with priority, approval needs, steps and an evidence bundle hint per action.",
     "params": PLAN_PARAMS, "result": PLAN_RESULT,
     "examples": [{"title": "Top three actions for a workspace", "request": {
         "action": "execute", "module": MODULE, "operation": "planNextActions",
         "params": {"workspacePath": "team/app", "maxActions": 3}}}]},
)
CONSTRAINTS_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {"noNetworkActivity": {"type": "boolean"}, "noDestructiveActions": {"type": "boolean"},
                   "maxRiskLevel": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
                   "autonomy": {"type": "string", "enum": list(G.AUTONOMY_MODES)}},
}


def _type_name(schema: dict) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(kind)
    return kind or "any"


def _parameters(params: dict) -> list[dict]:
    required = set(params.get("required", ()))
    out = []
    for name, schema in params["properties"].items():
        entry = {"name": name, "in": "params", "type": _type_name(schema), "required": name in required,
                 "description": schema.get("description", "")}
        for key in ("enum", "default", "example"):
            if key in schema:
                entry[key] = schema[key]
        out.append(entry)
    return out


def _body_schema(spec: dict) -> dict:
    return {
        "$schema": DIALECT, "title": f"{MODULE}.{spec['name']} request", "type": "object",
        "required": ["action", "module", "operation", "params"], "additionalProperties": False,
        "properties": {
            "action": {"const": "execute"}, "module": {"const": MODULE}, "operation": {"const": spec["name"]},
            "params": spec["params"], "constraints": CONSTRAINTS_SCHEMA, "dryRun": {"type": "boolean"},
            "sessionId": {"type": "string", "maxLength": 512},
            "shaped": {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false", "1", "0"]}]},
        },
    }


def _operation(spec: dict) -> dict:
    return {
        "name": spec["name"], "description": spec["description"], "method": "POST", "path": ENDPOINT,
        "operationId": f"{MODULE}.{spec['name']}", "resource": spec["resource"], "action": spec["action"],
        "tags": list(spec["tags"]), "aliases": list(spec["aliases"]), "parameters": _parameters(spec["params"]),
        "inputSchema": {"contentType": "application/json", "body": _body_schema(spec)},
        "outputSchema": {"status": 200, "envelope": "standard", "contentTypes": ["application/json"],
                         "data": {"$schema": DIALECT, **spec["result"]}},
        "examples": spec["examples"],
    }


OPERATIONS = {spec["name"]: _operation(spec) for spec in SPECS}
MODULES = {MODULE: {"name": MODULE, "description": "AnySentry security center: guard agent actions at runtime, record "
                    "security events, build evidence bundles and plan next remediation actions.",
                    "path": MODULE_PATH, "operations": list(OPERATIONS.values())}}
ALIASES = {alias: (MODULE, spec["name"]) for spec in SPECS for alias in spec["aliases"]}
ALIASES.update({f"{MODULE}.{name}": (MODULE, name) for name in OPERATIONS})
COMPATIBILITY = {
    "sourceImplementation": "anysentry-kubernetes", "dispatch": "module + operation + params",
    "supportedActions": list(ACTIONS), "shapedOptIn": True,
    "legacyCapabilityAliases": {alias: f"{m}.{o}" for alias, (m, o) in ALIASES.items() if not alias.startswith(MODULE + ".")},
}
