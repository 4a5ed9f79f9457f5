"""Falco alerts → /ingest items (`POST /ingest/falco`).

Input: Falco JSON alerts `{time, rule, priority, source, hostname, output, output_fields, tags[, uuid]}`
as posted by Falco's `http_output` (`json_output: true`) and by falcosidekick's webhook output — one
object, a JSON array, or NDJSON (one alert per line). A wrapper `{"events": [...], sourceId?, token?,
collectorId?, nodeName?, ...}` (the /ingest/events batch form) is accepted too, for collectors that
batch alerts and add their own source identity.

Mapping (the action is read from `output_fields`, Falco's own field names):

| `evt.type` / fields                                         | item                                   |
|-------------------------------------------------------------|----------------------------------------|
| `execve`/`execveat`, or no `evt.type` and only process info | ToolExec, argv from `proc.cmdline` (else `proc.exepath` + `proc.args`) |
| `connect`/`sendto`/… or `fd.type` ipv4/ipv6                 | Egress, peer/port `fd.rip`:`fd.rport`, else `fd.sip`:`fd.sport`, else the `fd.name` `a:p->b:q` tuple |
| `open`/`openat`/`openat2`/`creat`, or `fd.type` file/directory | FileAccess, path `fd.name` (`write` from `evt.is_open_write` / `evt.arg.flags`) |
| `unlink`/`unlinkat`/`rmdir`                                 | FileDelete                             |
| `dns.query` / `dns.question.name` (plugin fields)           | Dns                                    |
| `setuid`/`setreuid`/`setresuid` to uid 0                    | SecurityAction `setuid-root 0`         |
| `ptrace`                                                    | SecurityAction `ptrace <evt.arg.pid>`  |
| `bind`/`listen`                                             | SecurityAction `bind <port>`           |
| anything else (`k8s_audit`, cloud plugins, `chmod`, …)      | no action item                         |

Identity is the pod: workspacePath `<k8s.ns.name>/<k8s.pod.name>` (a bare container:
`container://<container.name>`), agentId = the `anysentry.io/agent-id` pod label, else
`app.kubernetes.io/name` / `app`, else the workload derived from the pod name (Deployment
`<name>-<rs hash>-<5>`, DaemonSet/Job `<name>-<5>`, StatefulSet `<name>-<ordinal>`), else
`container.name`, else `proc.name` (host processes); sessionId = `container.id`, else the pod;
`hostname` → nodeName; `user.uid` → uid (userId `uid:<n>`). Attributes `falco.rule`,
`falco.priority`, `falco.source`, `falco.tags` (comma-joined), `falco.hostname`, `falco.output`
(value-redacted, cut) and `falco.uuid`, plus the alert's `output_fields` (key- and value-redacted).

A Falco alert is a detection, so it is never stored as benign. Decision: **every alert yields a
finding item** — `SecurityAction` with `kind: "SecurityFinding"` and `status: "failed"`, subject
`falco <priority>: <rule>` — which §9.4 always judges `escalate` (`producer_finding`); **when the
alert also names a concrete action, the action item comes first** so our L1 judges the action itself
(e.g. `cloud-metadata` blocks an Egress to 169.254.169.254 with `DenyEgress`, `read-credentials`
escalates `/etc/shadow`) and the dashboards count it in its own category. Why not gate the finding
on priority ≥ Warning: the parser cannot see what L1 will decide, and stock rules that matter sit
below Warning (`Terminal shell in container` is Notice, and its action — running `bash` — is
exactly what L1 allows), so a gate would store such detections as benign. Priority filtering is
Falco's job (`priority:` in falco.yaml, falcosidekick's `minimumpriority`): whatever reaches us was
meant as an alert. The cost is one extra row per alert that has an action; both rows carry the same
`falco.*` attributes and identity, so they share a trace. The producer's priority is kept as an
attribute only — the judge decides severity (§8.3.2).

Body errors raise `BodyError`; a bad alert becomes a `Rejection` item; nothing else escapes. The
module also holds the small body helpers the Tetragon parser shares (`load_documents`,
`redact_tree`, `clean_attributes`, ...)."""

from __future__ import annotations

import math
import re

import orjson

