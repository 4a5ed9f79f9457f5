"""Event kinds: the canonical names, producer aliases (SPEC §8.3.3), categories (§7.3) and which
kinds are recorded or judged by L1 (§6.2)."""

from __future__ import annotations

import re
from typing import Final

TOOL_EXEC: Final = "ToolExec"
PROCESS_EXIT: Final = "ProcessExit"
FILE_ACCESS: Final = "FileAccess"
FILE_DELETE: Final = "FileDelete"
LLM_CALL: Final = "LlmCall"
EGRESS: Final = "Egress"
DNS: Final = "Dns"
SSL_CONTENT: Final = "SslContent"
LLM_API: Final = "LlmApi"
SECURITY_ACTION: Final = "SecurityAction"
RUNTIME_EVENT: Final = "RuntimeEvent"
COLLECTOR_HEARTBEAT: Final = "CollectorHeartbeat"

RECORDED_KINDS = frozenset(
    {TOOL_EXEC, PROCESS_EXIT, EGRESS, DNS, LLM_CALL, FILE_ACCESS, FILE_DELETE, SSL_CONTENT, LLM_API, SECURITY_ACTION, RUNTIME_EVENT}
)
JUDGED_KINDS = frozenset({TOOL_EXEC, EGRESS, DNS, FILE_ACCESS, SSL_CONTENT, SECURITY_ACTION})
OBSERVER_KINDS = RECORDED_KINDS | {COLLECTOR_HEARTBEAT}

CATEGORY_BY_KIND = {
    TOOL_EXEC: "tool",
    EGRESS: "network",
    DNS: "network",
    SSL_CONTENT: "network",
    FILE_ACCESS: "file",
    FILE_DELETE: "file",
    LLM_CALL: "llm",
    LLM_API: "llm",
    SECURITY_ACTION: "security",
    PROCESS_EXIT: "process",
    RUNTIME_EVENT: "runtime",
}
CATEGORIES = frozenset({"tool", "network", "file", "llm", "security", "process", "runtime", "unknown"})

_ALIASES = {
    TOOL_EXEC: ("tool", "exec", "command", "tool_exec", "toolexec"),
    EGRESS: ("egress", "network", "network_egress", "networkegress", "egress_event", "http"),
    DNS: ("dns",),
    FILE_ACCESS: ("file", "file_access", "fileaccess", "file_read", "fileread", "read_file", "file_write", "filewrite", "write_file"),
    FILE_DELETE: ("file_delete", "filedelete"),
    LLM_CALL: ("llm", "llm_call", "llmcall"),
    LLM_API: ("llm_api", "llmapi"),
    SSL_CONTENT: ("ssl", "ssl_content", "sslcontent"),
    SECURITY_ACTION: ("security", "security_action", "securityaction", "security_finding", "securityfinding", "finding", "alert", "risk"),
    PROCESS_EXIT: ("process", "process_exit", "processexit"),
    RUNTIME_EVENT: ("runtime", "runtime_event", "runtimeevent", "verifier_warning", "verifierwarning"),
}
ALIAS_TO_KIND = {alias: kind for kind, aliases in _ALIASES.items() for alias in aliases}
_SEPARATORS = re.compile(r"[\s.\-]+")


def canonical_kind(raw: object) -> str:
    """Alias-normalise a producer kind; unknown non-empty values are kept verbatim, empty gives ''."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return ""
    text = str(raw).strip()[:256]
    if not text:
        return ""
    key = _SEPARATORS.sub("_", text.lower())
    # CamelCase spellings such as NetworkEgress or FileRead lower-case to an alias too
    return ALIAS_TO_KIND.get(key) or ALIAS_TO_KIND.get(key.replace("_", "")) or text


def category_of(kind: str) -> str:
    return CATEGORY_BY_KIND.get(kind, "unknown")
