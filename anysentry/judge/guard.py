"""The runtime guard's own logic (SPEC §12), free of I/O: what the caller's action becomes as an event,
how a verdict becomes a policy action under an autonomy mode, the fallback checks that catch what L1
does not model for a stage, and the follow-up finding that records a fallback.

`anysentry.api.guard` orchestrates it: build the action event, ingest it through the pipeline (so it
is judged and durably buffered like any event), map the verdict, run the fallback, ingest the
finding when the fallback raised the action, and answer §12.3. Everything here is deterministic
and cheap; the fallback patterns are RE2 (linear time whatever an agent sends)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import re2

from anysentry.events.ids import hash_id

MODULE = "security-center"
OPERATION = "assessRuntimeAction"
CAPABILITY_ID = "security.runtimeGuard"
RESULT_SCHEMA = "anysentry.progressive.runtime_guard.result.v1"
PROTOCOL = "shuanos-progressive-api/source-compatible"
SOURCE_NAME = "progressive-security-runtime-client"
SOURCE_TYPE = "custom"

# ---------------------------------------------------------------- stages (§12.1)

STAGES = ("input", "plan", "tool", "retrieval", "memory", "llm", "output", "feedback", "runtime")
STAGE_ALIASES = {
    "prompt": "input",
    "planning": "plan",
    "tool_call": "tool", "function_call": "tool", "action": "tool",
    "rag": "retrieval", "retrieve": "retrieval", "vector_search": "retrieval",
    "memory_read": "memory", "memory_write": "memory",
    "model": "llm", "completion": "llm",
    "response": "output", "final_answer": "output",
    "eval": "feedback",
    "telemetry": "runtime",
}
DEFAULT_STAGE = "runtime"


def canonical_stage(value: object) -> str:
    """A stage name or alias (case, `-`, `.` and spaces tolerated) → canonical; unknown → `runtime`."""
    if not isinstance(value, str):
        return DEFAULT_STAGE
    key = "_".join(value.strip().lower().replace("-", " ").replace(".", " ").split())
    if key in STAGES:
        return key
    return STAGE_ALIASES.get(key, DEFAULT_STAGE)


# ---------------------------------------------------------------- autonomy and policy actions (§12.2 step 3)

AUTONOMY_MODES = ("suggest", "guarded", "auto")
DEFAULT_AUTONOMY = "guarded"
POLICY_ACTIONS = ("allow", "warn", "require_approval", "block")  # weakest → strongest
ACTION_RANK = {a: i for i, a in enumerate(POLICY_ACTIONS)}
RECOMMENDED = {"allow": "continue", "warn": "review", "require_approval": "review", "block": "stop"}


def canonical_autonomy(value: object) -> str | None:
    if isinstance(value, str) and value.strip().lower() in AUTONOMY_MODES:
        return value.strip().lower()
    return None


def autonomy_of(params: dict, constraints: dict | None = None) -> str:
    """`params.autonomy`, else `constraints.autonomy` (the request's, then one nested in params),
    else `guarded`; an unknown value counts as absent."""
    nested = params.get("constraints") if isinstance(params.get("constraints"), dict) else {}
    for source in (params, constraints if isinstance(constraints, dict) else {}, nested):
        mode = canonical_autonomy(source.get("autonomy"))
        if mode:
            return mode
    return DEFAULT_AUTONOMY


def policy_action(verdict: str, autonomy: str, accepted: bool = True) -> str:
    """§12.2 step 3. Not accepted → block; allow → allow; suggest → warn; guarded: block ⇒
    require_approval, escalate ⇒ warn; auto: block ⇒ block, escalate ⇒ warn. An unknown verdict is
    treated as an escalation (never as allow)."""
    if not accepted:
        return "block"
    if verdict == "allow":
        return "allow"
    if autonomy == "suggest":
        return "warn"
    if verdict == "block":
        return "block" if autonomy == "auto" else "require_approval"
    return "warn"


def stronger(a: str, b: str) -> str:
    """The stronger of two policy actions (allow < warn < require_approval < block)."""
    return a if ACTION_RANK.get(a, 3) >= ACTION_RANK.get(b, 3) else b


def recommended_action(action: str) -> str:
    """block → stop; require_approval or warn → review; allow → continue."""
    return RECOMMENDED.get(action, "stop")


# ---------------------------------------------------------------- fallback checks (§12.2 step 4)

@dataclass(frozen=True, slots=True)
class Fallback:
    name: str
    verdict: str
    severity: str
    category: str
    reason: str


METADATA = Fallback("metadata", "block", "critical", "systemic_risk",
                    "runtime guard detected cloud metadata service access")
PIPED_RCE = Fallback("piped_rce", "block", "critical", "command_danger",
                     "runtime guard detected piped remote-code execution")
DESTRUCTIVE = Fallback("destructive", "block", "critical", "command_danger",
                       "runtime guard detected destructive recursive deletion")
REVERSE_SHELL = Fallback("reverse_shell", "block", "critical", "communication_risk",
                         "runtime guard detected reverse-shell style command")
CREDENTIAL_PATH = Fallback("credential_path", "block", "high", "data_leak",
                           "runtime guard detected credential or privileged file access")
FALLBACKS = (METADATA, PIPED_RCE, DESTRUCTIVE, REVERSE_SHELL, CREDENTIAL_PATH)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False

# Fields are joined by newlines and no pattern crosses a newline, so a downloader in `command` and a
# `| sh` in `output` are not one command.
_HOST_END = r"(?:$|[^a-z0-9.\-]|\.(?:$|[^a-z0-9\-]))"
_METADATA = re2.compile(
    r"(?i)(?:^|[^0-9.])169\.254\.169\.254(?:$|[^0-9])"
    r"|(?:^|[^a-z0-9.\-])metadata\.google\.internal" + _HOST_END +
    r"|(?:^|[^a-z0-9.\-])metadata\.azure\.com" + _HOST_END, _OPTIONS)

# a downloader (or a base64 decode) whose output is later piped, by a single `|` (not `||`), into sh/bash
_SHELL_SINK = r"[^|\n]\|[ \t]*(?:sudo(?:[ \t]+-\S+)*[ \t]+)?(?:\S*/)?(?:ba|z|da|k)?sh\b"
_PIPED = re2.compile(
    r"(?i)(?:\b(?:curl|wget)\b|\bbase64[ \t]+(?:-[a-z]*d[a-z]*|--decode)\b)[^\n]*?" + _SHELL_SINK, _OPTIONS)

# rm whose option words are followed by /, /*, ~, ~/, $HOME or ${HOME} as a whole word; the r and f
# flags are checked on the captured option words
_RM = re2.compile(
    r"(?i)(?:^|[\s;&|(`'\"/])rm((?:[ \t]+(?:--|-{1,2}[a-z][a-z\-]*))+)[ \t]+"
    r"(?:/\*?|~/?\*?|\$\{?home\}?/?\*?)(?:$|[\s;&|)`'\"])", _OPTIONS)

# nc/ncat/netcat/socat wired to a program in the same command (not across `;`, `&&` or a newline)
_REVERSE = re2.compile(
    r"(?i)(?:^|[\s;&|(`'\"/])(?:nc|ncat|netcat|socat)\b[^\n;&]*?(?:[ \t]-e[ \t]|exec:|/bin/sh\b|\bbash\b)", _OPTIONS)

# whole-token credential paths: the token (delimited by whitespace, quotes, `=`, `:` ...) ends exactly there
_TOKEN_CHARS = r"[^\s'\"`=:;,()<>|&]"
_CREDENTIAL = re2.compile(
    r"(?:^|[\s'\"`=:;,(<>|&])"
    r"(?:" + _TOKEN_CHARS + r"*?/etc/(?:shadow|sudoers)"
    r"|(?:" + _TOKEN_CHARS + r"*/)?\.(?:aws/credentials|ssh/id_rsa|ssh/id_ed25519|kube/config))"
    r"(?:$|[\s'\"`;:,)<>|&])", _OPTIONS)

TEXT_FIELDS = ("command", "argv", "action", "toolName", "target", "resource", "input", "prompt", "output", "model",
               "subject")
FIELD_LIMIT = 16 * 1024
TEXT_LIMIT = 64 * 1024


def _field_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value[:FIELD_LIMIT]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)[:FIELD_LIMIT]
    try:
        return orjson.dumps(value, default=str).decode()[:FIELD_LIMIT]
    except (TypeError, orjson.JSONEncodeError):
        return ""


def guard_text(params: dict) -> str:
    """The text the fallback checks read: command, argv, action, toolName, target, resource, input,
    prompt, output, model and subject (non-strings as JSON), one field per line."""
    parts = [text for text in (_field_text(params.get(key)) for key in TEXT_FIELDS) if text]
    return "\n".join(parts)[:TEXT_LIMIT]


def _rm_flags_recursive_force(words: str) -> bool:
    recursive = force = False
    for word in words.split():
        if word.startswith("--"):
            recursive = recursive or word.lower() == "--recursive"
            force = force or word.lower() == "--force"
        else:
            letters = word[1:]
            recursive = recursive or "r" in letters or "R" in letters
            force = force or "f" in letters
    return recursive and force


def _destructive(text: str) -> bool:
    return any(_rm_flags_recursive_force(m.group(1)) for m in _RM.finditer(text))


_CHECKS = (
    (METADATA, lambda t: _METADATA.search(t) is not None),
    (PIPED_RCE, lambda t: _PIPED.search(t) is not None),
    (DESTRUCTIVE, _destructive),
    (REVERSE_SHELL, lambda t: _REVERSE.search(t) is not None),
    (CREDENTIAL_PATH, lambda t: _CREDENTIAL.search(t) is not None),
)


# one scan says whether any check can match: most guarded actions are benign and stop here
_ANY = re2.compile("|".join(f"(?:{p.pattern})" for p in (_METADATA, _PIPED, _RM, _REVERSE, _CREDENTIAL)), _OPTIONS)


def fallback_check(text: str) -> Fallback | None:
    """The first fallback (metadata, piped RCE, destructive, reverse shell, credential path) that
    matches `text`, else None."""
    if not text or _ANY.search(text) is None:
        return None
    for fallback, check in _CHECKS:
        if check(text):
            return fallback
    return None


# ---------------------------------------------------------------- the action event (§12.2 steps 1-2)

REQUEST_FIELDS = ("sourceId", "sourceName", "token", "collectorId", "workspacePath", "agentId", "sessionId", "userId",
                  "traceId", "runId")
LABEL_LIMIT = 20


def request_fields(params: dict) -> dict:
    """The ingest request fields of a guard call: its identity defaults and source credentials; the
    source is `progressive-security-runtime-client` of type `custom` unless the caller names one."""
    out = {k: params[k] for k in REQUEST_FIELDS if params.get(k) not in (None, "")}
    out.setdefault("sourceName", SOURCE_NAME)
    out["sourceType"] = SOURCE_TYPE
    return out


def _json_text(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return _field_text(value)
    try:
        return orjson.dumps(value, default=str).decode()[:FIELD_LIMIT]
    except (TypeError, orjson.JSONEncodeError):
        return None


def _first(params: dict, *keys: str) -> object:
    for key in keys:
        value = params.get(key)
        if value is not None and value != "":
            return value
    return None


def progressive_attributes(params: dict, stage: str, autonomy: str) -> dict:
    """`progressive.*` attributes of the action event (values are redacted and bounded by the
    normaliser like any attribute)."""
    attrs: dict = {
        "progressive.protocol": PROTOCOL,
        "progressive.module": MODULE,
        "progressive.operation": OPERATION,
        "progressive.autonomy": autonomy,
        "progressive.stage": stage,
    }
    for key, value in (("progressive.toolArgs", params.get("toolArgs")), ("progressive.evidence", params.get("evidence")),
                       ("progressive.model", params.get("model")),
                       ("progressive.target", _first(params, "target", "resource")),
                       ("progressive.toolName", params.get("toolName"))):
        text = _json_text(value)
        if text:
            attrs[key] = text
    labels = params.get("labels")
    if isinstance(labels, dict):
        for name, value in list(labels.items())[:LABEL_LIMIT]:
            if isinstance(value, (str, int, float, bool)) and not isinstance(name, bool):
                attrs[f"progressive.label.{str(name)[:60]}"] = value
    return attrs


def _peer(target: str) -> tuple[str, int | None]:
    """A retrieval/memory target that is not a path → (peer, port): URLs and host:port are split so
    L1 sees the host as it would on the wire."""
    text = target.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        host_port = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
        default = {"http": 80, "ws": 80, "https": 443, "wss": 443, "grpc": 80, "grpcs": 443}.get(scheme.lower())
    else:
        host_port, default = text, None
    if host_port.startswith("["):  # [v6]:port
        host, _, tail = host_port[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif host_port.count(":") == 1:
        host, _, port_text = host_port.partition(":")
    else:
        host, port_text = host_port, ""
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else default
    return (host or text), port


def action_event(params: dict, stage: str, autonomy: str) -> dict:
    """§12.2 step 1: one API event for the action, by stage.

    tool → ToolExec with argv = command ?? action ?? toolName; retrieval/memory → FileAccess when the
    target (target ?? resource) starts with `/`, else Egress to it; llm → LlmApi with endpoint =
    target ?? model; any other stage → SslContent with content = output ?? prompt ?? input ?? subject."""
    event: dict = {"attributes": progressive_attributes(params, stage, autonomy)}
    if stage == "tool":
        event["eventKind"] = "ToolExec"
        argv = _first(params, "command", "argv", "action", "toolName")
        event["command"] = argv if isinstance(argv, (str, list)) else (_field_text(argv) or "unknown")
    elif stage in ("retrieval", "memory"):
        target = _first(params, "target", "resource")
        text = _field_text(target).strip() if target is not None else ""
        if text.startswith("/"):
            event["eventKind"] = "FileAccess"
            event["path"] = text
        else:
            event["eventKind"] = "Egress"
            peer, port = _peer(text) if text else ("unknown", None)
            event["peer"] = peer
            if port is not None:
                event["port"] = port
    elif stage == "llm":
        event["eventKind"] = "LlmApi"
        endpoint = _first(params, "target", "model")
        event["endpoint"] = _field_text(endpoint) if endpoint is not None else "llm"
    else:
        event["eventKind"] = "SslContent"
        content = _first(params, "output", "prompt", "input", "subject")
        event["content"] = content if content is None or isinstance(content, str) else _field_text(content)
    subject = params.get("subject")
    if isinstance(subject, str) and subject.strip():
        event["subject"] = subject
    return event


# ---------------------------------------------------------------- the follow-up finding (§12.2 step 5)

def guard_span_id(action_event_id: str, at: int) -> str:
    """`sp_guard_` + hex(sha1(action event id, time))[:16]."""
    return hash_id("sp_guard", [action_event_id, at])


def finding_event(action: dict, fallback: Fallback, *, stage: str, autonomy: str, at: int) -> dict:
    """The follow-up finding for a fallback that raised the action: kind SecurityFinding, status
    failed, `progressive.guard.*` attributes, the action's traceId/runId/sessionId (and identity), a
    `sp_guard_…` span whose parent is the action's span. `action` holds the action event's answer
    fields (`eventId`, `spanId`, `traceId`, `runId`) plus `sessionId`, `agentId`, `workspacePath`,
    `userId`. Its `id` makes it idempotent per action event."""
    event_id = action["eventId"]
    event = {
        "eventKind": "SecurityFinding",
        "kind": "SecurityFinding",
        "status": "failed",
        "id": f"guard:{event_id}",
        "at": at,
        "spanId": guard_span_id(event_id, at),
        "parentSpanId": action.get("spanId") or "",
        "traceId": action.get("traceId") or "",
        "runId": action.get("runId") or "",
        "sessionId": action.get("sessionId") or "",
        "attributes": {
            "progressive.protocol": PROTOCOL,
            "progressive.module": MODULE,
            "progressive.operation": OPERATION,
            "progressive.autonomy": autonomy,
            "progressive.stage": stage,
            "progressive.guard.fallback": True,
            "progressive.guard.name": fallback.name,
            "progressive.guard.severity": fallback.severity,
            "progressive.guard.reason": fallback.reason,
            "progressive.guard.riskCategory": fallback.category,
            "progressive.guard.actionEventId": event_id,
        },
    }
    for key in ("agentId", "workspacePath", "userId"):
        if action.get(key):
            event[key] = action[key]
    return event


# ---------------------------------------------------------------- fail mode

@dataclass(frozen=True, slots=True)
class FailMode:
    policy_action: str
    verdict: str
    severity: str
    reason: str


def failure(fail_closed: bool, error: BaseException | str) -> FailMode:
    """Judging could not complete (an exception, a full buffer): `failClosed` blocks; otherwise the
    action is allowed and the reason says judging failed open."""
    detail = error if isinstance(error, str) else (f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
    detail = detail.strip()[:200]
    if fail_closed:
        return FailMode("block", "block", "high", f"runtime guard judging failed ({detail}); fail-closed policy blocks the action")
    return FailMode("allow", "allow", "info", f"runtime guard judging failed open ({detail}); the action is allowed unjudged")
