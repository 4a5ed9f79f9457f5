"""`Objective`: the spec becomes an objective of the installation's operations engine
(`engine.objectives.apply_resource`); the engine evaluates it on its timer (loops.py) and the status
shows the last evaluation (DESIGN §3): state Ok/Breach/Disabled, value, comparator and threshold in
force, since, evidence and the breach alert. A breach posts a Warning Event `ObjectiveBreached`, a
return to Ok a Normal `ObjectiveRecovered`.

`lastEvaluatedAt` moves only with a new value or state, or every 5 minutes, so a steady objective
does not rewrite its status every cycle (DESIGN §3: no status field that changes without reason).

The record id is the resource's (`ops.objectives.resource_record_id`): the one a REST create in a
cluster recorded it under, or the id annotation an older api wrote, so the state table holds it once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import kopf

from anysentry.operator import events
from anysentry.operator.kube import plain
from anysentry.operator.loops import Installation, Runtime, register_publisher, runtime
from anysentry.operator.status import awrite_status, from_ms, now_utc, parse_time, with_conditions
from anysentry.resources.models import GROUP, VERSION, Objective, ObjectiveStatus

log = logging.getLogger("anysentry.operator.objective")

STATES = {"ok": "Ok", "breach": "Breach", "disabled": "Disabled"}
EVALUATED_REFRESH = timedelta(minutes=5)


def objective_id(obj: dict) -> str:
    """The record id of the resource, as the api's mirror and REST know it (`resource_record_id`)."""
    from anysentry.ops.objectives import resource_record_id

    return resource_record_id("obj", obj["metadata"])


def apply_objective(engine, obj: dict) -> dict | None:
    """The Objective as a record of `engine.objectives` (None when the area is not there)."""
    book = getattr(engine, "objectives", None)
    if book is None or not hasattr(book, "apply_resource"):
        return None
    return book.apply_resource(Objective.model_validate(obj))


def objective_status(obj: dict, record: dict | None, alerts, now: datetime) -> ObjectiveStatus:
    meta = obj["metadata"]
    generation = int(meta.get("generation") or 0)
    resource = Objective.model_validate(obj)
    old = obj.get("status") or {}
    if record is None:
        return ObjectiveStatus(
            observedGeneration=generation, objectiveId=objective_id(obj),
            comparator=resource.spec.effectiveComparator, threshold=resource.spec.effectiveThreshold,
            conditions=with_conditions(obj, [("Ready", "False", "EngineUnavailable",
                                              "the objectives area of the operations engine is not available")],
                                       generation, now))
    state = STATES.get(record.get("status") or "", "")
    value = record.get("currentValue")
    evaluated = from_ms(record.get("evaluatedAt"))
    previous = parse_time(old.get("lastEvaluatedAt"))
    if previous and evaluated and old.get("state") == state and old.get("value") == value \
            and evaluated - previous < EVALUATED_REFRESH:
        evaluated = previous
    alert_id = ""
    if state == "Breach" and record.get("alertId") and alerts is not None:
        alert = alerts.get(record["alertId"])
        if alert and alert.get("status") in ("open", "acknowledged", "silenced"):
            alert_id = record["alertId"]
    if not state:
        ready = ("Ready", "False", "NotEvaluated", "waiting for the first evaluation")
    else:
        ready = ("Ready", "True", "Evaluated", record.get("evidence") or state)
    return ObjectiveStatus(
        observedGeneration=generation,
        conditions=with_conditions(obj, [ready], generation, now),
        objectiveId=record.get("objectiveId", objective_id(obj)),
        state=state,
        value=value,
        comparator=record.get("comparator") or resource.spec.effectiveComparator,
        threshold=record.get("threshold") if record.get("threshold") is not None else resource.spec.effectiveThreshold,
        since=from_ms(record.get("since")),
        lastEvaluatedAt=evaluated,
        evidence=record.get("evidence") or "",
        alertId=alert_id,
    )


async def publish_objective(kube, engine, obj: dict, now: datetime | None = None) -> ObjectiveStatus:
    now = now or now_utc()
    record = apply_objective(engine, obj)
    status = objective_status(obj, record, getattr(engine, "alerts", None), now)
    old_state = (obj.get("status") or {}).get("state", "")
    if status.state == "Breach" and old_state != "Breach":
        await events.aemit(kube, obj, "ObjectiveBreached",
                           f"{obj['spec'].get('metric')} breached: {status.evidence} "
                           f"(target {status.comparator} {status.threshold:g})", events.WARNING)
    elif old_state == "Breach" and status.state == "Ok":
        await events.aemit(kube, obj, "ObjectiveRecovered", f"back within target: {status.evidence}")
    await awrite_status(kube, "Objective", obj["metadata"]["namespace"], obj["metadata"]["name"], status)
    return status


async def reconcile_objective(kube, rt: Runtime, obj: dict) -> ObjectiveStatus:
    """On create/update: apply, evaluate now (when the loops do not run for the namespace), publish."""
    inst = rt.installation(obj["metadata"]["namespace"])
    apply_objective(inst.engine, obj)
    book = getattr(inst.engine, "objectives", None)
    if book is not None:
        try:
            await book.evaluate_all()
        except Exception:
            log.exception("objective evaluation failed")
    return await publish_objective(kube, inst.engine, obj)


@register_publisher
async def publish_objectives(rt: Runtime, inst: Installation) -> None:
    for obj in await rt.kube.list("Objective", inst.namespace):
        await publish_objective(rt.kube, inst.engine, obj)


def forget_objective(engine, obj: dict) -> None:
    book = getattr(engine, "objectives", None)
    if book is not None:
        book.remove(objective_id(obj))


@kopf.on.resume(GROUP, VERSION, "objectives")
@kopf.on.create(GROUP, VERSION, "objectives")
@kopf.on.update(GROUP, VERSION, "objectives")
async def objective_changed(body, **_):
    rt = runtime()
    await reconcile_objective(rt.kube, rt, plain(body))


@kopf.on.delete(GROUP, VERSION, "objectives", optional=True)
async def objective_deleted(body, namespace, **_):
    forget_objective(runtime().engine(namespace), plain(body))
