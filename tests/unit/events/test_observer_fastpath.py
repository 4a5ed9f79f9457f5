"""`observer.normalize` output is pinned byte for byte (orjson) on a varied corpus, and the fast
redaction paths agree with the plain three-substitution reference of SPEC §5.1.

`observer_golden.json` was generated with the implementation that predates the fast path; it must
only be regenerated (`python tests/unit/events/test_observer_fastpath.py --regenerate`) for an
intended behaviour change, never to make an optimisation pass."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import orjson
import pytest

from anysentry.events import observer as O
from anysentry.events import redact as R
from anysentry.events.model import SourceContext
from anysentry.events.observer import DEFAULT_LLM_ENDPOINTS, NormalizeSettings, normalize

GOLDEN = Path(__file__).with_name("observer_golden.json")
NOW = 1_782_000_000_000
SETTINGS = NormalizeSettings(tuple(DEFAULT_LLM_ENDPOINTS.split(",")))
CUSTOM = NormalizeSettings(("llm.internal.test", "api.openai.com"))

SECRETS = [
    "--password=hunter2", "api_key=sk-abcdefghijklmnop1234", "Authorization: Bearer eyJhbGciOi.x.y", "TOKEN=abc123",
    "sk-proj-ABCDEFGHIJKLMNOPQRST", "x-api-key: sk-ant-api03-AbCdEfGhIjKlMnOp", "secret:'s3cr3t'", "passwd = p4ss",
    "credential=\"cred\"", "access-token=tok", "refresh_token: rt", "id_token=it", "authorization=basic dXNlcjpw",
    "\"api-key\": \"k\"", "apikey=[redacted]", "password=bearer [redacted]", "GITHUB_TOKEN=ghp_abc", "sk-short",
    "ſecret=longs", "ıd_token=dotless", "api_\u212aey=kelvin", "İD_TOKEN=dotted", "pass\u0301word=x", "SK-UPPERCASE1234567",
    "password=a,b&c}d e'f\"g\\h", "token\\\"=q", "token\\\\\\'=q", "tok\u200ben=zero", "authorization \t:\n Bearer   multi",
]
BENIGN = ["git status", "ls -la", "/workspace/src/main.py", "pypi.org", "héllo wörld ✓", "日本語テキスト", "🚀 launch",
          "Σίσυφος ΟΔΟΣ", "keyboard", "monkey", "tokens", "passage", "author", "desk-lamp", "a\tb\nc", "quote\"in",
          "back\\slash"]
KINDS = ["ToolExec", "ProcessExit", "FileAccess", "FileDelete", "LlmCall", "Egress", "Dns", "SslContent", "LlmApi",
         "SecurityAction", "RuntimeEvent"]


def _text(rng: random.Random, secret_rate: float = 0.3) -> str:
    parts = [rng.choice(BENIGN) for _ in range(rng.randint(1, 3))]
    if rng.random() < secret_rate:
        parts.insert(rng.randint(0, len(parts)), rng.choice(SECRETS))
    return rng.choice([" ", "", ",", "/"]).join(parts)


def _identity(rng: random.Random) -> object:
    choice = rng.random()
    if choice < 0.05:
        return None
    if choice < 0.08:
        return ["not", "a", "dict"]
    identity: dict = {}
    for key in ("agent", "task", "session"):
        roll = rng.random()
        if roll < 0.15:
            continue
        if roll < 0.3:
            identity[key] = None
        elif key == "task" and roll < 0.55:
            identity[key] = rng.choice([1903, 7.0, 7.5, True, 0, -3])
        elif roll < 0.85:
            identity[key] = rng.choice(["codex", "claude-code", "a3s-code", "python3", " padded ", "", "x" * 600])
        else:
            identity[key] = _text(rng, 0.8)
    return identity


def _process(rng: random.Random) -> object:
    if rng.random() < 0.15:
        return rng.choice([None, "str", 5, []])
    snake = rng.random() < 0.5
    keys = ["pid", "ppid", "uid", "comm", "exe", "cwd", "cgroup", "cgroup_id" if snake else "cgroupId",
            "systemd_unit" if snake else "systemdUnit", "host_id" if snake else "hostId", "boot_id" if snake else "bootId",
            "event_time_ns" if snake else "eventTimeNs", "start_time_ns" if snake else "startTimeNs",
            "start_time_ticks" if snake else "startTimeTicks", "mount_namespace" if snake else "mountNamespace", "unknownKey"]
    process = {}
    for key in rng.sample(keys, rng.randint(1, len(keys))):
        process[key] = rng.choice([rng.randint(0, 2**62), 18412, 1.5, 3.0, True, None, {"n": 1}, [1], _text(rng), "y" * 700])
    if rng.random() < 0.2:  # both spellings present: the later one wins, the first position stays
        process["cgroupId"], process["cgroup_id"] = 1, "two"
    return process


def _inner(rng: random.Random, kind: str) -> object:
    pid = rng.randint(1, 60000)
    inner: dict = {"pid": pid}
    if kind == "ToolExec":
        argv = [_text(rng, 0.25) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.2:
            argv += [7, 1.5, 2.0, None, True, {"d": 1}, ["l"]]
        inner.update(ppid=pid - 1, uid=rng.choice([0, 1000, "1000", None, 1.0]),
                     argv=argv if rng.random() > 0.05 else "single string argv",
                     cwd=rng.choice(["/workspace", "/", "", "  ", _text(rng)]))
        for flag in ("argv_truncated", "argv_incomplete", "exec_confirmed"):
            if rng.random() < 0.3:
                inner[flag] = rng.choice([True, False, "true"])
        if rng.random() < 0.5:
            inner.update(argv_source=rng.choice(["kernel_fragments", "proc_cmdline"]), captured_argc=len(argv), captured_bytes=120,
                         observed_argc=len(argv), observed_bytes=rng.choice([2**64 - 1, 2**63, -(2**63)]))
    elif kind == "ProcessExit":
        inner.update(exit_code=rng.choice([0, 1, 137, None]), signal=rng.choice([None, 9, "SIGKILL"]))
    elif kind in ("FileAccess", "FileDelete"):
        inner.update(path=rng.choice(["/workspace/README.md", "/root/.kube/config", "/tmp/token=abc", _text(rng)]),
                     write=rng.random() < 0.5)
    elif kind == "LlmCall":
        inner.update(sni=rng.choice(["api.openai.com", None, "", "llm.internal.test"]),
                     peer=rng.choice(["1.2.3.4", "api.anthropic.com"]), req_bytes=100, resp_bytes=900,
                     latency=rng.choice([{"secs": 1, "nanos": 5_000_000}, 12.5, True, {"secs": "x"}, None]))
    elif kind == "Egress":
        inner.update(peer=rng.choice(["169.254.169.254", "api.openai.com", "API.OPENAI.COM", "10.0.0.5", "", None, 42]),
                     port=rng.choice([443, 80, "8080", "", True, None, 1.5]), bytes=rng.randint(0, 90000))
        if rng.random() < 0.4:
            inner["sni"] = rng.choice(["chat.api.deepseek.com", "example.com", "", "llm.internal.test"])
    elif kind == "Dns":
        inner["query"] = rng.choice(["pypi.org", "api.anthropic.com.", "x7.oast.fun", "", None, 5, _text(rng)])
    elif kind == "SslContent":
        content = "POST /v1/messages HTTP/1.1\r\nhost: api.anthropic.com\r\n" + _text(rng, 0.6) * rng.randint(1, 30)
        inner.update(is_read=rng.random() < 0.3, content=content if rng.random() > 0.1 else {"not": "text"})
    elif kind == "LlmApi":
        inner.update(is_request=True, model=rng.choice(["claude-sonnet", None, _text(rng)]),
                     prompt_tokens=rng.choice([10, "20", "x", 1e300, -5, True, None, 2**60]),
                     completion_tokens=rng.choice([5, 0.5, None, "7"]))
    elif kind == "SecurityAction":
        inner.update(kind=rng.choice(["setuid-root", "ptrace", "bind", "", None]),
                     detail=rng.choice([0, 4444, "pid 7", None, _text(rng)]))
    elif kind == "RuntimeEvent":
        inner.update(kind=rng.choice(["verifier_warning", "token=leak", None]), detail=_text(rng))
    if rng.random() < 0.15:
        inner.update(comm="bash", exe="/usr/bin/bash", cgroup="/kubepods/x", systemdUnit="svc", hostId="h", eventTimeNs=2**63,
                     startTimeNs=5, query_extra={"nested": [1, "token=x"]}, sni=inner.get("sni", "sni.example"))
    if rng.random() < 0.1:
        inner["detail"] = {"deep": {"password": "p", "list": [1, 2, "sk-abcdefghijklmnopq"]}}
    return inner


def _line(rng: random.Random, kind: str, inner: object, *, escape: bool = False) -> str:
    record = {"identity": _identity(rng), "process": _process(rng), "provider": rng.choice([None, "anthropic"]),
              "event": {kind: inner}}
    text = orjson.dumps(record).decode()
    if escape:  # the same characters written as \\u escapes: decoding must still find the secret
        text = text.replace("sk-", "\\u0073k-").replace("token", "to\\u006ben").replace("é", "\\u00e9")
    return text


def _long_lines(rng: random.Random) -> list[str]:
    """Lines longer than the raw preview, with secrets placed around the 1800-character cut."""
    lines = []
    for offset in (1700, 1780, 1790, 1795, 1799, 1800, 1801, 1810, 1900, 2100, 2500, 4000):
        for secret in ("password=hunter2hunter2", "sk-" + "A" * 40, "Authorization: Bearer " + "t" * 30, "token=" + "v" * 1500):
            head = '{"identity":{"agent":"codex","task":"1","session":null},"event":{"SslContent":{"pid":1,"content":"'
            filler = "".join(rng.choice(["a", " ", ",", "}", "&", "\\n"]) if rng.random() < 0.05 else "x"
                             for _ in range(max(0, offset - len(head))))
            lines.append(head + filler + secret + " tail " + "y" * rng.choice([10, 500, 1500]) + '"}}}')
    lines.append('{"event":{"SslContent":{"pid":1,"content":"' + "sk-" + "B" * 5000 + " after" * 400 + '"}}}')
    lines.append('{"event":{"SslContent":{"pid":1,"content":"' + "password=" + "C" * 5000 + ", after" * 400 + '"}}}')
    lines.append('{"event":{"SslContent":{"pid":1,"content":"' + "plain" * 2000 + '"}}}')
    lines.append('{"event":{"SslContent":{"pid":1,"content":"' + "api_key=x," * 900 + '"}}}')
    return lines


def build_corpus() -> list[tuple[object, dict]]:
    """~300 deterministic (item, normalize kwargs) cases."""
    rng = random.Random(20240607)
    cases: list[tuple[object, dict]] = []
    for i in range(150):  # plain {"line": ...} items: every kind, realistic and adversarial
        kind = KINDS[i % len(KINDS)]
        cases.append(({"line": _line(rng, kind, _inner(rng, kind), escape=i % 17 == 0)}, {}))
    for text in _long_lines(rng):
        cases.append(({"line": text}, {}))
    huge = ["arg%d" % i for i in range(1500)]
    cases.append(({"line": _line(rng, "ToolExec", {"pid": 1, "argv": huge})}, {}))
    cases.append(({"line": _line(rng, "ToolExec", {"pid": 1, "argv": ["z" * 20000, "w" * 13000, "--token=abc"]})}, {}))
    cases.append(({"line": _line(rng, "ToolExec", {"pid": 1, "argv": ["q" * 40000]})}, {}))
    overrides = {
        "collectorId": ["col-1", "  col token=abc  ", 17], "nodeName": ["node-1", "sk-abcdefghijklmnopqrs"],
        "agentId": ["agent-x", " ", "password=p"], "workspacePath": ["/ws", "w" * 1200], "sessionId": ["s-1", 5],
        "runId": ["r-1", ""], "userId": ["alice", True], "traceId": ["tr-given", "t" * 300], "spanId": ["sp-given"],
        "parentSpanId": ["p-1"], "taskId": ["task-9"], "sourceEventId": ["ose_1", "x" * 300, " "],
        "subject": ["custom subject", "s" * 3000, "api_key=k"],
        "eventKind": ["exec", "NetworkEgress", "file_read", "Custom.Kind", 7, True, "", "token=zz"],
        "eventCategory": ["Network", "bogus", " tool ", None], "source": ["api", "synthetic", "observer", "bogus", None],
        "tokenCount": [12, "40", -1, 1e20, None], "latencyMs": [2.5, "x", None],
        "at": [1_700_000_000, "2024-06-01T00:00:00Z", "nonsense", True, -5],
        "rawPreview": ["given preview password=x", "p" * 5000], "attributeValueLimit": [500, 240, "500"],
        "attributes": [{"team": "blue", "api_key": "zzz", "nested": {"a": [1, "token=t"]}, "n": 2**70, "f": float("inf"),
                        "observerKind": "overwritten", "collectorId": "from-attrs"},
                       {f"k{i}": "v" * 300 for i in range(130)}, "not a dict"],
        "process": [{"pid": 9, "comm": "from-item", "hostId": "secret=h"}, {}, "bad", {"cgroupId": 2**70}],
        "attribution": [{"classification": "confirmed_agent", "monitored": True, "evidence": ["password=x", {"token": "t"}],
                         "confidence": float("nan")},
                        {"classification": 5}, "not a dict", {"deep": {"a": {"b": {"c": {"d": {"e": 1}}}}}}],
    }
    keys = list(overrides)
    for i in range(70):  # request overrides, alone and combined
        kind = KINDS[i % len(KINDS)]
        item: dict = {"line": _line(rng, kind, _inner(rng, kind))}
        for key in ([keys[i % len(keys)]] if i < len(keys) else rng.sample(keys, rng.randint(2, 8))):
            item[key] = rng.choice(overrides[key])
        kwargs: dict = {}
        if i % 3 == 0:
            kwargs["source"] = rng.choice([SourceContext("src_1", "/from/source", "col-src"), SourceContext(),
                                           SourceContext("src_2")])
        if i % 4 == 0:
            kwargs["default_source"] = rng.choice(["api", "synthetic", "weird"])
        cases.append((item, kwargs))
    for i in range(12):  # SourceContext and settings on plain items
        kind = ["Egress", "Dns", "ToolExec", "LlmCall"][i % 4]
        cases.append(({"line": _line(rng, kind, _inner(rng, kind))},
                      {"source": SourceContext("src_%d" % i, "/src/ws" if i % 2 else "", "col" if i % 3 else ""),
                       "settings": CUSTOM if i % 2 else SETTINGS}))
    record = {"identity": {"agent": "api-agent", "task": None, "session": "s"}, "event": {"Custom.Thing": {"detail": "token=x"}}}
    cases += [
        ({"line": record}, {"default_source": "api"}),
        ({"line": record, "lineText": '{"synth":true}'}, {"default_source": "api"}),
        ({"line": {"event": {"Dns": {"query": "api.openai.com"}}}, "lineText": 5}, {}),
        ({"line": {"event": {"Dns": {"query": "q", "bad": float("nan")}}}}, {}),
        ({"line": _line(rng, "Unknown", {"pid": 1})}, {}),
        ({"line": _line(rng, "Unknown", {"pid": 1})}, {"default_source": "api"}),
        ({"line": _line(rng, "  sk-abcdefghijklmnopqr  ", {"pid": 1})}, {"default_source": "synthetic"}),
        ({"line": '{"event":"ProcessExit"}'}, {}), ({"line": '{"event":{"Dns":null}}'}, {}), ({"line": '{"event":{"Dns":5}}'}, {}),
        ({"line": '{"event":{}}'}, {}), ({"line": '{"event":[]}'}, {}), ({"line": '{"event":{" ":{}}}'}, {"default_source": "api"}),
        ({"line": ""}, {}), ({"line": "   "}, {}), ({"line": "[1,2]"}, {}), ({"line": "{bad json"}, {}),
        ({"line": " {\"event\":\"Dns\"}"}, {}),
        ({"line": b'{"event":"Dns"}'}, {}), ({"line": 5}, {}), ({}, {}), ("not a dict", {}), ({"line": None, "agentId": "a"}, {}),
        ({"line": '{"event":{"Dns":{"query":"x"}},"identity":{"agent":"a"}}', "agentId": None, "at": None}, {}),
        ({"line": '{"event":{"CollectorHeartbeat":{"collector_id":"c1","exec":5,"sec":1,"message":"token=abc",'
                  '"enabled_features":["a",1]}}}'}, {}),
        ({"line": '{"event":{"CollectorHeartbeat":{}}}', "collectorId": "given", "nodeName": "n"}, {}),
        ({"line": '{"event":{"Dns":{"query":"api.openai.com"}}}'}, {"now": 1_500_000_000_000.0}),
        ({"line": '{"event":{"Dns":{"query":"\\u0074oken=abc"}}}'}, {}),
        ({"line": '{"event":{"Dns":{"query":"x"}},"identity":{"agent":"\\u0073k-abcdefghijklmnop"}}'}, {}),
    ]
    return cases


def _result(item: object, kwargs: dict) -> dict:
    kwargs = {"now": NOW, "settings": SETTINGS, **kwargs}
    out = normalize(item, **kwargs)  # type: ignore[arg-type]
    return {"type": type(out).__name__, "value": out}


def test_corpus_is_large_and_varied():
    cases = build_corpus()
    assert len(cases) >= 280
    types = [_result(item, kw)["type"] for item, kw in cases]
    assert {"Observation", "Rejection", "Heartbeat"} <= set(types)


def test_normalize_matches_golden_byte_for_byte():
    golden = orjson.loads(GOLDEN.read_bytes())
    cases = build_corpus()
    assert len(golden) == len(cases)
    mismatches = [i for i, ((item, kw), want) in enumerate(zip(cases, golden))
                  if orjson.dumps(_result(item, kw)) != orjson.dumps(want)]
    assert not mismatches, f"{len(mismatches)} cases differ from the golden output, first {mismatches[:10]}"


def test_request_fields_read_once_per_producer_give_the_same_events():
    """Text request fields (a collector's `collectorId` on every item) are read and redacted once per
    distinct set; the corpus normalised again, every such set now remembered, matches the golden
    output too, and a remembered set is never applied to an item with other values."""
    golden = orjson.loads(GOLDEN.read_bytes())
    cases = build_corpus()
    for _ in range(2):
        assert [orjson.dumps(_result(item, kw)) for item, kw in cases] == [orjson.dumps(want) for want in golden]
    line = _line(random.Random(1), "ToolExec", {"pid": 1, "argv": ["ls"]})
    first = normalize({"line": line, "collectorId": "col token=abc"}, now=NOW).event
    again = normalize({"line": line, "collectorId": "col token=abc"}, now=NOW).event
    other = normalize({"line": line, "collectorId": "col-b", "nodeName": "n1"}, now=NOW).event
    assert first.collectorId == again.collectorId == "col token=[redacted]"
    assert (other.collectorId, other.attributes["collectorNode"]) == ("col-b", "n1")


def test_bare_line_items_agree_with_the_override_path():
    """`{"line": ...}` skips the override lookups; an item whose overrides are all null takes them."""
    for item, kwargs in build_corpus():
        if isinstance(item, dict) and set(item) == {"line"}:
            plain = _result(item, kwargs)
            assert orjson.dumps(plain) == orjson.dumps(_result({**item, "agentId": None, "attributes": None}, kwargs))


def test_copied_payload_keys_are_not_sensitive():
    # the attribute copy loop relies on it: a sensitive payload key would need its value redacted
    assert not [key for key in O._COPIED if R.is_sensitive_key(key) and key != "kind"]


def _reference_redact(text: str) -> str:
    """SPEC §5.1 as three plain substitutions, gated by the historical marker check."""
    if not text or not any(m in text.lower() for m in R._MARKERS):
        return text
    text = R._BEARER.sub(r"\1" + R.REDACTED, text)
    text = R._ASSIGNMENT.sub(r"\1" + R.REDACTED, text)
    return R._SK_KEY.sub("sk-" + R.REDACTED, text)


_ALPHABET = list("aeiknoprstwy-_:=\"' \t\n,}&\\[]AKST") + ["token", "secret", "password", "passwd", "authorization", "api_key",
    "api-key", "apikey", "access_token", "refresh-token", "id_token", "credential", "bearer ", "basic ", "sk-", "[redacted]",
    "x" * 13, "İ", "ı", "ſ", "\u212a", "é", "Σ"]


def test_redact_text_agrees_with_reference_on_fuzzed_text():
    rng = random.Random(5)
    for _ in range(20000):
        text = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 40)))
        assert R.redact_text(text) == _reference_redact(text), text
    for secret in SECRETS:
        for text in (secret, f"x {secret} y", f'{{"a":"{secret}","b":"{secret}"}}', secret.upper(), secret * 3):
            assert R.redact_text(text) == _reference_redact(text), text


def test_recurring_redaction_equals_redacting_each_time():
    """The memo behind alert and incident texts: repeats (also once it has been emptied at its bound,
    and texts too long to remember) come back exactly as redact_text gives them."""
    rng = random.Random(9)
    texts = ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(600)]
    texts += [f"token={n} " + "x" * R.RECURRING_MAX_LEN for n in range(3)] + [f"agent-{n}" for n in range(R.RECURRING_LIMIT)]
    for _ in range(2):
        for text in texts + texts[:600]:
            assert R.redact_recurring(text) == _reference_redact(text), text
            assert len(R._recurring) <= R.RECURRING_LIMIT
    assert all(len(text) <= R.RECURRING_MAX_LEN for text in R._recurring)


@pytest.mark.parametrize("limit", [1, 10, 100, 1800])
@pytest.mark.parametrize("margin", [0, 7, 256])
def test_redacted_head_equals_redact_then_cut(limit, margin, monkeypatch):
    monkeypatch.setattr(R, "_HEAD_MARGIN", margin)  # small margins exercise the bounded prefix more often
    rng = random.Random(limit * 1000 + margin)
    for _ in range(1000):
        text = "".join(rng.choice(_ALPHABET + ["x" * 50, "y" * 400]) for _ in range(rng.randint(0, 120)))
        assert R.redact_head(text, limit) == _reference_redact(text)[:limit], text


def _write_golden() -> None:
    entries = [orjson.loads(orjson.dumps(_result(item, kw))) for item, kw in build_corpus()]
    GOLDEN.write_bytes(b"[\n" + b",\n".join(orjson.dumps(e) for e in entries) + b"\n]\n")  # one case a line
    print(f"wrote {len(entries)} cases to {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: test_observer_fastpath.py --regenerate  (only for an intended behaviour change)")
    _write_golden()


def test_a_new_event_holds_the_models_defaults_until_it_is_judged():
    """normalize passes every AgentEvent field by position (cheaper than keywords), so the decision
    fields it writes out must stay the ones the model declares."""
    from dataclasses import fields

    from anysentry.events.model import AgentEvent

    event = normalize({"line": orjson.dumps({"event": {"ToolExec": {"argv": ["ls"]}}}).decode()}, now=NOW).event
    undecided = [f for f in fields(AgentEvent)
                 if f.name in ("decisionStatus", "evaluationId", "policyVersion", "verdict", "tier", "severity", "reason",
                               "actionKind", "actionTarget", "riskCategory", "riskName", "riskType", "riskScore",
                               "judgment", "schemaVersion")]
    assert len(undecided) == 15
    assert {f.name: getattr(event, f.name) for f in undecided} == {f.name: f.default for f in undecided}
