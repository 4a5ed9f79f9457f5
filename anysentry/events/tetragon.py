"""Tetragon JSON export events → /ingest items (`POST /ingest/tetragon`).

Input: Tetragon's JSON export (the export file, `tetra getevents -o json`, or a forwarder of either):
NDJSON, a JSON array, one object, or the `{"events": [...], sourceId?, token?, ...}` wrapper. Each
event is `{"<type>": {...}, "node_name": ..., "time": ...}` with snake_case fields (camelCase, as
emitted by protojson without `UseProtoNames`, is read too).

| event                    | item                                                                   |
|--------------------------|------------------------------------------------------------------------|
| `process_exec`           | ToolExec: argv = `process.binary` + shell-split `process.arguments`; pid, uid, cwd |
| `process_exit`           | ProcessExit: status = signal or `exit <code>`, exit_code               |
| `process_kprobe` / `process_lsm` / `process_tracepoint` / `process_uprobe`, by function (after dropping `__x64_sys_`, `sys_`, `security_`, … prefixes): | |
| `tcp_connect`, `tcp_sendmsg`, `udp_sendmsg`, `connect`, `socket_connect` | Egress to the `sock_arg` daddr:dport (or `sockaddr_arg`) |
| `fd_install`, `file_permission`, `file_open`, `open`, `openat`, `openat2`, `read`/`write`, `mmap_file`, `path_truncate` | FileAccess of `file_arg`/`path_arg`/`string_arg` path; `write` from the permission mask or open flags |
| `unlink`, `unlinkat`, `rmdir`, `path_unlink`, `path_rmdir` | FileDelete                              |
| `setuid`/`setreuid`/`setresuid`/`setfsuid` with a uid argument 0 | SecurityAction `setuid-root 0` |
| `commit_creds`/`task_fix_setuid` to uid 0 by a process that was not root | SecurityAction `setuid-root 0` (a root process re-committing root credentials is routine and stays a RuntimeEvent) |
| `ptrace`, `ptrace_access_check` | SecurityAction `ptrace <target pid>`                             |
| `inet_csk_listen_start`, `bind`, `listen`, `socket_bind`, `socket_listen` | SecurityAction `bind <port>` |
| any other function, or a mapped one without the argument it needs | RuntimeEvent, kind = the function name |
| any other event type (`process_loader`, `rate_limit_info`, ...) | rejected: `unsupported tetragon event: <type>` |

Identity from `process.pod`: workspacePath `<namespace>/<name>`, agentId = the
`anysentry.io/agent-id` pod label, else `workload`, else the container name, else the binary's base
name (host processes, as the node observer names them); sessionId = the container id (runtime
scheme dropped), else the pod name; `node_name` → nodeName; `time` → at. `process_exec` and
`process_exit` use `exec_id` as source event id, so a re-sent export upserts. sourceType and
sourceName default to `tetragon`. Body errors raise `BodyError`; nothing else escapes."""

from __future__ import annotations

import posixpath
import re
import shlex

from anysentry.events import kinds as K
from anysentry.events.producer_body import (
    bounded_int,
    cap_documents,
    clean_attributes,
    dumps_preview,
    epoch_ms,
    event_defaults,
    expand_documents,
    load_documents,
    source_request,
    text,
)
from anysentry.events.model import ParsedBody, Rejection
from anysentry.events.synthesize import ARGV_MAX_TOTAL, event_item

EXEC, EXIT = "process_exec", "process_exit"
PROBE_TYPES = ("process_kprobe", "process_lsm", "process_tracepoint", "process_uprobe")
SUPPORTED = (EXEC, EXIT, *PROBE_TYPES)
_META = frozenset({"node_name", "nodeName", "time", "aggregation_info", "aggregationInfo", "node_labels",
                   "nodeLabels", "cluster_name", "clusterName"})
_FN_PREFIXES = ("__x64_sys_", "__arm64_sys_", "__ia32_compat_sys_", "__ia32_sys_", "__se_sys_", "__do_sys_",
                "sys_enter_", "sys_exit_", "ksys_", "sys_", "security_", "bpf_lsm_")
_EGRESS_FN = frozenset({"tcp_connect", "tcp_v4_connect", "tcp_v6_connect", "tcp_sendmsg", "udp_sendmsg",
                        "connect", "socket_connect", "ip4_datagram_connect"})
