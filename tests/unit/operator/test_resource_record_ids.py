"""One id per Objective / MaintenanceWindow resource, the same in the operator's handlers, the api's
mirror and the books: the resource's own (`obj_<ns>_<name>`), or the id an older api wrote into the
resource's annotation for a REST record it named before the resource existed."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from anysentry.operator import mirror
from anysentry.operator.handlers_maintenance import window_id
from anysentry.operator.handlers_objective import objective_id
from anysentry.operator.loops import build_engine
from anysentry.resources.models import MaintenanceWindow, Objective

NS = "team-a"
LEGACY = {"Objective": "obj_5f0c3b1d9a7e2c44", "MaintenanceWindow": "mw_0a1b2c3d4e5f6789"}
ANNOTATION = {"Objective": "anysentry.io/objectiveid", "MaintenanceWindow": "anysentry.io/windowid"}


def resource(kind: str, name: str, annotations: dict | None = None) -> dict:
    spec = {"metric": "open_incidents"} if kind == "Objective" else \
        {"startAt": "2030-01-01T00:00:00Z", "endAt": "2030-01-01T01:00:00Z", "title": "Upgrade"}
    meta = {"name": name, "namespace": NS}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "anysentry.io/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def held(engine, kind: str) -> list[str]:
    book = engine.objectives if kind == "Objective" else engine.maintenance
    return sorted(book.records)


@pytest.mark.parametrize("kind", ["Objective", "MaintenanceWindow"])
def test_the_handlers_the_mirror_and_the_book_agree_with_and_without_the_annotation(kind):
    handler_id = objective_id if kind == "Objective" else window_id
    model = Objective if kind == "Objective" else MaintenanceWindow
    plain = resource(kind, "upgrade")
    legacy = resource(kind, "older", {ANNOTATION[kind]: LEGACY[kind]})
    prefix = "obj" if kind == "Objective" else "mw"
    assert handler_id(plain) == f"{prefix}_{NS}_upgrade"
    assert handler_id(legacy) == LEGACY[kind]

    operator = build_engine()
    book = operator.objectives if kind == "Objective" else operator.maintenance
    assert book.apply_resource(model.model_validate(plain))[book.id_field] == handler_id(plain)
    assert book.apply_resource(model.model_validate(legacy))[book.id_field] == handler_id(legacy)

    replica = build_engine()
    watcher = mirror.SourceMirror(SimpleNamespace(ops=replica), kube=None, namespace=NS)
    for obj in (plain, legacy):
        watcher.apply(kind, "ADDED", obj)
    assert held(replica, kind) == held(operator, kind) == sorted([handler_id(plain), LEGACY[kind]])
    watcher.apply(kind, "DELETED", legacy)
    assert held(replica, kind) == [handler_id(plain)]
    assert watcher.errors == 0


def test_an_annotation_that_is_not_an_id_of_the_kind_is_ignored():
    for value in ("mw_0a1b2c3d", "obj_has space", "obj_", "../obj_x"):
        assert objective_id(resource("Objective", "upgrade", {ANNOTATION["Objective"]: value})) == f"obj_{NS}_upgrade"


def test_a_record_under_its_resource_id_is_written_without_an_id_annotation():
    record = {"objectiveId": f"obj_{NS}_upgrade", "name": "upgrade", "metric": "open_incidents"}
    manifest = mirror._custom("Objective", NS, "upgrade", {"metric": "open_incidents"}, record, {})
    assert "annotations" not in manifest["metadata"]
    older = {**record, "objectiveId": LEGACY["Objective"]}
    manifest = mirror._custom("Objective", NS, "upgrade", {"metric": "open_incidents"}, older, {})
    assert manifest["metadata"]["annotations"] == {ANNOTATION["Objective"]: LEGACY["Objective"]}
    assert objective_id(manifest) == LEGACY["Objective"]


def test_the_rest_name_and_labels_ride_in_annotations():
    engine = build_engine()
    obj = resource("Objective", "no-open-incidents", {"anysentry.io/display-name": "No Open Incidents"})
    assert engine.objectives.apply_resource(Objective.model_validate(obj))["name"] == "No Open Incidents"
    window = resource("MaintenanceWindow", "upgrade", {"anysentry.io/labels": '{"change": "CHG 42"}'})
    window["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "anysentry-api"}
    assert engine.maintenance.apply_resource(MaintenanceWindow.model_validate(window))["labels"] == {"change": "CHG 42"}
    kubectl = resource("MaintenanceWindow", "by-hand")
    kubectl["metadata"]["labels"] = {"team": "sre", "app.kubernetes.io/managed-by": "argocd"}
    assert engine.maintenance.apply_resource(MaintenanceWindow.model_validate(kubectl))["labels"] == \
        {"team": "sre", "app.kubernetes.io/managed-by": "argocd"}
