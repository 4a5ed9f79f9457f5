"""OpenTelemetry semantic conventions → canonical event fields (SPEC §8.5): which attribute names
give an OTLP record its identity, its kind and its tool / LLM fields. The conventions move faster
than the OTLP encoding (GenAI and MCP names are still being renamed), so a new or deprecated name is
a change here alone; `otlp` walks the records and asks this module what they mean.

Identity (record attributes first, then the resource, §8.5 chains):
- agentId: `anysentry.agent.id` → `agent.id` → `gen_ai.agent.id` → `service.name` → `k8s.pod.name`
  → `process.executable.name` → `gen_ai.agent.name`; SDK placeholders `unknown_service*` do not count.
- workspacePath: `anysentry.workspace`, else `<namespace>/<service>`, else `workspace://<namespace>`,
  else `service://<service>` (namespace: `service.namespace` | `k8s.namespace.name` |
  `deployment.environment.name`).
- sessionId: `anysentry.session.id` | `session.id` | `gen_ai.conversation.id` | `mcp.session.id`
  (record), `service.instance.id` | `k8s.pod.uid` (resource); userId `enduser.id` | `user.id` |
  `user.name`; collectorId `anysentry.collector.id` | `collector.id` | `host.name`;
  nodeName `k8s.node.name`.

Kind, in this order:
1. `anysentry.event.kind` (alias-normalised, kept verbatim when unknown);
2. `event.kind` / `event.name` / the log record's `eventName` when it names one of our kinds;
3. the GenAI / MCP semantic conventions — current names and the deprecated ones still emitted by
   OpenLLMetry/LangChain (`gen_ai.system`, `gen_ai.usage.prompt_tokens`, `llm.*`) and OpenInference:
   `gen_ai.operation.name = execute_tool`, `mcp.method.name = tools/call`,
   `traceloop.span.kind = tool`, `openinference.span.kind = TOOL` → ToolExec with argv = the tool
   name (`gen_ai.tool.name` | `mcp.tool.name` | the span name) followed by the arguments
   (`gen_ai.tool.call.arguments`): the leaf values of a JSON object/array in order, so L1 judges
   `terminal curl … | sh` rather than `{"commands": ["curl … | sh"]}`, other text as one item (the
   arguments JSON itself stays in the attributes); `chat` / `text_completion` / `generate_content` / `embeddings`
   (or `llm.request.type`, OpenInference `LLM`/`EMBEDDING`) with a provider or model → LlmApi with
   model, token counts and endpoint; any other operation or MCP method (`invoke_agent`,
   `create_agent`, `tools/list`, `initialize`, …) → RuntimeEvent `gen_ai.<op>` / `mcp.<method>`
   (recorded, not judged, and without tokenCount: an agent span's usage aggregates its chat spans,
   counting it again would double the token totals);
4. an unrecognised `event.kind` / `event.name`, verbatim (category `unknown`);
5. §8.5 inference: command → ToolExec, `file.path` → FileAccess, `dns.question.name` → Dns,
   provider/model → LlmApi, endpoint → Egress, content or subject → SslContent.
Step 3 before 4 is a deliberate reading of §8.5: a GenAI event such as
`gen_ai.client.inference.operation.details` is an LLM call, not a kind of its own.

Fields: command `anysentry.command` | `process.command_line` | `process.command_args` (array) |
`process.command` | `command` | `tool.command` | `db.statement` | `db.query.text`; endpoint
`anysentry.endpoint` | `server.address` | `net.peer.name` | `network.peer.address` | `peer.service` |
`url.full` | `http.url` | `rpc.service` | `gen_ai.system` | `gen_ai.provider.name` | `llm.provider`;
port `server.port` | `net.peer.port` | `network.peer.port`; token counts from `gen_ai.usage.*` /
`llm.usage.*` / `llm.token_count.*`."""

from __future__ import annotations

import math

import orjson

from anysentry.events import kinds as K
from anysentry.events.otlp_json import INTERNAL_MAX as _INTERNAL_MAX
from anysentry.events.producer_body import bounded_int, redact_json_text, redact_tree, text
from anysentry.events.synthesize import ARGV_MAX_ITEM

_COUNT_MAX = 10**12
_MAX_ARGUMENTS = 127   # argv items taken from tool-call arguments (synthesize keeps <= 128)

COMMAND_KEYS = ("anysentry.command", "process.command_line", "process.command_args", "process.command", "command",
                "tool.command", "db.statement", "db.query.text")
_TOOL_COMMAND_KEYS = COMMAND_KEYS[:6]
ENDPOINT_KEYS = ("anysentry.endpoint", "server.address", "net.peer.name", "network.peer.address", "peer.service",
                 "url.full", "http.url", "rpc.service", "gen_ai.system", "gen_ai.provider.name", "llm.provider")