_FILE_FN = frozenset({"fd_install", "file_permission", "file_open", "open", "openat", "openat2", "creat",
                      "read", "write", "pread64", "pwrite64", "mmap_file", "path_truncate", "file_truncate",
                      "vfs_open", "vfs_read", "vfs_write"})
_WRITE_FN = frozenset({"write", "pwrite64", "path_truncate", "file_truncate", "vfs_write", "creat"})
_DELETE_FN = frozenset({"unlink", "unlinkat", "rmdir", "path_unlink", "path_rmdir"})
_SETUID_FN = frozenset({"setuid", "setreuid", "setresuid", "setfsuid"})
_CREDS_FN = frozenset({"commit_creds", "task_fix_setuid"})
_PTRACE_FN = frozenset({"ptrace", "ptrace_access_check", "ptrace_traceme"})
_BIND_FN = frozenset({"inet_csk_listen_start", "bind", "listen", "socket_bind", "socket_listen"})
_MAY_WRITE = 0x2
_SCHEME = re.compile(r"^[a-z0-9+.-]+://")


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _get(obj: object, key: str) -> object:
    """A field by its snake_case name, or its camelCase spelling."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    return obj.get(_camel(key)) if value is None else value


def _obj(obj: object, key: str) -> dict:
    value = _get(obj, key)
    return value if isinstance(value, dict) else {}


def _event_type(doc: dict) -> str | None:
    for key in doc:
        if isinstance(key, str) and key in SUPPORTED:
            return key
    camel = {_camel(t): t for t in SUPPORTED}
    for key in doc:
        if isinstance(key, str) and key in camel:
            return camel[key]
    for key, value in doc.items():
        if key not in _META and isinstance(value, dict):
            return str(key)
    return None


def _is_event(doc: dict) -> bool:
    return _event_type({k: v for k, v in doc.items() if k != "events"}) is not None


def _function(name: str) -> str:
    fn = name.strip().lower()
    for prefix in _FN_PREFIXES:
        if fn.startswith(prefix) and len(fn) > len(prefix):
            return fn[len(prefix):]
    return fn


def _args(inner: dict) -> list[dict]:
    args = _get(inner, "args")
    return [a for a in args[:32] if isinstance(a, dict)] if isinstance(args, list) else []


def _arg(args: list[dict], *names: str) -> object:
    for arg in args:
        for name in names:
            value = _get(arg, name)
            if value is not None:
                return value
    return None


def _ints(args: list[dict]) -> list[int]:
    out = []
    for arg in args:
        for name in ("int_arg", "uint_arg", "long_arg", "size_arg"):
            value = bounded_int(_get(arg, name), -(2**63), 2**64)
            if value is not None:
                out.append(value)
                break
    return out


def _uid_value(value: int) -> int:
    """Tetragon renders (uid_t)-1 as 4294967295: both mean "unchanged"."""
    return -1 if value in (4294967295, 2**64 - 1) else value


def _sock(args: list[dict]) -> tuple[str | None, int | None, int | None]:
    """(remote address, remote port, local port) from a sock/skb/sockaddr argument."""
    sock = _arg(args, "sock_arg", "skb_arg")
    if isinstance(sock, dict):
        return (text(_get(sock, "daddr"), 256), bounded_int(_get(sock, "dport"), 0, 65535),
                bounded_int(_get(sock, "sport"), 0, 65535))
    addr = _arg(args, "sockaddr_arg")
    if isinstance(addr, dict):
        port = bounded_int(_get(addr, "port"), 0, 65535)
        return text(_get(addr, "addr"), 256), port, port
    return None, None, None


def _path(args: list[dict]) -> str | None:
    for name in ("file_arg", "path_arg", "linux_binprm_arg"):
        value = _arg(args, name)
        if isinstance(value, dict):
            path = text(_get(value, "path"), 800)
            if path:
                return path
    strings = [s for s in (text(_get(a, "string_arg"), 800) for a in args) if s]
    return next((s for s in strings if s.startswith("/")), strings[0] if strings else None)


def _security(kind: str, detail: object) -> dict:
    return {"eventKind": K.SECURITY_ACTION, "kind": kind, "detail": str(detail)}


def _probe(fn: str, args: list[dict], process: dict) -> dict | None:
    """A probe's function and arguments → API event fields, or None (then it is a RuntimeEvent)."""
    if fn in _EGRESS_FN:
        peer, port, _ = _sock(args)
        if not peer:
            return None
        event: dict = {"eventKind": K.EGRESS, "peer": peer}
        if port is not None:
            event["port"] = port
        return event
    if fn in _FILE_FN or fn in _DELETE_FN:
        path = _path(args)
        if not path:
            return None
        if fn in _DELETE_FN:
            return {"eventKind": K.FILE_DELETE, "path": path}
        ints = _ints(args)
        if fn == "file_permission":
            write = any(i & _MAY_WRITE for i in ints if i >= 0)
        elif fn in ("open", "openat", "openat2"):
            write = any(i >= 0 and i & 0o3 in (1, 2) for i in ints[1:] or ints)
        else:
            write = fn in _WRITE_FN
        return {"eventKind": K.FILE_ACCESS, "path": path, "write": write}
    if fn in _SETUID_FN:
        return _security("setuid-root", 0) if 0 in [_uid_value(i) for i in _ints(args)] else None
    if fn in _CREDS_FN:
        creds = _arg(args, "process_credentials_arg", "cred_arg")
        if not isinstance(creds, dict):
            return None
        uids = [bounded_int(_get(creds, k), 0, 2**32) for k in ("uid", "euid", "fsuid")]
        was_root = bounded_int(_get(process, "uid"), 0, 2**32) == 0
        return _security("setuid-root", 0) if 0 in uids and not was_root else None
    if fn in _PTRACE_FN:
        ints = _ints(args)
        # ptrace(request, pid, ...): the target is the second argument; the LSM hook carries none
        target = ints[1] if fn == "ptrace" and len(ints) >= 2 else 0
        return _security("ptrace", target if target > 0 else 0)
    if fn in _BIND_FN:
        _, _, local_port = _sock(args)
        return _security("bind", local_port or 0)
    return None


