"""The capabilities (progressive) API (SPEC §13): a catalog an agent can discover, search, describe,
dry-run and execute through one endpoint, `GET|POST /security-center/capabilities`.

The catalog itself (operations, their JSON Schemas, aliases) is declared in `capability_catalog`;
this module answers the four actions against it, validating dry runs with the very body schema
`describe` shows."""

from __future__ import annotations

import asyncio
import inspect
import json
import re

from jsonschema import Draft202012Validator

from anysentry.api.capability_catalog import ACTIONS, ALIASES, COMPATIBILITY, MODULE, MODULES, OPERATIONS
from anysentry.api.guard import assess_runtime_action
from anysentry.api.http import ApiError, truthy
from anysentry.api.pipeline import BufferFullError
from anysentry.events.errors import BodyError
from anysentry.events.generic import parse_events_body
from anysentry.judge import guard as G

DRY_RUN_SCHEMA = "anysentry.progressive.dry_run.v1"
SHAPED_SCHEMA = "anysentry.progressive.response.v1"
RETRY_AFTER_SECS = "5"
SYNC_TIMEOUT_SECS = 5.0

VALIDATORS = {name: Draft202012Validator(op["inputSchema"]["body"]) for name, op in OPERATIONS.items()}
REQUEST_KEYS = frozenset({"action", "category", "query", "module", "capabilityId", "operation", "params", "constraints",
                          "dryRun", "sessionId", "shaped"})

# ---------------------------------------------------------------- resolution


def _text(value: object) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    return str(value).strip()


def resolve(body: dict) -> tuple[str, str]:
    """(module, operation) from module + operation, or a capabilityId / legacy alias given as either;
    unknown → 404 with the §3.3 messages."""
    module = _text(body.get("module"))
    operation = _text(body.get("operation")) or _text(body.get("capabilityId"))
    if operation in ALIASES:
        alias_module, operation = ALIASES[operation]
        module = module or alias_module
    module = module or MODULE
    if module not in MODULES:
        raise ApiError(404, f"Module '{module}' not found")
    if operation not in OPERATIONS:
        raise ApiError(404, f"Operation '{operation}' not found in module '{module}'")
    return module, operation


# ---------------------------------------------------------------- actions


def list_modules(category: str = "") -> list[dict]:
    category = category.strip().lower()
    if not category:
        return list(MODULES.values())
    out = []
    for module in MODULES.values():
        ops = [op for op in module["operations"] if category in (t.lower() for t in op["tags"])]
        if ops:
            out.append({**module, "operations": ops})
    return out


_TERMS = re.compile(r"[^a-z0-9_]+")


def search(query: str) -> list[dict]:
    """Operations ranked by term hits over name (and aliases), description, tags, resource and
    parameter names; operations with no hit are left out; ties keep catalog order."""
    terms = [t for t in _TERMS.split(query.lower()) if t]
    scored = []
    for position, op in enumerate(OPERATIONS.values()):
        fields = [op["name"].lower(), op["description"].lower(), op["resource"].lower(),
                  *(t.lower() for t in op["tags"]), *(a.lower() for a in op["aliases"]),
                  *(p["name"].lower() for p in op["parameters"])]
        score = sum(field.count(term) for term in terms for field in fields)
        if score:
            scored.append((-score, position, op))
    return [op for _, _, op in sorted(scored, key=lambda s: s[:2])]


def describe(body: dict) -> tuple[str, dict]:
    """('module', module) or ('operation', operation)."""
    module = _text(body.get("module"))
    query = _text(body.get("query"))
    if body.get("operation") or body.get("capabilityId"):
        _, operation = resolve(body)
        return "operation", OPERATIONS[operation]
    if not module and query:
        if query in MODULES:
            module = query
        elif query in OPERATIONS or query in ALIASES:
            _, operation = resolve({"operation": query})
            return "operation", OPERATIONS[operation]
        else:
            module = query
    module = module or MODULE
    if module not in MODULES:
        raise ApiError(404, f"Module '{module}' not found")
    return "module", MODULES[module]


def _constraints(value: object) -> dict | None:
    if not isinstance(value, dict):
        return None
    out: dict = {}
    for key in ("noNetworkActivity", "noDestructiveActions"):
        if key in value:
            out[key] = truthy(value[key])
    for key, allowed in (("maxRiskLevel", ("low", "medium", "high", "critical")), ("autonomy", G.AUTONOMY_MODES)):
        text = _text(value.get(key)).lower()
        if text in allowed:
            out[key] = text
    return out


def _json_path(parts) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            path += f".{part}"
        else:
            path += "[" + json.dumps(str(part)) + "]"
    return path


