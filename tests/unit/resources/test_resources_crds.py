"""The CRDs rendered from the models: in sync with crds/, structural, valid JSON Schema, defaults,
descriptions and printer columns that point at real fields."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator
from pydantic import BaseModel

from anysentry.resources import crd, models
from anysentry.resources.command import differences
from anysentry.resources.manifests import KubernetesValidator, apply_defaults, validator_for

ROOT = Path(__file__).resolve().parents[3]
CRDS = {resource.KIND: crd.crd(resource) for resource in models.RESOURCES}
SCHEMAS = {kind: doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for kind, doc in CRDS.items()}

# JSONSchemaProps fields of apiextensions.k8s.io/v1, and the extensions a 1.20 API server knows
K8S_SCHEMA_KEYS = {
    "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum",
    "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties",
    "minProperties", "required", "items", "allOf", "oneOf", "anyOf", "not", "properties", "additionalProperties",
    "patternProperties", "dependencies", "additionalItems", "definitions", "externalDocs", "example", "nullable",
    "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type",
}
NOT_STRUCTURAL = {"$ref", "definitions", "$schema", "id", "anyOf", "oneOf", "allOf", "not", "patternProperties",
                  "dependencies", "additionalItems", "x-kubernetes-validations", "const", "$defs", "examples"}
# free-form on purpose: nothing, so far (resources, tolerations and nodeSelector are typed)
PRESERVE_UNKNOWN_ALLOWED: set[str] = set()


def structural_problems(node: dict[str, Any], path: str = "", root: bool = True) -> list[str]:
    """Why `node` is not a structural schema a 1.20 API server takes (empty: it is)."""
    problems = []
    where = path or "<root>"
    if not isinstance(node, dict):
        return [f"{where}: not a schema object"]
    for key in node:
        if key not in K8S_SCHEMA_KEYS:
            problems.append(f"{where}: {key!r} is not a JSONSchemaProps field")
        if key in NOT_STRUCTURAL:
            problems.append(f"{where}: {key!r} is not structural")
    int_or_string = node.get("x-kubernetes-int-or-string")
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    if preserve and path not in PRESERVE_UNKNOWN_ALLOWED:
        problems.append(f"{where}: x-kubernetes-preserve-unknown-fields where the shape is known")
    kind = node.get("type")
    if not kind and not int_or_string and not preserve:
        problems.append(f"{where}: no type")
    if kind not in (None, "object", "array", "string", "integer", "number", "boolean"):
        problems.append(f"{where}: type {kind!r}")
    is_field = path and not path.endswith(("[]", ".*"))  # a property, not map values or list items
    if is_field and "description" not in node and path != "metadata":
        problems.append(f"{where}: no description")
    if node.get("additionalProperties") is False:
        problems.append(f"{where}: additionalProperties: false is forbidden")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{where}: properties and additionalProperties together")
    if kind == "object":
        if not ("properties" in node or isinstance(node.get("additionalProperties"), dict) or preserve or path == "metadata"):
            problems.append(f"{where}: object without properties or additionalProperties")
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                problems.append(f"{where}: required {name!r} is not a property")
    if kind == "array":
        if not isinstance(node.get("items"), dict):
            problems.append(f"{where}: array without items")
        list_type = node.get("x-kubernetes-list-type")
        items = node.get("items") or {}
        if list_type == "map":
            for key in node.get("x-kubernetes-list-map-keys") or ["<none>"]:
                prop = items.get("properties", {}).get(key)
                if prop is None or (key not in items.get("required", []) and "default" not in prop):
                    problems.append(f"{where}: map key {key!r} must be a required (or defaulted) property of the items")
        elif list_type == "set" and items.get("type") in ("object", "array"):
            problems.append(f"{where}: a set needs scalar items")
    if node.get("uniqueItems"):
        problems.append(f"{where}: uniqueItems is forbidden")
    if "default" in node:
        value = node["default"]
        checker = validator_for(node)
        errors = [e.message for e in checker.iter_errors(apply_defaults(yaml.safe_load(yaml.safe_dump(value)), node))]
        if errors:
            problems.append(f"{where}: default {value!r} is invalid: {errors}")
    if root and path == "":
        meta = node.get("properties", {}).get("metadata")
        if meta != {"type": "object"}:
            problems.append(f"metadata: a 1.20 API server allows nothing but type: object here, got {meta}")
        for key in ("apiVersion", "kind", "metadata"):
            if "default" in node.get("properties", {}).get(key, {}):
                problems.append(f"{key}: no default allowed")
    for name, sub in (node.get("properties") or {}).items():
        if root and path == "" and name == "metadata":
            continue
        problems += structural_problems(sub, f"{path}.{name}" if path else name, root=False)
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]", root=False)
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*", root=False)
    return problems


def test_checked_in_crds_match_the_models():
    problems = differences(ROOT / "crds")
    assert not problems, "CRDs drifted from anysentry/resources/models.py; run `anysentry crds`:\n" + "\n".join(problems)


def test_one_file_per_kind_named_after_the_plural():
    rendered = crd.render_all()
    assert sorted(rendered) == sorted(f"{r.CRD.plural}.anysentry.io.yaml" for r in models.RESOURCES)
    for text in rendered.values():
        assert text.startswith(crd.HEADER)
        assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_schema_is_structural(kind):
    assert structural_problems(SCHEMAS[kind]) == []


@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_schema_is_a_valid_json_schema(kind):
    Draft4Validator.check_schema(SCHEMAS[kind])
    KubernetesValidator.check_schema(SCHEMAS[kind])


def test_structural_checker_catches_what_it_should():
    bad = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "description": "x"},
            "spec": {"description": "s", "properties": {"a": {"$ref": "#/x", "description": "a"}}},
            "status": {"type": "object", "description": "t", "additionalProperties": False},
            "list": {"type": "array", "description": "l"},
            "nums": {"type": "integer", "description": "n", "default": "three"},
        },
    }
    text = "\n".join(structural_problems(bad))
    for expected in ("metadata", "spec: no type", "'$ref' is not structural", "additionalProperties: false",
                     "array without items", "default 'three' is invalid"):
        assert expected in text


@pytest.mark.parametrize("kind", list(CRDS))
def test_crd_shape(kind):
    doc = CRDS[kind]
    spec = doc["spec"]
    assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
    assert doc["metadata"]["name"] == f"{spec['names']['plural']}.anysentry.io"
    assert spec["group"] == "anysentry.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind and spec["names"]["categories"] == ["anysentry"]
    assert spec["names"]["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert "x-kubernetes-validations" not in yaml.safe_dump(doc)  # no CEL: a 1.20 API server has none
    schema = version["schema"]["openAPIV3Schema"]
    assert {"spec", "status"} <= set(schema["properties"])


def test_names_do_not_clash():
    names = [n for doc in CRDS.values() for n in (doc["spec"]["names"]["plural"], doc["spec"]["names"]["singular"],
                                                   *doc["spec"]["names"]["shortNames"])]
    assert len(names) == len(set(names))
    builtin = {"po", "svc", "deploy", "ds", "sts", "rs", "cm", "ns", "no", "pv", "pvc", "sa", "ep", "ev", "hpa", "ing",
               "netpol", "pdb", "psp", "sc", "crd", "csr", "limits", "quota", "rc", "cs", "pc", "cj", "src", "pol", "cpol"}
    assert not builtin & set(names)


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    """The schema node a printer column's JSONPath reads, or None."""
    node = schema
    for segment in re.findall(r"\.([A-Za-z0-9_]+)|\[\?\(@\.([A-Za-z0-9_]+)==\"[^\"]*\"\)\]", json_path):
        name, filter_key = segment
        if filter_key:
            if node.get("type") != "array" or filter_key not in node["items"].get("properties", {}):
                return None
            node = node["items"]
            continue
        if node.get("type") != "object":
            return None
        if node is schema and name == "metadata":
            node = {"type": "object", "properties": {"creationTimestamp": {"type": "string", "format": "date-time"},
                                                     "name": {"type": "string"}, "namespace": {"type": "string"}}}
            continue
        node = (node.get("properties") or {}).get(name)
        if node is None:
            return None
    return node