PORT_KEYS = ("server.port", "net.peer.port", "network.peer.port")
PROVIDER_KEYS = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "llm.vendor")
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.response.model", "llm.request.model",
              "llm.model", "llm.model_name")
PROMPT_KEYS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.usage.prompt_tokens",
               "llm.token_count.prompt")
COMPLETION_KEYS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "llm.usage.completion_tokens",
                   "llm.token_count.completion")
TOTAL_KEYS = ("llm.usage.total_tokens", "gen_ai.usage.total_tokens", "llm.token_count.total")
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "completion", "embedding"})
TOOL_OPERATIONS = frozenset({"execute_tool"})


# ---------------------------------------------------------------- lookups

def first_text(attrs: dict, *keys: str, limit: int = 512) -> str | None:
    """The first of `keys` holding a usable text value (conventions list current names first)."""
    for key in keys:
        value = text(attrs.get(key), limit)
        if value is not None:
            return value
    return None


def _lower(attrs: dict, *keys: str) -> str:
    return (first_text(attrs, *keys, limit=128) or "").lower()


def first_count(attrs: dict, keys: tuple[str, ...]) -> int | None:
    """The first of `keys` holding a token count (integer, or a whole-number-ish finite float)."""
    for key in keys:
        value = attrs.get(key)
        count = bounded_int(value, 0, _COUNT_MAX)
        if count is None and isinstance(value, float) and math.isfinite(value) and 0 <= value <= _COUNT_MAX:
            count = int(value)
        if count is not None:
            return count
    return None


def _service(res: dict) -> str | None:
    service = first_text(res, "service.name")
    return None if service is None or service.startswith("unknown_service") else service


def identity(rec: dict, res: dict) -> dict:
    """agentId, workspacePath, sessionId, userId, collectorId, nodeName, pid (see the module doc)."""
    service = _service(res)
    agent = (
        first_text(rec, "anysentry.agent.id") or first_text(res, "anysentry.agent.id")
        or first_text(rec, "agent.id", "gen_ai.agent.id") or first_text(res, "agent.id", "gen_ai.agent.id")
        or service or first_text(res, "k8s.pod.name", "process.executable.name") or first_text(rec, "gen_ai.agent.name")
    )
    workspace = first_text(rec, "anysentry.workspace", limit=1024) or first_text(res, "anysentry.workspace", limit=1024)
    if not workspace:
        namespace = first_text(res, "service.namespace", "k8s.namespace.name", "deployment.environment.name",
                               "deployment.environment")
        if namespace and service:
            workspace = f"{namespace}/{service}"
        elif namespace:
            workspace = f"workspace://{namespace}"
        elif service:
            workspace = f"service://{service}"
    session = (
        first_text(rec, "anysentry.session.id", "session.id", "gen_ai.conversation.id", "mcp.session.id")
        or first_text(res, "anysentry.session.id", "session.id", "service.instance.id", "k8s.pod.uid")
    )
    user_keys = ("enduser.id", "user.id", "user.name")
    return {
        "agentId": agent,
        "workspacePath": workspace,
        "sessionId": session,
        "userId": first_text(rec, *user_keys) or first_text(res, *user_keys),
        "collectorId": first_text(res, "anysentry.collector.id", "collector.id", "host.name"),
        "nodeName": first_text(res, "k8s.node.name"),
        "pid": bounded_int(rec.get("process.pid", res.get("process.pid")), 0, 2**32 - 1),
    }


# ---------------------------------------------------------------- tool calls

def _leaves(value: object, out: list[str]) -> None:
    if len(out) >= _MAX_ARGUMENTS:
        return
    if isinstance(value, dict):
        for item in value.values():
            _leaves(item, out)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, out)
    elif value is not None:
        leaf = value if isinstance(value, str) else text(value, 64)
        if leaf:
            out.append(leaf)


def _argument_argv(value: object) -> list[str]:
    """Tool-call arguments as argv items: the leaf values of a JSON object/array (key-aware
    redacted), so L1 sees `bash -c …` rather than `{"command": "bash -c …"}`; other text as one item."""
    if isinstance(value, str):
        stripped = value.strip()
        if not stripped:
            return []
        if stripped[:1] in ("{", "[") and len(stripped) <= 65536:
            try:
                value = orjson.loads(stripped)
            except (orjson.JSONDecodeError, ValueError):
                return [redact_json_text(stripped, ARGV_MAX_ITEM)]
            if not isinstance(value, (dict, list)):
                return [redact_json_text(stripped, ARGV_MAX_ITEM)]
        else:
            return [redact_json_text(stripped, ARGV_MAX_ITEM)]
    if isinstance(value, (dict, list)):
        out: list[str] = []
        _leaves(redact_tree(value, limit=ARGV_MAX_ITEM), out)
        return out
    leaf = text(value, ARGV_MAX_ITEM)
    return [leaf] if leaf else []