from anysentry.events import kinds as K
from anysentry.events.errors import BodyError
from anysentry.events.model import ParsedBody, Rejection
from anysentry.events.redact import REDACTED, is_sensitive_key, redact_text, sanitize_attributes
from anysentry.events.synthesize import DEFAULTABLE, SOURCE_KEYS, event_item
from anysentry.events.timefmt import parse_time

MAX_DOCUMENTS = 500          # alerts / events read from one request
ATTRIBUTE_VALUE_MAX = 500    # producer attribute values (the stored limit is applied by the normaliser)
RAW_PREVIEW_MAX = 1800
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_NA = frozenset({"", "<NA>", "N/A", "<na>", "n/a", "null", "None"})
_REQUEST_KEYS = tuple(dict.fromkeys((*SOURCE_KEYS, *DEFAULTABLE, "collectorId", "nodeName")))


# ---------------------------------------------------------------- shared body helpers (Tetragon too)

def _json_error(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__


def load_documents(body: object, what: str, limit: int = MAX_DOCUMENTS) -> tuple[list, int]:
    """A body (bytes/str/parsed JSON) → (its top-level JSON documents, NDJSON lines left unread).

    A body that is one JSON text gives one document; otherwise each non-blank line is parsed on its
    own (at most `limit`; the rest are only counted) and a bad line becomes a `Rejection` in its
    place. Raises `BodyError` when nothing at all can be read (non-JSON, a truncated single
    document, a body that is not text)."""
    if body is None:
        return [], 0
    if isinstance(body, (dict, list)):
        return [body], 0
    if isinstance(body, memoryview):
        body = body.tobytes()
    if isinstance(body, bytearray):
        body = bytes(body)
    if not isinstance(body, (bytes, str)):
        raise BodyError(f"{what} body must be JSON text")
    if not body.strip():
        return [], 0
    try:
        return [orjson.loads(body)], 0
    except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
        first_error = exc
    newline = b"\n" if isinstance(body, bytes) else "\n"
    docs: list = []
    unread = 0
    for number, line in enumerate(body.split(newline), 1):
        if not line.strip():
            continue
        if len(docs) >= limit:
            unread += 1
            continue
        try:
            docs.append(orjson.loads(line))
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            docs.append(Rejection(f"malformed JSON on line {number}: {_json_error(exc)}"))
    if all(isinstance(d, Rejection) for d in docs):
        raise BodyError(f"malformed JSON: {_json_error(first_error)}")
    return docs, unread


def text(value: object, limit: int = 512) -> str | None:
    """A scalar as stripped, value-redacted text cut to `limit`; None for empty, nested or NA."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        out = "true" if value else "false"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        out = str(int(value)) if value.is_integer() and abs(value) < 1e18 else repr(value)
    elif isinstance(value, int):
        if not -(2**64) < value < 2**64:
            return None
        out = str(value)
    elif isinstance(value, str):
        out = value.strip()
    else:
        return None
    if out in _NA:
        return None
    return redact_text(out[: limit * 4])[:limit] or None


def bounded_int(value: object, lo: int, hi: int) -> int | None:
    """An integer (int, integral float or decimal string) inside [lo, hi], else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if not stripped or len(stripped) > 40:
            return None
        try:
            value = int(stripped)
        except ValueError:
            return None
    if not isinstance(value, int):
        return None
    return value if lo <= value <= hi else None


def leading_int(value: object) -> int | None:
    """Falco renders ids as `0(root)` or `1234(bash)`: the leading integer, if any."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return bounded_int(value, -(2**63), 2**64)
    if isinstance(value, str):
        match = re.match(r"\s*(-?\d{1,20})", value)
        return int(match.group(1)) if match else None
    return None


def epoch_ms(value: object) -> int | None:
    """Epoch ms from ISO-8601 (nanosecond fractions allowed) or a number: > 1e13 is ns, > 1e10 ms,
    else seconds. None when unreadable or outside year 1970..9999."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        number = bounded_int(stripped, 1, 10**22)
        if number is not None:
            value = number
        else:
            ms = parse_time(stripped[:64], -1)
            return ms if 0 < ms <= MAX_EPOCH_MS else None
    if isinstance(value, int):
        if not 0 < value < 10**22:
            return None
        ms = value // 1_000_000 if value > 1e13 else (value if value > 1e10 else value * 1000)
    elif isinstance(value, float) and math.isfinite(value) and 0 < value < 1e22:
        ms = int(value / 1e6 if value > 1e13 else (value if value > 1e10 else value * 1000))
    else:
        return None
    return ms if 0 < ms <= MAX_EPOCH_MS else None


def redact_tree(value: object, depth: int = 0, limit: int = 2000) -> object:
    """A JSON tree with sensitive keys hidden and strings value-redacted; depth and size bounded."""
    if isinstance(value, dict):
        if depth >= 8:
            return "[truncated]"
        return {
            redact_text(str(k)[:200]): (REDACTED if is_sensitive_key(str(k)) else redact_tree(v, depth + 1, limit))
            for k, v in list(value.items())[:100]
        }
    if isinstance(value, list):
        if depth >= 8:
            return "[truncated]"
        return [redact_tree(v, depth + 1, limit) for v in value[:100]]
    if isinstance(value, str):
        return redact_text(value[: limit * 2])[:limit]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def dumps_preview(value: object, limit: int = RAW_PREVIEW_MAX) -> str:
    """Compact JSON of a redacted tree, cut: the rawPreview of a producer record."""
    try:
        return orjson.dumps(redact_tree(value)).decode()[:limit]
    except (TypeError, orjson.JSONEncodeError):
        return ""


def redact_json_text(value: str, limit: int = ATTRIBUTE_VALUE_MAX) -> str:
    """Text that may hold JSON (tool arguments, structured log bodies): key-aware redaction of the
    parsed tree when it parses, value redaction otherwise; cut to `limit`."""
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and len(stripped) <= 65536:
        try:
            parsed = orjson.loads(stripped)
        except (orjson.JSONDecodeError, ValueError):
            parsed = None
        if isinstance(parsed, (dict, list)):
            try:
                return redact_text(orjson.dumps(redact_tree(parsed, limit=limit)).decode())[:limit]
            except (TypeError, orjson.JSONEncodeError):
                pass
    return redact_text(value[: limit * 4])[:limit]


def clean_attributes(attrs: dict, max_keys: int = 120) -> dict:
    """Producer attributes: keys value-redacted, then §5.2/§5.3 (key-aware, values ≤ 500 chars);
    nested values become redacted JSON text."""
    prepared: dict = {}
    for key, value in attrs.items():
        if len(prepared) >= max_keys:
            break
        name = redact_text(str(key)[:200])[:80]
        if not name or name in prepared:
            continue
        if isinstance(value, (dict, list)):
            value = dumps_preview(value, ATTRIBUTE_VALUE_MAX)
        elif isinstance(value, str):
            value = redact_json_text(value)
        prepared[name] = value
    return sanitize_attributes(prepared, max_keys=max_keys, max_value=ATTRIBUTE_VALUE_MAX)


def source_request(doc: object, source_type: str, source_name: str) -> dict:
    """Request-level source fields and defaults from a body object (§8.3.1 / §22.2)."""
    request: dict = {}
    if isinstance(doc, dict):
        for key in _REQUEST_KEYS:
            value = doc.get(key)
            if isinstance(value, str) and value.strip():
                # the token is a credential the API hashes; it is never put on an event
                request[key] = value.strip()[:512] if key == "token" else redact_text(value.strip()[:512])
    request["sourceType"] = request.get("sourceType") or source_type
    request["sourceName"] = request.get("sourceName") or source_name
    return request


def event_defaults(request: dict) -> dict:
    return {k: v for k, v in request.items() if k in DEFAULTABLE}


def expand_documents(docs: list, what: str, is_event) -> tuple[list, dict | None]:
    """Top-level documents → (event candidates, the object that carries source fields).

    Arrays are batches; a `{"events": [...]}` object that is not itself an event is a wrapper whose
    other keys are request fields. A lone top-level scalar is a body error; inside a batch or NDJSON
    it is a rejected item."""
    out: list = []
    carrier: dict | None = None
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("events"), list) and not is_event(doc):
            carrier = carrier or doc
            out.extend(doc["events"])
        elif isinstance(doc, list):
            out.extend(doc)
        elif isinstance(doc, (dict, Rejection)):
            out.append(doc)
        elif len(docs) == 1:
            raise BodyError(f"{what} body must be a JSON object, an array or NDJSON")
        else:
            out.append(None)
    if carrier is None:
        carrier = next((d for d in out if isinstance(d, dict)), None)
    return out, carrier


