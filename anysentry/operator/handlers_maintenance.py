"""`MaintenanceWindow`: the spec becomes a window of the operations engine
(`engine.maintenance.apply_resource`), which suppresses matching alerts while it is active (SPEC
§19). Status: phase (Scheduled, Active, Expired, Disabled) and the number of alerts it suppressed.
Events: `MaintenanceStarted` / `MaintenanceEnded` on phase changes, `AlertsSuppressed` when the
window suppressed more alerts since the last status. The record id is the resource's
(`ops.objectives.resource_record_id`), shared with REST and the api's mirror."""

from __future__ import annotations

import kopf

from anysentry.operator import events
from anysentry.operator.kube import plain
from anysentry.operator.loops import Installation, Runtime, register_publisher, runtime
from anysentry.operator.status import awrite_status, now_utc, with_conditions
from anysentry.resources.models import GROUP, VERSION, MaintenanceWindow, MaintenanceWindowStatus

PHASES = {"scheduled": "Scheduled", "active": "Active", "expired": "Expired", "disabled": "Disabled"}


def window_id(obj: dict) -> str:
    """The record id of the resource, as the api's mirror and REST know it (`resource_record_id`)."""
    from anysentry.ops.objectives import resource_record_id

    return resource_record_id("mw", obj["metadata"])


def apply_window(engine, obj: dict) -> dict | None:
    book = getattr(engine, "maintenance", None)
    if book is None or not hasattr(book, "apply_resource"):
        return None
    return book.apply_resource(MaintenanceWindow.model_validate(obj))


def window_status(obj: dict, record: dict | None, phase: str, now) -> MaintenanceWindowStatus:
    generation = int(obj["metadata"].get("generation") or 0)
    if record is None:
        ready = ("Ready", "False", "EngineUnavailable", "the maintenance area of the operations engine is not available")
        return MaintenanceWindowStatus(observedGeneration=generation, windowId=window_id(obj),
                                       conditions=with_conditions(obj, [ready], generation, now))
    ready = ("Ready", "True", PHASES.get(phase, "Scheduled"), f"window {record.get('title', '')} is {phase}")
    return MaintenanceWindowStatus(
        observedGeneration=generation,
        conditions=with_conditions(obj, [ready], generation, now),
        windowId=record.get("windowId", window_id(obj)),
        phase=PHASES.get(phase, ""),
        suppressedAlerts=int(record.get("suppressedAlertCount") or 0),
    )


async def publish_window(kube, engine, obj: dict) -> MaintenanceWindowStatus:
    now = now_utc()
    record = apply_window(engine, obj)
    book = getattr(engine, "maintenance", None)
    phase = book.status(record, int(now.timestamp() * 1000)) if record is not None and book is not None else ""
    status = window_status(obj, record, phase, now)
    old = obj.get("status") or {}
    if status.phase != old.get("phase", "") and old.get("phase"):
        if status.phase == "Active":
            await events.aemit(kube, obj, "MaintenanceStarted", "maintenance window active: matching alerts are suppressed")
        elif old.get("phase") == "Active":
            await events.aemit(kube, obj, "MaintenanceEnded", f"maintenance window {status.phase.lower()}")
    elif status.phase == "Active" and not old.get("phase"):
        await events.aemit(kube, obj, "MaintenanceStarted", "maintenance window active: matching alerts are suppressed")
    suppressed_before = int(old.get("suppressedAlerts") or 0)
    if status.suppressedAlerts > suppressed_before:
        await events.aemit(kube, obj, "AlertsSuppressed",
                           f"{status.suppressedAlerts - suppressed_before} alert(s) suppressed by this window "
                           f"({status.suppressedAlerts} in total)")
    await awrite_status(kube, "MaintenanceWindow", obj["metadata"]["namespace"], obj["metadata"]["name"], status)
    return status


@register_publisher
async def publish_windows(rt: Runtime, inst: Installation) -> None:
    for obj in await rt.kube.list("MaintenanceWindow", inst.namespace):
        await publish_window(rt.kube, inst.engine, obj)


def forget_window(engine, obj: dict) -> None:
    book = getattr(engine, "maintenance", None)
    if book is not None:
        book.remove(window_id(obj))


@kopf.on.resume(GROUP, VERSION, "maintenancewindows")
@kopf.on.create(GROUP, VERSION, "maintenancewindows")
@kopf.on.update(GROUP, VERSION, "maintenancewindows")
async def window_changed(body, namespace, **_):
    rt = runtime()
    await publish_window(rt.kube, rt.engine(namespace), plain(body))


@kopf.on.delete(GROUP, VERSION, "maintenancewindows", optional=True)
async def window_deleted(body, namespace, **_):
    forget_window(runtime().engine(namespace), plain(body))
