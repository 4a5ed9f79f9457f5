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

Body errors raise `BodyError`; a bad alert becomes a `Rejection` item; nothing else escapes."""

from __future__ import annotations

import re


from anysentry.events import kinds as K
from anysentry.events.model import ParsedBody, Rejection
from anysentry.events.producer_body import (
    ATTRIBUTE_VALUE_MAX,
    bounded_int,
    cap_documents,
    clean_attributes,
    dumps_preview,
    epoch_ms,
    event_defaults,
    expand_documents,
    leading_int,
    load_documents,
    source_request,
    text,
)
from anysentry.events.redact import redact_text
from anysentry.events.synthesize import event_item

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