def cap_documents(candidates: list, what: str, unread: int = 0, limit: int = MAX_DOCUMENTS) -> list:
    """At most `limit` candidates; one trailing `Rejection` says how many were dropped."""
    dropped = max(0, len(candidates) - limit) + unread
    if not dropped:
        return candidates
    return candidates[:limit] + [Rejection(f"too many {what} events: at most {limit} per request, {dropped} dropped")]


# ---------------------------------------------------------------- Falco

PRIORITIES = ("Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug")
_PRIORITY = {p.lower(): p for p in PRIORITIES} | {
    "emerg": "Emergency", "crit": "Critical", "err": "Error", "warn": "Warning", "info": "Informational",
}
_EXEC_TYPES = frozenset({"execve", "execveat"})
_OPEN_TYPES = frozenset({"open", "openat", "openat2", "creat", "open_by_handle_at"})
_IO_TYPES = frozenset({"read", "write", "pread", "pwrite", "readv", "writev", "preadv", "pwritev"})
_WRITE_TYPES = frozenset({"write", "pwrite", "writev", "pwritev", "creat"})
_DELETE_TYPES = frozenset({"unlink", "unlinkat", "rmdir"})
_NET_TYPES = frozenset({"connect", "sendto", "sendmsg", "sendmmsg", "accept", "accept4", "recvfrom", "recvmsg"})
_INBOUND_TYPES = frozenset({"accept", "accept4"})
_SETUID_TYPES = frozenset({"setuid", "setreuid", "setresuid", "setfsuid"})
_BIND_TYPES = frozenset({"bind", "listen"})
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")
# Kubernetes generated-name suffixes use this alphabet (no vowels, no 0/1/3)
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"(.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}")
_GENERATED_POD = re.compile(rf"(.+)-{_SAFE}{{5}}")
_STATEFUL_POD = re.compile(r"(.+)-\d{1,5}")


