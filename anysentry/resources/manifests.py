"""Load AnySentry custom-resource manifests from YAML and validate them as the API server would.

`load_manifests(path, ...)` reads a file (one or several YAML documents, `kind: List` included) or
a folder (recursively, `*.yaml` / `*.yml`, hidden entries skipped). Each anysentry.io object goes
through the API server's pipeline with the CRD's own openAPIV3Schema (crd.py):

1. prune: fields the schema does not know are dropped by the API server; here they are errors
   (as `kubectl apply --validate=strict` reports them), and null values of non-nullable fields go;
2. default: the schema defaults are applied, top-down, like the API server's defaulting;
3. validate: `jsonschema` (Draft 4, the dialect of openAPIV3Schema) with `nullable`,
   `x-kubernetes-int-or-string`, `x-kubernetes-list-type` (set/map uniqueness) and RFC 3339
   `date-time` handled as the API server does; metadata.name must be a DNS subdomain;
4. the typed model is built (`models.KINDS`), whose validators check what the schema cannot say.

Objects of other groups are skipped with a note, never an error. Errors name the file, the document
index, Kind/name and the JSON path, e.g.
`examples/policy-bad.yaml[0] Policy/bad: spec.rules[0].verdict: 'maybe' is not one of ['allow', 'block', 'escalate']`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator, FormatChecker, ValidationError, validators
from pydantic import ValidationError as ModelError

from .crd import schema_for
from .models import API_VERSION, GROUP, KINDS, Resource

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

SemanticCheck = Callable[[Resource], Iterable[str]]


# ---------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class ManifestError:
    """One problem with one document. `str()` gives the one-line form."""

    file: str
    index: int | str | None  # document index; "0].items[2" inside a List
    kind: str
    name: str
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file + (f"[{self.index}]" if self.index is not None else "")
        if self.kind or self.name:
            where += f" {self.kind or '?'}/{self.name or '?'}"
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


@dataclass
class LoadResult:
    """Typed resources, errors and notes (skipped documents) of a load."""

    resources: list[Resource] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    origins: list[tuple[str, int | str]] = field(default_factory=list)  # (file, index) of each resource

    @property
    def ok(self) -> bool:
        return not self.errors

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.KIND == kind]

    def extend(self, other: LoadResult) -> None:
        self.resources += other.resources
        self.origins += other.origins
        self.errors += other.errors
        self.notes += other.notes


# ---------------------------------------------------------------------------------------------
# YAML as the API server's clients read it


class _Loader(yaml.SafeLoader):
    """YAML 1.1 like kubectl's sigs.k8s.io/yaml, except that timestamps stay strings (as they
    reach the API server in JSON)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _bool_keys(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Keys YAML 1.1 reads as booleans (unquoted on/off/yes/no): kubectl sends them as "true"/"false",
    which the API server drops as unknown fields. `on` (a Policy rule field) must be quoted."""
    if isinstance(value, dict):
        for key, sub in value.items():
            if isinstance(key, bool):
                yield _join(path, str(key).lower()), ("a bare key was read as a boolean (YAML 1.1 reads unquoted "
                                                      'on/off/yes/no as true/false): quote it, e.g. "on":')
            else:
                yield from _bool_keys(sub, _join(path, str(key)))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _bool_keys(sub, f"{path}[{i}]")


# ---------------------------------------------------------------------------------------------
# the API server's pipeline: prune, default, validate


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def prune(obj: Any, schema: dict[str, Any], path: str = "") -> tuple[Any, list[str]]:
    """A copy of `obj` without the fields the schema does not know (their paths are returned) and
    without null values of non-nullable fields, as the API server prunes them."""
    unknown: list[str] = []

    def walk(value: Any, node: dict[str, Any], where: str, root: bool = False) -> Any:
        if isinstance(value, dict) and node.get("type") == "object":
            props = node.get("properties")
            extra = node.get("additionalProperties")
            keep_unknown = node.get("x-kubernetes-preserve-unknown-fields")
            out = {}
            for key, sub in value.items():
                sub_where = _join(where, str(key).lower() if isinstance(key, bool) else str(key))
                if root and key == "metadata":
                    out[key] = sub  # ObjectMeta: the API server checks it by itself
                elif props is not None and key in props:
                    if sub is None and not props[key].get("nullable"):
                        continue
                    out[key] = walk(sub, props[key], sub_where)
                elif isinstance(extra, dict):
                    out[key] = walk(sub, extra, sub_where)
                elif keep_unknown:
                    out[key] = sub
                else:
                    unknown.append(sub_where)
            return out
        if isinstance(value, list) and node.get("type") == "array" and isinstance(node.get("items"), dict):
            return [walk(item, node["items"], f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    return walk(copy.deepcopy(obj), schema, path, root=True), unknown


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Apply schema defaults in place, like the API server: a missing (or non-nullable null)
    property with a default gets a copy of it, then every present property is defaulted in turn,
    so `default: {}` on an object fills in its fields' defaults."""
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for key, prop in props.items():
            if "default" in prop and (key not in obj or (obj[key] is None and not prop.get("nullable"))):
                obj[key] = copy.deepcopy(prop["default"])
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in props:
                apply_defaults(value, props[key])
            elif isinstance(extra, dict):
                apply_defaults(value, extra)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])
    return obj