def schema_issues(operation: str, instance: dict) -> list[dict]:
    """Draft 2020-12 validation of a request against the operation's described body schema; one
    issue per problem, each with the JSON path it concerns (a missing or unexpected property is
    named in the path)."""
    issues = []
    for error in sorted(VALIDATORS[operation].iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        parts = list(error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [p for p in error.validator_value if p not in error.instance]
            name = next((p for p in missing if error.message == f"{p!r} is a required property"),
                        missing[0] if missing else "")
            issues.append({"path": _json_path([*parts, name]), "message": error.message, "severity": "error"})
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set((error.schema.get("properties") or {}).keys())
            for extra in (k for k in error.instance if k not in known):
                issues.append({"path": _json_path([*parts, extra]), "message": f"Additional property '{extra}' is not allowed",
                               "severity": "error"})
        else:
            issues.append({"path": _json_path(parts), "message": error.message, "severity": "error"})
    return issues


def _token_supplied(params: object, headers) -> bool:
    if isinstance(params, dict) and _text(params.get("token")):
        return True
    if headers is None:
        return False
    if headers.get("X-AnySentry-Ingest-Token", "").strip():
        return True
    auth = headers.get("Authorization", "")
    return auth[:7].lower() == "bearer " and bool(auth[7:].strip())


def dry_run(body: dict, module: str, operation: str, headers) -> dict:
    """Validate an execute request without running it: nothing is written, no state changes."""
    constraints = _constraints(body.get("constraints"))
    normalized: dict = {"action": "execute", "module": module, "operation": operation, "dryRun": True,
                        "params": body.get("params") if "params" in body else {}}
    instance: dict = {"action": "execute", "module": module, "operation": operation, "dryRun": True}
    for key in ("params", "constraints", "sessionId", "shaped"):
        if key in body:
            instance[key] = body[key]
    instance.update({k: v for k, v in body.items() if k not in REQUEST_KEYS})
    if constraints is not None:
        normalized["constraints"] = constraints
    for key in ("sessionId", "shaped"):
        if key in body:
            normalized[key] = body[key]
    issues = schema_issues(operation, instance)
    target_in_scope = module in MODULES and operation in OPERATIONS
    valid = not issues and target_in_scope
    return {"schemaVersion": DRY_RUN_SCHEMA, "valid": valid, "dryRun": True, "module": module, "operation": operation,
            "targetInScope": target_in_scope, "tokenVerified": _token_supplied(body.get("params"), headers),
            "decision": "allow" if valid else "reject", "constraints": constraints or {}, "schemaValid": not issues,
            "schemaIssues": issues, "normalizedRequest": normalized}


def _unavailable(operation: str) -> ApiError:
    return ApiError(503, f"capability unavailable: {operation}")


async def _call(fn, params: dict):
    result = fn(params)
    return await result if inspect.isawaitable(result) else result


async def execute(services, operation: str, params: dict | list, headers, constraints: dict | None) -> dict:
    if operation == "assessRuntimeAction":
        return await assess_runtime_action(services, params, headers, constraints=constraints)
    if operation == "recordSecurityEvents":
        return await record_security_events(services, params, headers)
    if operation == "planNextActions":
        book = getattr(getattr(services, "ops", None), "remediation", None)
        plan = getattr(book, "plan_next_actions", None)
        if plan is None:
            raise _unavailable(operation)
        return await _call(plan, params)
    evidence = getattr(getattr(services, "ops", None), "evidence", None)
    build = next((getattr(evidence, n) for n in ("build", "build_bundle") if callable(getattr(evidence, n, None))),
                 None) if evidence is not None else None
    if build is None:
        raise _unavailable(operation)
    await _read_your_writes(services)
    return await _call(build, params)


async def _read_your_writes(services) -> None:
    """Accepted events reach the store before a bundle reads it; a slow or absent store never fails the read."""
    writer = getattr(services, "writer", None)
    if writer is None:
        return
    try:
        await asyncio.wait_for(writer.sync(), SYNC_TIMEOUT_SECS)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - answer from what is stored
        pass


async def record_security_events(services, params: dict | list, headers) -> dict:
    """The universal ingest request (§8.3, sourceType default `custom`) → the §8.3.5 result."""
    try:
        parsed = parse_events_body(params, content_type="application/json")
    except BodyError as exc:
        raise ApiError(400, str(exc)) from exc
    if not parsed.items:
        return {"accepted": False, "acceptedEvents": 0, "rejectedEvents": 0, "items": []}
    try:
        outcome = await services.pipeline.ingest(parsed, headers=headers,
                                                 default_type=str(parsed.request.get("sourceType") or "custom"),
                                                 default_source="api")
    except BufferFullError as exc:
        raise ApiError(503, "ingest buffer full: events are waiting for the store; retry later",
                       {"Retry-After": RETRY_AFTER_SECS}) from exc
    return outcome.batch_answer()


def _shaped(action: str, key: str, value: object) -> dict:
    out = {"schemaVersion": SHAPED_SCHEMA, "protocol": G.PROTOCOL, "action": action, "success": True, key: value}
    if key == "data":
        out["result"] = value
    out["compatibility"] = COMPATIBILITY
    return out


async def handle(services, body: dict, *, method: str = "POST", headers=None) -> object:
    """One capabilities request (§13.1) → the handler result (raw, or shaped on request)."""
    raw_action = body.get("action")
    action = _text(raw_action).lower() or "list"
    if action not in ACTIONS:
        raise ApiError(400, f"Unknown capability action: {_text(raw_action)}")
    shaped = body.get("shaped") is True or _text(body.get("shaped")).lower() in ("true", "1")
    if action == "list":
        key, value = "modules", list_modules(_text(body.get("category")))
    elif action == "search":
        query = _text(body.get("query"))
        if not query:
            raise ApiError(400, "search requires query")
        key, value = "operations", search(query)
    elif action == "describe":
        key, value = describe(body)
    else:
        if method != "POST":
            raise ApiError(400, "execute requires POST")
        module, operation = resolve(body)
        if truthy(body.get("dryRun")):
            key, value = "data", dry_run(body, module, operation, headers)
        else:
            params = body.get("params")
            if not isinstance(params, dict) and not (operation == "recordSecurityEvents" and isinstance(params, list)):
                params = {}
            key, value = "data", await execute(services, operation, params, headers, _constraints(body.get("constraints")))
    return _shaped(action, key, value) if shaped else value