def workload_from_pod(pod: str | None) -> str | None:
    """The owning workload's name read off a generated pod name, or None."""
    if not pod:
        return None
    for pattern in (_DEPLOYMENT_POD, _GENERATED_POD, _STATEFUL_POD):
        match = pattern.fullmatch(pod)
        if match:
            return match.group(1)
    return None


def _field(of: dict, *keys: str, limit: int = 512) -> str | None:
    for key in keys:
        value = text(of.get(key), limit)
        if value is not None:
            return value
    return None


def _labels(of: dict) -> dict:
    labels: dict = {}
    raw = of.get("k8s.pod.labels")
    if isinstance(raw, dict):
        labels.update({str(k): v for k, v in raw.items() if isinstance(v, str)})
    elif isinstance(raw, str):
        for part in raw.strip().strip("[]").split(","):
            key, sep, value = part.strip().partition(":")
            if sep and key.strip():
                labels[key.strip()] = value.strip()
    for key, value in of.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if key.startswith("k8s.pod.label[") and key.endswith("]"):
            labels[key[len("k8s.pod.label["):-1]] = value
        elif key.startswith("k8s.pod.label."):
            labels[key[len("k8s.pod.label."):]] = value
    return labels


def _identity(of: dict) -> dict:
    ns, pod = _field(of, "k8s.ns.name"), _field(of, "k8s.pod.name")
    cid = _field(of, "container.id", limit=128)
    cname = _field(of, "container.name")
    cid = None if cid == "host" else cid
    cname = None if cname == "host" else cname
    labels = _labels(of)
    agent = (
        text(labels.get("anysentry.io/agent-id"))
        or text(labels.get("app.kubernetes.io/name"))
        or text(labels.get("app"))
        or workload_from_pod(pod)
        or cname
        or _field(of, "proc.name")
    )
    if ns and pod:
        workspace = f"{ns}/{pod}"
    elif cname or cid:
        workspace = f"container://{cname or cid}"
    else:
        workspace = None
    return {"agentId": agent, "workspacePath": workspace, "sessionId": cid or pod}


def _endpoint(host_port: str) -> tuple[str | None, int | None]:
    host, sep, port = host_port.strip().rpartition(":")
    if not sep:
        return host_port.strip() or None, None
    return host.strip("[]") or None, bounded_int(port, 0, 65535)