@pytest.mark.parametrize("kind", list(CRDS))
def test_printer_columns_point_at_fields(kind):
    version = CRDS[kind]["spec"]["versions"][0]
    columns = version["additionalPrinterColumns"]
    assert columns, "every kind has printer columns"
    for column in columns:
        node = _resolve(SCHEMAS[kind], column["jsonPath"])
        assert node is not None, f"{kind} column {column['name']}: {column['jsonPath']} is not in the schema"
        expected = {"integer": {"integer"}, "number": {"number", "integer"}, "boolean": {"boolean"},
                    "string": {"string"}, "date": {"string"}}[column["type"]]
        assert node.get("type") in expected, f"{kind} column {column['name']}: {node.get('type')} shown as {column['type']}"
        if column["type"] == "date":
            assert node.get("format") == "date-time"
        assert column.get("description")


def test_printer_columns_answer_is_it_healthy():
    names = {kind: [c["name"] for c in CRDS[kind]["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
             for kind in CRDS}
    assert names["Source"] == ["Type", "Phase", "Last Seen", "Accepted", "Rejected", "Age"]
    assert names["Policy"] == ["Mode", "Valid", "Rules", "Version", "Age"]
    assert names["Objective"] == ["Metric", "Threshold", "Value", "State", "Age"]
    assert names["MaintenanceWindow"][:1] == ["Target"] and {"Phase", "Starts", "Ends"} <= set(names["MaintenanceWindow"])
    assert {"Enabled", "Delivered", "Failed"} <= set(names["NotificationRoute"])
    assert names["AnySentry"] == ["Ready", "Storage", "API", "Collectors", "Open Incidents", "Age"]


# --- defaults: every model default is in the schema, and the API server's defaulting gives the model's


def _fields(model: type[BaseModel], node: dict[str, Any], path: str):
    for name, info in model.model_fields.items():
        sub = node["properties"][name]
        yield model, name, info, sub, f"{path}.{name}"
        inner = _model_of(info.annotation)
        if inner is not None:
            target = sub["items"] if sub.get("type") == "array" else sub
            yield from _fields(inner, target, f"{path}.{name}")


def _model_of(annotation) -> type[BaseModel] | None:
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for arg in typing.get_args(candidate):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


@pytest.mark.parametrize("resource", models.RESOURCES, ids=lambda r: r.KIND)
def test_model_defaults_appear_in_the_schema(resource):
    schema = SCHEMAS[resource.KIND]
    checked = 0
    for part in ("spec", "status"):
        part_model = _model_of(resource.model_fields[part].annotation)
        for model, name, info, node, path in _fields(part_model, schema["properties"][part], part):
            assert node.get("description"), f"{path}: no description"
            if info.is_required():
                continue
            default = info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                assert node.get("default") == {}, f"{path}: object default should be {{}}"
            elif default is None:
                assert "default" not in node and node.get("nullable"), f"{path}: optional values are nullable"
            elif default in ("", [], {}):
                assert "default" not in node, f"{path}: zero defaults stay out of stored objects"
            else:
                assert node.get("default") == default, f"{path}: default {default!r} not in the schema"
                checked += 1
    assert checked or resource.KIND == "MaintenanceWindow"


MINIMAL = {
    "AnySentry": {},
    "Source": {"type": "falco"},
    "Policy": {"rules": [{"name": "r", "match": "x"}]},
    "Objective": {"metric": "open_incidents"},
    "MaintenanceWindow": {"startAt": "2030-01-01T00:00:00Z", "endAt": "2030-01-01T01:00:00Z"},
    "NotificationRoute": {"receivers": [{"name": "r", "webhookUrlSecretRef": {"name": "s", "key": "url"}}]},
}


def _without_zero(value):
    if isinstance(value, dict):
        stripped = {k: _without_zero(v) for k, v in value.items()}
        return {k: v for k, v in stripped.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [_without_zero(v) for v in value]
    return value


@pytest.mark.parametrize("kind", list(MINIMAL))
def test_api_server_defaulting_equals_model_defaults(kind):
    obj = {"apiVersion": models.API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": dict(MINIMAL[kind])}
    defaulted = apply_defaults(obj, SCHEMAS[kind])
    assert not list(validator_for(SCHEMAS[kind]).iter_errors(defaulted))
    from_model = models.KINDS[kind].model_validate({**obj, "spec": MINIMAL[kind]}).to_k8s()["spec"]
    assert _without_zero(defaulted["spec"]) == _without_zero(from_model)


def test_secrets_are_only_referenced():
    allowed = {"requireToken", "tokenRotationDays", "passwordKey", "usernameKey"}
    offenders = []

    def walk(node, path, under_ref=False):
        for name, sub in (node.get("properties") or {}).items():
            secretish = any(w in name.lower() for w in ("password", "apikey", "token", "webhookurl", "hmac", "secret"))
            if secretish and not name.endswith("SecretRef") and name not in allowed and not under_ref:
                offenders.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}", under_ref or name.endswith("SecretRef"))
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]", under_ref)

    for kind, schema in SCHEMAS.items():
        walk(schema["properties"]["spec"], f"{kind}.spec")
    assert offenders == []