def _tool_event(rec: dict, name: str, op: str, method: str, tl: str, oi: str) -> dict:
    tool = first_text(rec, "gen_ai.tool.name", "mcp.tool.name")
    arguments = rec.get("gen_ai.tool.call.arguments")
    if tl == "tool":
        tool = tool or first_text(rec, "traceloop.entity.name")
        arguments = arguments if arguments is not None else rec.get("traceloop.entity.input")
    if oi == "tool":
        tool = tool or first_text(rec, "tool.name")
        arguments = arguments if arguments is not None else rec.get("tool.parameters", rec.get("input.value"))
    if not tool and name:
        for prefix in (f"{op} ", f"{method} "):
            if prefix.strip() and name.startswith(prefix):
                tool = text(name[len(prefix):], 512)
                break
        tool = tool or text(name, 512)
    event: dict = {"eventKind": K.TOOL_EXEC, "argv": [tool or "unknown", *_argument_argv(arguments)]}
    command = first_command(rec, _TOOL_COMMAND_KEYS)
    if command is not None:
        event["command"] = command
    return event


def first_command(rec: dict, keys: tuple[str, ...]) -> str | list | None:
    """The first of `keys` holding a command line (text) or argv (array of texts)."""
    for key in keys:
        value = rec.get(key)
        if isinstance(value, list):
            parts = [p for p in (text(v, ARGV_MAX_ITEM) for v in value) if p]
            if parts:
                return parts
        elif isinstance(value, str) and value.strip():
            return value[:_INTERNAL_MAX]
    return None


# ---------------------------------------------------------------- kind

def classify(rec: dict, named: str | None, name: str, has_subject: bool, content: str | None) -> dict:
    """The event kind and its kind-specific fields (see the module doc for the order)."""
    op = _lower(rec, "gen_ai.operation.name")
    method = _lower(rec, "mcp.method.name")
    tl = _lower(rec, "traceloop.span.kind")
    oi = _lower(rec, "openinference.span.kind")
    explicit = first_text(rec, "anysentry.event.kind", limit=64)
    given = K.canonical_kind(explicit) if explicit else (K.canonical_kind(named) if named else "")
    if given == K.TOOL_EXEC:
        return _tool_event(rec, name, op, method, tl, oi)
    if explicit:
        event = {"eventKind": given}
        if given == K.SECURITY_ACTION:
            event["kind"] = first_text(rec, "anysentry.security.kind", "security.kind", limit=64) or explicit
        elif given == K.RUNTIME_EVENT:
            event["runtimeKind"] = first_text(rec, "anysentry.runtime.kind", limit=120) or explicit
        return event
    if given in K.RECORDED_KINDS:
        return {"eventKind": given}

    request_type = _lower(rec, "llm.request.type")
    provider = first_text(rec, *PROVIDER_KEYS)
    model = first_text(rec, *MODEL_KEYS)
    if op in TOOL_OPERATIONS or method == "tools/call" or tl == "tool" or oi == "tool":
        return _tool_event(rec, name, op, method, tl, oi)
    llm_like = op in LLM_OPERATIONS or oi in ("llm", "embedding") or (not op and request_type in LLM_OPERATIONS | {"rerank"})
    if llm_like and (provider or model):
        return {"eventKind": K.LLM_API}
    if op and not llm_like:
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"gen_ai.{op}"[:120]}
    if method:
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"mcp.{method}"[:120]}
    if tl in ("workflow", "task", "agent"):
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"traceloop.{tl}"}
    if oi in ("agent", "chain", "retriever", "reranker", "guardrail", "evaluator"):
        return {"eventKind": K.RUNTIME_EVENT, "runtimeKind": f"openinference.{oi}"}

    if named:
        return {"eventKind": K.canonical_kind(named)}
    if first_command(rec, COMMAND_KEYS) is not None:
        return {"eventKind": K.TOOL_EXEC}
    if first_text(rec, "anysentry.path", "file.path"):
        return {"eventKind": K.FILE_ACCESS}
    if first_text(rec, "anysentry.query", "dns.question.name"):
        return {"eventKind": K.DNS}
    if provider or model:
        return {"eventKind": K.LLM_API}
    if first_text(rec, *ENDPOINT_KEYS):
        return {"eventKind": K.EGRESS}
    if content or has_subject:
        return {"eventKind": K.SSL_CONTENT}
    return {"eventKind": "Event"}
