"""Policy: the policy in force (GET /config) and a draft tried against recent events before anyone
applies it (POST /config/simulate, SPEC §11.4). The page never saves a policy: in a cluster the
Policy resource is the source of truth, and `anysentry serve` reads it from its configuration folder."""

from __future__ import annotations

import re

import panel as pn
import yaml

from anysentry.webui.client import ApiError
from anysentry.webui.components import PRIMARY, Page, card_row, empty_note, esc, frame, stat_card, table, widget

RULE_COLUMNS = {"name": "rule", "on": "on", "match": "match", "verdict": "verdict", "severity": "severity",
                "reason": "reason", "action": "action"}
DIFF_COLUMNS = {"changeType": "change", "at": "time (UTC)", "eventKind": "kind", "agentId": "agent",
                "subject": "subject", "current": "now", "simulated": "with the draft", "reason": "draft reason"}
SUMMARY_FIGURES = {"evaluatedEvents": "events replayed", "changedEvents": "would change", "newBlocks": "new blocks",
                   "removedBlocks": "blocks removed", "newEscalations": "new escalations",
                   "removedEscalations": "escalations removed", "severityIncreases": "severity up",
                   "severityDecreases": "severity down", "affectedAgents": "agents affected",
                   "skippedEvents": "skipped (no raw preview)"}
SIMULATE_LIMIT = 200




class _DraftLoader(yaml.SafeLoader):
    """YAML with only true/false as booleans (as YAML 1.2): a rule's bare `on:` key stays "on"
    instead of becoming the boolean true, as YAML 1.1 would read it."""


_DraftLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_DraftLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                   list("tTfF"))

KEY_ORDER = ("mode", "failClosed", "rules", "disabledBuiltins", "speculate")


def draft_text(policy: dict) -> str:
    """The policy as YAML to edit, the keys people change first."""
    ordered = {key: policy[key] for key in KEY_ORDER if key in policy}
    ordered.update((key, value) for key, value in policy.items() if key not in ordered)
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, default_flow_style=False)


def parse_draft(text: str) -> dict:
    """The draft as a policy mapping (YAML or JSON), or ValueError saying what is wrong and where."""
    if not (text or "").strip():
        raise ValueError("the draft is empty: write a policy (YAML or JSON), or reset it to the current one")
    try:
        policy = yaml.load(text, Loader=_DraftLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"the draft is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(policy, dict):
        raise ValueError("the draft must be a mapping with keys such as mode, failClosed and rules")
    return policy


def policy_line(config: dict) -> str:
    policy = config.get("policy") or {}
    tiers = config.get("status") or {}
    on = ", ".join(t.upper() for t in ("l1", "l2", "l3") if tiers.get(t)) or "none"
    return (f"mode {policy.get('mode', 'monitor')} · fail-{'closed' if policy.get('failClosed') else 'open'} · "
            f"{len(policy.get('rules') or [])} custom rules · {len(policy.get('disabledBuiltins') or [])} built-ins "
            f"disabled · tiers on: {on} · version {config.get('policyVersion', '?')}")


def simulation_figures(result: dict) -> list[tuple[str, int]]:
    summary = result.get("summary") or {}
    return [(label, summary.get(key, 0)) for key, label in SUMMARY_FIGURES.items()]


def _decision(d: dict | None) -> str:
    d = d or {}
    return f"{d.get('verdict', '')} / {d.get('severity', '')}"


def diff_rows(result: dict) -> list[dict]:
    return [{**diff, "changeType": (diff.get("changeType") or "").replace("_", " "),
             "current": _decision(diff.get("current")), "simulated": _decision(diff.get("simulated")),
             "reason": (diff.get("simulated") or {}).get("reason", "")} for diff in result.get("diffs") or []]


class PolicyPage(Page):
    title = "Policy"

    def __init__(self, client, window):
        super().__init__(client, window)
        self.current = pn.pane.HTML("", sizing_mode="stretch_width")
        self.rules = table(RULE_COLUMNS, height=220)
        self.no_rules = empty_note("No custom rules: the built-in rule pack judges every event.")
        self.draft = widget(pn.widgets.TextAreaInput, "draft policy (YAML or JSON)", height=300, max_length=500_000,
                                              sizing_mode="stretch_width",
                                              css_classes=["anysentry-policy-draft"])
        self.simulate = widget(pn.widgets.Button, "Simulate on this window", **PRIMARY, width=200,
                                          css_classes=["anysentry-simulate"])
        self.reset = widget(pn.widgets.Button, "Reset draft to current", width=200)
        self.result_figures = pn.pane.HTML("", sizing_mode="stretch_width", css_classes=["anysentry-simulation"])
        self.diffs = table(DIFF_COLUMNS, height=320, visible=False)
        self.no_diffs = empty_note("No event in this window would be judged differently by the draft.")
        self.simulate.on_click(self._simulate)
        self.reset.on_click(self._reset)
        self.config: dict = {}
        self._prefilled = ""
        self._simulating = False
        self.view = pn.Column(
            self.message.pane, pn.pane.HTML("<h3>Policy in force</h3>"), self.current, self.no_rules, self.rules,
            pn.pane.HTML("<h3>Try a draft</h3><div style='color:#6b7280'>Replays the window's events through the "
                         "draft; nothing is saved. Apply a policy through the Policy resource.</div>"),
            self.draft, pn.Row(self.simulate, self.reset), self.result_figures, self.no_diffs, self.diffs,
            sizing_mode="stretch_width")

    async def load(self) -> None:
        self.config = await self.client.get("/config")
        policy = self.config.get("policy") or {}
        self.current.object = esc(policy_line(self.config))
        rules = policy.get("rules") or []
        self.rules.value = frame(rules, RULE_COLUMNS)
        self.rules.visible, self.no_rules.visible = bool(rules), not rules
        if self.draft_value() in ("", self._prefilled):  # never overwrite what the user typed
            self._prefilled = self.draft.value = draft_text(policy)

    def draft_value(self) -> str:
        # what is typed reaches `value_input` keystroke by keystroke; `value` only when the box loses focus
        return self.draft.value_input if self.draft.value_input is not None else self.draft.value

    async def _reset(self, _event=None) -> None:
        self._prefilled = self.draft.value = draft_text(self.config.get("policy") or {})
        self.message.clear()

    async def _simulate(self, _event=None) -> None:
        try:
            policy = parse_draft(self.draft_value())
        except ValueError as exc:
            self.message.error(str(exc))
            return
        if self._simulating:  # a second click while the API replays
            return
        self._simulating = True
        try:
            result = await self.client.post("/config/simulate", {"policy": policy, "timeType": self.time_type,
                                                                 "limit": SIMULATE_LIMIT})
        except ApiError as exc:
            self.message.error(str(exc))
            return
        finally:
            self._simulating = False
        self.show_result(result)
        self.message.success(f"simulated at {result.get('updateTime', '')} UTC: "
                             f"{(result.get('summary') or {}).get('changedEvents', 0)} events would change")

    def show_result(self, result: dict) -> None:
        self.result_figures.object = card_row(stat_card(label, value) for label, value in simulation_figures(result))
        rows = diff_rows(result)
        self.diffs.value = frame(rows, DIFF_COLUMNS)
        self.diffs.visible, self.no_diffs.visible = bool(rows), not rows