def _argv(process: dict) -> tuple[list[str], bool]:
    binary = text(_get(process, "binary"), 4096) or "unknown"
    raw = _get(process, "arguments")
    if not isinstance(raw, str) or not raw.strip():
        return [binary], False
    cut = len(raw) > ARGV_MAX_TOTAL
    raw = raw[:ARGV_MAX_TOTAL]
    try:
        parts = shlex.split(raw)
    except ValueError:
        parts = raw.split()
    return [binary, *parts], cut


def _identity(process: dict) -> dict:
    pod = _obj(process, "pod")
    container = _obj(pod, "container")
    labels = _obj(pod, "pod_labels")
    namespace, name = text(_get(pod, "namespace"), 253), text(_get(pod, "name"), 253)
    container_id = text(_get(container, "id"), 256)
    if container_id:
        container_id = _SCHEME.sub("", container_id) or None
    binary = text(_get(process, "binary"), 4096)
    agent = (
        text(labels.get("anysentry.io/agent-id"))
        or text(_get(pod, "workload"))
        or text(_get(container, "name"))
        or (posixpath.basename(binary) if binary else None)
    )
    return {
        "agentId": agent,
        "workspacePath": f"{namespace}/{name}" if namespace and name else None,
        "sessionId": container_id or name,
    }


def _attributes(kind: str, doc: dict, inner: dict, process: dict, parent: dict, fn_name: str | None) -> dict:
    pod = _obj(process, "pod")
    container = _obj(pod, "container")
    attrs: dict = {
        "tetragon.type": kind,
        "tetragon.function": fn_name,
        "tetragon.policy": _get(inner, "policy_name"),
        "tetragon.action": _get(inner, "action"),
        "tetragon.exec_id": _get(process, "exec_id"),
        "tetragon.flags": _get(process, "flags"),
        "tetragon.parent.binary": _get(parent, "binary"),
        "tetragon.parent.exec_id": _get(process, "parent_exec_id"),
        "tetragon.cluster": _get(doc, "cluster_name"),
        "k8s.namespace.name": _get(pod, "namespace"),
        "k8s.pod.name": _get(pod, "name"),
        "k8s.workload.name": _get(pod, "workload"),
        "k8s.workload.kind": _get(pod, "workload_kind"),
        "container.id": _get(container, "id"),
        "container.name": _get(container, "name"),
        "container.image.name": _get(_obj(container, "image"), "name"),
    }
    if kind in PROBE_TYPES:
        args = _get(inner, "args")
        if isinstance(args, list) and args:
            attrs["tetragon.args"] = args
        if kind == "process_tracepoint":
            attrs["tetragon.subsys"] = _get(inner, "subsys")
        if kind == "process_uprobe":
            attrs["tetragon.path"] = _get(inner, "path")
    if kind == EXIT:
        attrs["signal"] = _get(inner, "signal")
    labels = _obj(pod, "pod_labels")
    for key, value in list(labels.items())[:16]:
        attrs[f"k8s.pod.label.{key}"] = value
    return clean_attributes({k: v for k, v in attrs.items() if v not in (None, "", [], {})})


