"""The pages' data shaping on real API answers (`api_responses.json`, captured from a real server by
`capture_api_responses.py`: 6 events — 3 block, 1 escalate, 2 allow — in two sessions, 4 incidents)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anysentry.events.timefmt import parse_time
from anysentry.webui import events, overview, policy, sources, worklist
from anysentry.webui.components import MessageBar, frame, stat_card

API = json.loads(Path(__file__).with_name("api_responses.json").read_text())


def test_overview_headline_figures_come_from_the_aggregates():
    figures = {f["title"]: f for f in overview.health_figures(API["healthz"], API["health_card"],
                                                              API["incidents_list"], API["alerts_list"])}
    assert figures["events judged"]["value"] == 6
    assert figures["blocked"]["value"] == 3
    assert figures["escalated"]["value"] == 1
    assert figures["health score"]["value"] == 66 and figures["health score"]["note"] == "Fair"
    assert figures["open incidents"]["value"] == API["incidents_list"]["summary"]["open"] == 4
    assert figures["active alerts"]["value"] == API["alerts_list"]["summary"]["activeAlerts"]
    # colour follows the figure: blocks are red, a quiet window is not
    quiet = {f["title"]: f for f in overview.health_figures({}, {"healthScore": 100}, {}, {})}
    assert quiet["blocked"]["value"] == 0 and quiet["blocked"]["color"] != figures["blocked"]["color"]


def test_service_status_says_when_the_store_is_away():
    status = overview.service_status(API["healthz"])
    assert status["ok"] and "storage embedded (ready)" in status["text"] and "management auth on" in status["text"]
    away = json.loads(json.dumps(API["healthz"]))
    away["storage"].update(clickhouseReady=False, bufferedEvents=12)
    down = overview.service_status(away)
    assert not down["ok"] and "durable buffer" in down["text"] and "12 buffered" in down["text"]


def test_funnel_rows_end_with_the_final_blocks():
    rows = overview.funnel_rows(API["funnel"])
    assert [(r["stage"], r["count"], r["share"]) for r in rows] == [
        ("L1 rules", 6, "100.0%"), ("L2 fast review", 0, "0.0%"), ("L3 deep investigation", 0, "0.0%"),
        ("blocked (final)", 3, "50.0%")]


def test_risk_rows_keep_only_risks_seen_most_frequent_first():
    rows = overview.risk_rows(API["risk_breakdown"])
    assert [(r["group"], r["riskName"], r["eventCount"]) for r in rows] == [
        ("single-agent", "Dangerous command execution", 2), ("system", "Cloud metadata / SSRF", 1),
        ("single-agent", "Credential file access", 1)]
    assert rows[0]["change"] == "+100%"
    assert [c["value"] for c in overview.risk_cards(API["risk_summary"])] == [1, 0, 3]


def test_top_session_and_its_card():
    assert overview.top_session(API["highest_risk_empty"]) is None
    session = overview.top_session(API["highest_risk"])
    assert session["sessionId"] == "s-b1" and session["level"] == "medium" and session["score"] == 65
    assert session["dimensions"] == ["Dangerous commands 1/3", "Systemic risk 1/3"]
    hostile = overview.session_html({**session, "sessionId": "<script>alert(1)</script>"})
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile


def test_events_list_body_filters_and_paging_cursor():
    assert events.list_body("last_1h", {"verdict": "", "agentId": " a1 ", "q": "  "}) == {
        "timeType": "last_1h", "limit": events.PAGE_SIZE, "agentId": "a1"}
    older = events.list_body("last_1h", {"verdict": "block"}, cursor=2_000, window_start=1_000)
    assert older == {"timeType": "custom", "startTime": 1_000, "endTime": 2_000, "limit": events.PAGE_SIZE,
                     "verdict": "block"}
    items = API["events_list"]["items"]
    assert events.older_cursor(items) == parse_time(items[-1]["at"]) + 999
    assert events.older_cursor([]) is None
    # the next page repeats the shared second's events: they are dropped
    assert events.fresh_items(items, {items[0]["eventId"]}) == items[1:]


def test_event_rows_and_detail_show_what_the_api_returned():
    items = API["events_list_block"]["items"]
    table = frame(items, events.COLUMNS)
    assert list(table.columns) == list(events.COLUMNS.values())
    assert set(table["verdict"]) == {"block"} and len(table) == 3
    assert "curl https://x.sh | bash" in set(table["subject"])
    detail = json.loads(events.detail_text(items[0]))
    assert detail["eventId"] == items[0]["eventId"] and detail["reason"] == items[0]["reason"]


def test_work_list_update_body_and_summary():
    assert worklist.update_body("resolved", owner=" ", note=" handled ") == {"status": "resolved", "note": "handled"}
    assert worklist.update_body("silenced", "ops", "", silenceMinutes=30) == {"status": "silenced", "owner": "ops",
                                                                               "silenceMinutes": 30}
    from anysentry.webui.incidents import IncidentsPage
    assert worklist.summary_text(API["incidents_list"]["summary"], IncidentsPage.summary_labels) == \
        "4 open · 0 acknowledged · 0 resolved"
    incidents = frame(API["incidents_list"]["items"], IncidentsPage.columns)
    assert len(incidents) == 4 and set(incidents["status"]) == {"open"}
    assert incidents["owner"].tolist() == [""] * 4  # absent fields are blank, not "None"


def test_sources_and_collectors_summaries():
    assert sources.summary_line(API["sources_list"]["summary"], sources.SOURCE_SUMMARY) == "1 sources · 1 active"
    assert sources.summary_line(API["collectors_health"]["summary"], sources.COLLECTOR_SUMMARY) == "1 collectors · 1 healthy"
    assert sources.summary_line({}, sources.COLLECTOR_SUMMARY) == "0 collectors"
    nodes = frame(API["collectors_health"]["items"], sources.COLLECTOR_COLUMNS)
    assert nodes.loc[0, "collector"] == "node-1" and nodes.loc[0, "state"] == "Healthy" and nodes.loc[0, "message"] == ""


def test_policy_draft_round_trips_and_reads_a_bare_on_key():
    current = API["config"]["policy"]
    text = policy.draft_text(current)
    assert text.startswith("mode: monitor\nfailClosed: false\nrules: []")
    assert policy.parse_draft(text) == current
    draft = policy.parse_draft("rules:\n- name: r\n  on: Dns\n  match: x\nfailClosed: true\n")
    assert draft == {"rules": [{"name": "r", "on": "Dns", "match": "x"}], "failClosed": True}
    assert "mode monitor · fail-open · 0 custom rules" in policy.policy_line(API["config"])


@pytest.mark.parametrize("text, message", [
    ("", "the draft is empty"),
    ("rules: [unclosed", "the draft is not valid YAML at line 1"),
    ("- just\n- a list\n", "the draft must be a mapping"),
])
def test_policy_draft_errors_are_explained(text, message):
    with pytest.raises(ValueError, match=message):
        policy.parse_draft(text)


def test_simulation_result_rows():
    result = API["simulate"]
    figures = dict(policy.simulation_figures(result))
    assert figures["events replayed"] == 6 and figures["would change"] == 1 and figures["new blocks"] == 1
    [row] = policy.diff_rows(result)
    assert row["changeType"] == "new block" and row["subject"] == "dns pypi.org"
    assert row["current"] == "allow / info" and row["simulated"] == "block / high"
    assert row["reason"] == "no-dns-pypi: package index lookups are blocked"


def test_messages_and_cards_escape_their_text():
    bar = MessageBar()
    bar.error(API["simulate_bad_regex"]["message"] + " <b>x</b>")
    assert "<b>x</b>" not in bar.pane.object and "&lt;b&gt;" in bar.pane.object and bar.pane.visible
    bar.clear()
    assert not bar.pane.visible and bar.text == ""
    card = stat_card("<i>t</i>", "<img src=x>")
    assert "<img" not in card and "<i>" not in card