def _egress(of: dict, etype: str) -> dict | None:
    """Remote peer and port: `fd.rip`/`fd.rport`, else the server side `fd.sip`/`fd.sport`, else
    the `local->remote` tuple of `fd.name` (reversed for accept)."""
    rport = bounded_int(of.get("fd.rport"), 0, 65535)
    sport = bounded_int(of.get("fd.sport"), 0, 65535)
    peer = _field(of, "fd.rip", limit=256)
    port = rport if rport is not None else sport
    if not peer:
        peer = _field(of, "fd.sip", limit=256)
        port = sport if sport is not None else rport
    name = _field(of, "fd.name", limit=600)
    if name and "->" in name:
        local, _, remote = name.partition("->")
        tuple_peer, tuple_port = _endpoint(local if etype in _INBOUND_TYPES else remote)
        if not peer:
            peer, port = tuple_peer, tuple_port
        elif port is None and tuple_peer == peer:
            port = tuple_port
    if not peer:
        return None
    event: dict = {"eventKind": K.EGRESS, "peer": peer}
    if port is not None:
        event["port"] = port
    return event


def _file(of: dict, etype: str) -> dict | None:
    path = _field(of, "fd.name", limit=800)
    if not path or "->" in path:
        path = _field(of, "evt.arg.name", "evt.arg.pathname", "evt.arg.path", "evt.arg.filename", limit=800)
    if not path:
        return None
    flags = _field(of, "evt.arg.flags") or ""
    write = (
        of.get("evt.is_open_write") in (True, "true")
        or etype in _WRITE_TYPES
        or any(flag in flags for flag in _WRITE_FLAGS)
    )
    return {"eventKind": K.FILE_ACCESS, "path": path, "write": bool(write)}


def _exec(of: dict) -> dict | None:
    command = _field(of, "proc.cmdline", limit=4096)
    if not command:
        exe = _field(of, "proc.exepath", "proc.exe", "proc.name", limit=1024)
        args = _field(of, "proc.args", limit=4096)
        command = f"{exe} {args}" if exe and args else exe
    return {"eventKind": K.TOOL_EXEC, "command": command} if command else None


def _security(kind: str, detail: object) -> dict:
    return {"eventKind": K.SECURITY_ACTION, "kind": kind, "detail": str(detail)}


def _action(of: dict) -> dict | None:
    """The concrete action an alert's output fields describe, as API event fields, or None."""
    etype = (_field(of, "evt.type", limit=64) or "").lower()
    fd_type = (_field(of, "fd.type", limit=32) or "").lower()
    if etype in _EXEC_TYPES:
        return _exec(of)
    if etype in _SETUID_TYPES:
        uids = [leading_int(of.get(k)) for k in ("evt.arg.uid", "evt.arg.euid", "evt.arg.ruid", "evt.arg.suid")]
        return _security("setuid-root", 0) if 0 in uids else None
    if etype == "ptrace":
        return _security("ptrace", leading_int(of.get("evt.arg.pid")) or 0)
    if etype in _BIND_TYPES:
        port = bounded_int(of.get("fd.sport"), 0, 65535) or bounded_int(of.get("fd.lport"), 0, 65535)
        if port is None:
            name = _field(of, "fd.name", limit=600) or ""
            port = _endpoint(name.partition("->")[0])[1] if name else None
        return _security("bind", port or 0)
    if etype in _DELETE_TYPES:
        found = _file(of, etype)
        return {"eventKind": K.FILE_DELETE, "path": found["path"]} if found else None
    query = _field(of, "dns.query", "dns.question.name", "dns.qname", limit=512)
    if query:
        return {"eventKind": K.DNS, "query": query}
    if etype in _NET_TYPES or fd_type in ("ipv4", "ipv6"):
        return _egress(of, etype)
    if etype in _OPEN_TYPES or fd_type in ("file", "directory") or (etype in _IO_TYPES and not fd_type):
        return _file(of, etype)
    if etype:
        return None  # a syscall we do not model (chmod, mount, symlink, ...): the finding covers it
    # no evt.type in the output: decide by the fields present
    name = _field(of, "fd.name", limit=800) or ""
    if "->" in name or _field(of, "fd.rip", "fd.sip"):
        return _egress(of, etype)
    if name.startswith("/"):
        return _file(of, etype)
    return _exec(of)