def _event_items(doc: object, defaults: dict) -> dict | Rejection:
    if not isinstance(doc, dict):
        return Rejection("invalid tetragon event: not a JSON object")
    kind = _event_type(doc)
    if kind is None:
        return Rejection("invalid tetragon event: no event type")
    if kind not in SUPPORTED:
        return Rejection(f"unsupported tetragon event: {text(kind, 80) or '?'}")
    inner = _get(doc, kind)
    if not isinstance(inner, dict):
        return Rejection(f"invalid tetragon event: {kind} is not an object")
    process = _obj(inner, "process")
    parent = _obj(inner, "parent")

    fn_name = None
    if kind == EXEC:
        argv, cut = _argv(process)
        action: dict = {"eventKind": K.TOOL_EXEC, "argv": argv}
        if cut:
            action["argvTruncated"] = True
    elif kind == EXIT:
        code = bounded_int(_get(inner, "status"), -(2**31), 2**32)
        signal = text(_get(inner, "signal"), 32)
        action = {"eventKind": K.PROCESS_EXIT, "status": signal or (f"exit {code}" if code is not None else "exited")}
        if code is not None:
            action["exitCode"] = code
    else:
        raw_fn = _get(inner, "function_name") or _get(inner, "event") or _get(inner, "symbol")
        fn_name = text(raw_fn, 120) or "unknown"
        action = _probe(_function(fn_name), _args(inner), process) or {
            "eventKind": K.RUNTIME_EVENT, "runtimeKind": fn_name,
        }

    pid = bounded_int(_get(process, "pid"), 0, 2**32 - 1)
    uid = bounded_int(_get(process, "uid"), 0, 2**32 - 1)
    cwd = text(_get(process, "cwd"), 1024)
    binary = text(_get(process, "binary"), 1024)
    event: dict = {
        **{k: v for k, v in _identity(process).items() if v},
        **action,
        "nodeName": text(_get(doc, "node_name"), 253),
        "pid": pid,
        "uid": uid,
        "cwd": cwd,
        "at": epoch_ms(_get(doc, "time")) or epoch_ms(_get(inner, "time")),
        "attributes": _attributes(kind, doc, inner, process, parent, fn_name),
        "rawPreview": dumps_preview(doc),
        "process": {
            k: v for k, v in {
                "pid": pid,
                "ppid": bounded_int(_get(parent, "pid"), 0, 2**32 - 1),
                "uid": uid,
                "exe": binary,
                "comm": posixpath.basename(binary) if binary else None,
                "cwd": cwd,
            }.items() if v is not None
        } or None,
    }
    exec_id = text(_get(process, "exec_id"), 200)
    if exec_id and kind in (EXEC, EXIT):
        event["id"] = f"tetragon:{kind}:{exec_id}"
    return event_item({k: v for k, v in event.items() if v is not None}, defaults)


def parse_tetragon_body(body: object) -> ParsedBody:
    """`POST /ingest/tetragon` body → request fields and one item per event (see module doc)."""
    docs, unread = load_documents(body, "tetragon")
    candidates, carrier = expand_documents(docs, "tetragon", _is_event)
    request = source_request(carrier, "tetragon", "tetragon")
    defaults = event_defaults(request)
    items: list = []
    for candidate in cap_documents(candidates, "tetragon", unread):
        item = candidate if isinstance(candidate, Rejection) else _event_items(candidate, defaults)
        if isinstance(item, Rejection):
            item = Rejection(item.reason, len(items))
        items.append(item)
    return ParsedBody(request=request, items=items)