def _nullable(fn):
    def check(validator, value, instance, schema):
        if instance is None and schema.get("nullable"):
            return
        yield from fn(validator, value, instance, schema)
    return check


def _int_or_string(validator, value, instance, schema):
    if value and (isinstance(instance, bool) or not isinstance(instance, (int, str))):
        yield ValidationError(f"{instance!r} is not an integer or a string")


def _list_type(validator, value, instance, schema):
    if not isinstance(instance, list):
        return
    if value == "set":
        seen: list[Any] = []
        for i, item in enumerate(instance):
            if item in seen:
                yield ValidationError(f"duplicate entry {item!r}", path=[i])
            seen.append(item)
    elif value == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: dict[tuple, int] = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen_keys:
                named = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key))
                yield ValidationError(f"duplicate entry with {named} (also at index {seen_keys[key]})", path=[i])
            else:
                seen_keys[key] = i


_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True
    if not _RFC3339.match(instance):
        raise ValueError("not an RFC 3339 date-time such as 2025-06-01T22:00:00Z")
    datetime.fromisoformat(instance.replace("z", "Z").replace("t", "T").replace("Z", "+00:00"))
    return True


def _is_integer(checker, instance) -> bool:
    # the API server takes 2.0 for an integer, as JSON does not tell them apart
    return (isinstance(instance, int) and not isinstance(instance, bool)) or (isinstance(instance, float) and instance.is_integer())


KubernetesValidator = validators.extend(
    Draft4Validator,
    type_checker=Draft4Validator.TYPE_CHECKER.redefine("integer", _is_integer),
    validators={
        **{name: _nullable(fn) for name, fn in Draft4Validator.VALIDATORS.items()},
        "x-kubernetes-int-or-string": _int_or_string,
        "x-kubernetes-list-type": _list_type,
    },
)
"""Draft 4 (the openAPIV3Schema dialect) plus what the API server adds: `nullable`,
`x-kubernetes-int-or-string` and list-type uniqueness."""


def validator_for(schema: dict[str, Any]) -> Draft4Validator:
    return KubernetesValidator(schema, format_checker=_FORMATS)


_VALIDATORS: dict[str, Draft4Validator] = {}


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out


def _schema_message(error: ValidationError) -> tuple[str, str]:
    path = _path(error.absolute_path)
    if error.validator == "required":
        missing = re.match(r"'(.+?)' is a required property", error.message)
        return _join(path, missing.group(1) if missing else "?"), "Required value"
    limit, instance = error.validator_value, error.instance
    if error.validator in ("maxLength", "minLength") and isinstance(instance, str):
        bound = "at most" if error.validator == "maxLength" else "at least"
        return path, f"{_short(instance)} has {len(instance)} characters, {bound} {limit} allowed"
    if error.validator in ("maxItems", "minItems") and isinstance(instance, list):
        bound = "at most" if error.validator == "maxItems" else "at least"
        return path, f"{len(instance)} items, {bound} {limit} allowed"
    if error.validator == "format" and limit == "date-time":
        return path, f"{instance!r} is not an RFC 3339 date-time such as 2030-06-01T22:00:00Z"
    if error.validator == "pattern":
        return path, f"{_short(instance)} does not match {limit!r}"
    return path, error.message


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


@dataclass
class _Doc:
    file: str
    index: int | str | None
    kind: str = ""
    name: str = ""

    def error(self, path: str, message: str) -> ManifestError:
        return ManifestError(self.file, self.index, self.kind, self.name, path, message)