def _is_alert(doc: dict) -> bool:
    return any(k in doc for k in ("rule", "output", "output_fields", "priority"))


def _alert_items(alert: object, defaults: dict) -> list:
    if not isinstance(alert, dict):
        return [Rejection("invalid falco alert: not a JSON object")]
    rule = text(alert.get("rule"), 200)
    output = alert.get("output") if isinstance(alert.get("output"), str) else None
    if not rule and not (output and output.strip()):
        return [Rejection("invalid falco alert: no rule or output")]
    rule = rule or "falco alert"
    of = alert.get("output_fields")
    of = of if isinstance(of, dict) else {}
    priority_raw = text(alert.get("priority"), 32) or ""
    priority = _PRIORITY.get(priority_raw.lower(), priority_raw)
    tags = alert.get("tags")
    if isinstance(tags, list):
        tag_text = ",".join(t for t in (text(tag, 80) for tag in tags[:50]) if t)
    else:
        tag_text = text(tags, 500) or ""
    hostname = text(alert.get("hostname"), 256)
    uuid = text(alert.get("uuid"), 128)

    attributes: dict = {
        "falco.rule": rule,
        "falco.priority": priority,
        "falco.source": text(alert.get("source"), 64),
        "falco.tags": tag_text,
        "falco.hostname": hostname,
        "falco.output": redact_text(output[:4000])[:ATTRIBUTE_VALUE_MAX] if output else None,
        "falco.uuid": uuid,
    }
    attributes = {k: v for k, v in attributes.items() if v not in (None, "")}
    for key, value in list(of.items())[:80]:
        if value is not None and isinstance(key, str) and key not in attributes:
            attributes[key] = value

    identity = _identity(of)
    at = epoch_ms(alert.get("time"))
    if at is None:
        at = epoch_ms(of.get("evt.rawtime"))
    uid = bounded_int(of.get("user.uid"), 0, 2**32 - 1)
    base: dict = {
        **{k: v for k, v in identity.items() if v},
        "nodeName": hostname,
        "pid": bounded_int(of.get("proc.pid"), 0, 2**32 - 1),
        "uid": uid,
        "cwd": _field(of, "proc.cwd", limit=1024),
        "at": at,
        "attributes": clean_attributes(attributes),
        "rawPreview": dumps_preview(alert),
        "process": {
            k: v for k, v in {
                "pid": bounded_int(of.get("proc.pid"), 0, 2**32 - 1),
                "ppid": bounded_int(of.get("proc.ppid"), 0, 2**32 - 1),
                "uid": uid,
                "comm": _field(of, "proc.name"),
                "exe": _field(of, "proc.exepath", "proc.exe", limit=1024),
                "cwd": _field(of, "proc.cwd", limit=1024),
            }.items() if v is not None
        } or None,
    }
    if uid is None:
        base["userId"] = _field(of, "user.name", "ka.user.name")
    base = {k: v for k, v in base.items() if v is not None}

    items: list = []
    action = _action(of)
    if action is not None:
        event = {**base, **action}
        if uuid:
            event["id"] = f"falco:{uuid}:action"
        items.append(event_item(event, defaults))
    finding = {
        **base,
        "eventKind": K.SECURITY_ACTION,
        "kind": "SecurityFinding",
        "status": "failed",
        "detail": rule,
        "subject": f"falco {priority}: {rule}" if priority else f"falco: {rule}",
    }
    if uuid:
        finding["id"] = f"falco:{uuid}:finding"
    items.append(event_item(finding, defaults))
    return items


def parse_falco_body(body: object) -> ParsedBody:
    """`POST /ingest/falco` body → request fields and one or two items per alert (see module doc)."""
    docs, unread = load_documents(body, "falco")
    candidates, carrier = expand_documents(docs, "falco", _is_alert)
    request = source_request(carrier, "falco", "falco")
    defaults = event_defaults(request)
    items: list = []
    for candidate in cap_documents(candidates, "falco", unread):
        if isinstance(candidate, Rejection):
            items.append(Rejection(candidate.reason, len(items)))
            continue
        for item in _alert_items(candidate, defaults):
            if isinstance(item, Rejection):
                item = Rejection(item.reason, len(items))
            items.append(item)
    return ParsedBody(request=request, items=items)
