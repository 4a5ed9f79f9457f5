"""`anysentry judge`: observer NDJSON (or generic JSON event lines) on stdin → one decision line
per event on stdout, counts on stderr. No server, no store: pipes, CI and policy tests.

It never stops on bad input: a malformed line is counted and reported by its line number. Only an
unusable `--policy` file ends the run (exit 2), with the problem named and no traceback."""

from __future__ import annotations

import argparse
import sys

import orjson

from anysentry.events import kinds as K
from anysentry.events.model import Heartbeat, Observation
from anysentry.events.observer import normalize
from anysentry.judge.engine import Judge
from anysentry.judge.policy import load_policy_file
from anysentry.judge.rules import PolicyError

# generic (non-observer) line fields that describe the envelope rather than the event payload
_ENVELOPE = frozenset({"kind", "eventKind", "type", "agent", "agentId", "session", "sessionId", "task",
                       "attributes", "attribution", "at", "timestamp", "time", "source", "id", "sourceEventId",
                       "workspacePath", "runId", "traceId", "spanId", "userId", "collectorId", "nodeName", "process"})
_ITEM_FIELDS = ("agentId", "sessionId", "workspacePath", "runId", "traceId", "spanId", "userId", "collectorId",
                "nodeName", "sourceEventId")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="print a decision line for every event, allow included")
    parser.add_argument("--policy", metavar="FILE",
                        help="a Policy manifest (anysentry.io/v1alpha1) or a PolicyConfig in YAML/JSON")


def _generic_kind(record: dict) -> str:
    for key in ("kind", "eventKind", "type"):
        kind = K.canonical_kind(record.get(key)) if isinstance(record.get(key), str) else ""
        if kind:
            return kind
    if "argv" in record or "command" in record:
        return K.TOOL_EXEC
    if "content" in record:
        return K.SSL_CONTENT
    if "query" in record:
        return K.DNS
    if "peer" in record or "host" in record:
        return K.EGRESS
    if "path" in record:
        return K.FILE_ACCESS
    return ""


def generic_item(record: dict) -> dict | None:
    """A generic JSON event line (no `event` key) → an /ingest item with a synthesised observer line.

    Deliberately looser than `POST /ingest/events` (`anysentry.events.generic`): a policy author's
    hand-written test lines may use shorthand keys (`agent`, `session`, `host`, `action`, `type`)."""
    kind = _generic_kind(record)
    if not kind:
        return None
    inner = {k: v for k, v in record.items() if k not in _ENVELOPE}
    if kind == K.TOOL_EXEC and "argv" not in inner and isinstance(inner.get("command"), str):
        inner["argv"] = [inner.pop("command")]
    if kind == K.EGRESS and "peer" not in inner and "host" in inner:
        inner["peer"] = inner.pop("host")
    if kind == K.SECURITY_ACTION and isinstance(record.get("action"), str):
        inner.setdefault("kind", inner.pop("action"))
    identity = {"agent": record.get("agent") or record.get("agentId"), "task": record.get("task"),
                "session": record.get("session") or record.get("sessionId")}
    line = {"identity": identity, "event": {kind: inner}}
    if isinstance(record.get("process"), dict):
        line["process"] = record["process"]
    item: dict = {"line": line, "lineText": orjson.dumps(line).decode(), "source": "api"}
    for key in _ITEM_FIELDS:
        if key in record:
            item[key] = record[key]
    for key in ("attributes", "attribution"):
        if isinstance(record.get(key), dict):
            item[key] = record[key]
    for key in ("at", "timestamp", "time"):
        if record.get(key) is not None:
            item["at"] = record[key]
            break
    return item


def _item(raw: bytes) -> tuple[dict | None, str]:
    """One stdin line → (/ingest item, '') or (None, why it is malformed)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    if not text.lstrip().startswith("{"):
        return None, "unparseable event"
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, "unparseable event"
    if not isinstance(record, dict):
        return None, "unparseable event"
    if "event" in record:
        item = {"line": record, "lineText": text.rstrip("\r\n")}
        if isinstance(record.get("attribution"), dict):
            item["attribution"] = record["attribution"]
        return item, ""
    item = generic_item(record)
    return (item, "") if item is not None else (None, "unparseable event")


def _decision_line(number: int, obs: Observation) -> bytes:
    event = obs.event
    out = {
        "line": number,
        "eventId": event.eventId,
        "eventKind": event.eventKind,
        "subject": event.subject,
        "verdict": event.verdict,
        "tier": event.tier,
        "severity": event.severity,
        "reason": event.reason,
        "riskCategory": event.riskCategory,
        "riskScore": int(event.riskScore) if float(event.riskScore).is_integer() else event.riskScore,
    }
    if event.actionKind:
        out["action"] = {"kind": event.actionKind, "target": event.actionTarget}
    return orjson.dumps(out) + b"\n"


def judge_stream(judge: Judge, lines, out, err, *, show_all: bool = False) -> dict:
    """Judge every line of a byte stream; returns the counts."""
    counts = {"lines": 0, "events": 0, "allow": 0, "escalate": 0, "block": 0, "malformed": 0, "dropped": 0}
    for number, raw in enumerate(lines, start=1):
        counts["lines"] = number
        if not raw.strip():
            counts["dropped"] += 1  # blank line: nothing to judge
            continue
        item, problem = _item(raw)
        result = normalize(item) if item is not None else None
        if isinstance(result, Heartbeat):
            counts["dropped"] += 1  # control plane only, never judged (§6.2)
            continue
        if not isinstance(result, Observation):
            counts["malformed"] += 1
            err.write(f"line {number}: {problem or result.reason}\n")
            continue
        if judge.judge_event(result) is None:
            counts["dropped"] += 1
            continue
        counts["events"] += 1
        counts[result.event.verdict] += 1
        if show_all or result.event.verdict != "allow":
            out.write(_decision_line(number, result))
    return counts


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy_file(args.policy) if args.policy else None
        judge = Judge(policy)
    except PolicyError as exc:
        sys.stderr.write(f"anysentry judge: unusable policy {args.policy}: {exc}\n")
        return 2
    out = sys.stdout.buffer
    counts = judge_stream(judge, sys.stdin.buffer, out, sys.stderr, show_all=bool(args.all))
    out.flush()
    sys.stderr.write(orjson.dumps(counts).decode() + "\n")
    return 0