def validate_object(obj: Any, *, file: str = "<object>", index: int | str | None = None, strict: bool = True,
                    checks: dict[str, SemanticCheck] | None = None) -> tuple[Resource | None, list[ManifestError]]:
    """Validate one anysentry.io object (a dict as parsed from YAML/JSON).

    Returns the typed, defaulted model (None when invalid) and the errors. `strict` reports fields
    the API server would prune; `checks` maps a kind to extra checks (e.g. the judge compiling a
    Policy's regexes) that return error messages."""
    doc = _Doc(file, index)
    if not isinstance(obj, dict):
        return None, [doc.error("", f"expected a Kubernetes object (a mapping), got {type(obj).__name__}")]
    doc.kind = str(obj.get("kind") or "")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    doc.name = str(meta.get("name") or "")
    if doc.kind not in KINDS:
        return None, [doc.error("kind", f"unknown kind {doc.kind!r} in {GROUP}; known: {', '.join(KINDS)}")]
    if obj.get("apiVersion") != API_VERSION:
        return None, [doc.error("apiVersion", f"{obj.get('apiVersion')!r} is not served; use {API_VERSION}")]

    errors = [doc.error(path, message) for path, message in _metadata_problems(obj.get("metadata"))]
    errors += [doc.error(path, message) for path, message in _bool_keys(obj, "")]
    if doc.kind not in _VALIDATORS:
        _VALIDATORS[doc.kind] = validator_for(schema_for(doc.kind))
    validator = _VALIDATORS[doc.kind]
    pruned, unknown = prune(obj, validator.schema)
    if strict:
        errors += [doc.error(path, f'unknown field "{path.rsplit(".", 1)[-1]}" (the API server would drop it)')
                   for path in unknown if path.rsplit(".", 1)[-1] not in ("true", "false")]  # reported above
    apply_defaults(pruned, validator.schema)
    for err in sorted(validator.iter_errors(pruned), key=lambda e: [str(p) for p in e.absolute_path]):
        errors.append(doc.error(*_schema_message(err)))
    if errors:
        return None, errors

    try:
        resource = KINDS[doc.kind].model_validate(pruned)
    except ModelError as exc:
        return None, [doc.error(_path(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
    if checks and doc.kind in checks:
        problems = [doc.error("", message) for message in checks[doc.kind](resource)]
        if problems:
            return None, problems
    return resource, []


def _metadata_problems(meta: Any) -> Iterator[tuple[str, str]]:
    if not isinstance(meta, dict):
        yield "metadata", "Required value"
        return
    name = meta.get("name")
    if not name:
        if not meta.get("generateName"):
            yield "metadata.name", "Required value"
    elif not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        yield "metadata.name", (f"{name!r}: a lowercase RFC 1123 subdomain must consist of lowercase alphanumerics, "
                                "'-' or '.', start and end with an alphanumeric, at most 253 characters")
    namespace = meta.get("namespace")
    if namespace and (not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        yield "metadata.namespace", f"{namespace!r} is not a valid namespace name (RFC 1123 label)"
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())):
            yield f"metadata.{key}", "must map strings to strings"


# ---------------------------------------------------------------------------------------------
# files and folders


def _group(api_version: Any) -> str:
    return api_version.split("/", 1)[0] if isinstance(api_version, str) and "/" in api_version else ""


def load_text(text: str, file: str = "<string>", *, strict: bool = True,
              checks: dict[str, SemanticCheck] | None = None) -> LoadResult:
    """Load the YAML documents of one file's text."""
    result = LoadResult()
    try:
        documents = list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        result.errors.append(ManifestError(file, None, "", "", "", f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}"))
        return result
    for index, document in enumerate(documents):
        if document is None:
            continue
        if isinstance(document, dict) and document.get("kind") == "List" and isinstance(document.get("items"), list):
            items = [(f"{index}].items[{i}", item) for i, item in enumerate(document["items"])]
        else:
            items = [(index, document)]
        for where, item in items:
            _load_one(item, file, where, result, strict, checks)
    return result


def _load_one(obj: Any, file: str, index: Any, result: LoadResult, strict: bool,
              checks: dict[str, SemanticCheck] | None) -> None:
    if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
        result.notes.append(f"{file}[{index}]: not a Kubernetes object (no apiVersion/kind), skipped")
        return
    if _group(obj.get("apiVersion")) != GROUP:
        name = obj.get("metadata", {}).get("name", "?") if isinstance(obj.get("metadata"), dict) else "?"
        result.notes.append(f"{file}[{index}] {obj.get('kind')}/{name}: {obj.get('apiVersion')} is not {GROUP}, skipped")
        return
    resource, errors = validate_object(obj, file=file, index=index, strict=strict, checks=checks)  # type: ignore[arg-type]
    result.errors += errors
    if resource is not None:
        result.resources.append(resource)
        result.origins.append((file, index))


def manifest_files(folder: Path) -> list[Path]:
    """`*.yaml` / `*.yml` under `folder`, recursively, sorted; hidden files and folders skipped."""
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix in (".yaml", ".yml") and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def load_manifests(*paths: str | Path, strict: bool = True, namespace: str = "default",
                   checks: dict[str, SemanticCheck] | None = None) -> LoadResult:
    """Load files and folders of manifests. Objects without a namespace are given `namespace`;
    the same Kind/namespace/name twice is an error."""
    result = LoadResult()
    for base in paths:
        base = Path(base)
        if base.is_dir():
            files = manifest_files(base)
        elif base.is_file():
            files = [base]
        else:
            result.errors.append(ManifestError(str(base), None, "", "", "", "no such file or folder"))
            continue
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                result.errors.append(ManifestError(str(path), None, "", "", "", f"cannot read: {exc}"))
                continue
            result.extend(load_text(text, str(path), strict=strict, checks=checks))

    seen: dict[tuple[str, str, str], str] = {}
    unique: list[tuple[Resource, tuple[str, int | str]]] = []
    for resource, (file, index) in zip(result.resources, result.origins):
        resource.metadata.namespace = resource.metadata.namespace or namespace
        key = (resource.KIND, resource.metadata.namespace, resource.metadata.name)
        if key in seen:
            result.errors.append(ManifestError(file, index, resource.KIND, resource.metadata.name, "",
                                               f"defined twice in namespace {key[1]} (first at {seen[key]})"))
            continue
        seen[key] = f"{file}[{index}]"
        unique.append((resource, (file, index)))
    result.resources = [resource for resource, _ in unique]
    result.origins = [origin for _, origin in unique]
    return result
