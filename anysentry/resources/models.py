"""The custom resources of DESIGN.md §3 (group `anysentry.io`, version `v1alpha1`, namespaced), as
pydantic models: the one source of the CRD schemas (`crd.py` renders them), of what `anysentry serve`
loads from a folder (`manifests.py`) and of what the operator reads and writes.

Conventions
- Field names are the wire names (camelCase), so `model_dump(mode="json")` is the Kubernetes object.
- Every field has a description (it becomes `kubectl explain` text); enums are `Literal`s; bounds are
  `Field` constraints; defaults are the model defaults.  Zero defaults ("" / [] / {}) are left out of
  the CRD so stored objects stay small; every other default is written into the schema and applied
  by the API server.
- `X | None = None` renders as `nullable: true` without a default: the value is optional.
- Secrets are only ever referenced (`…SecretRef`), never inline.
- Spec models ignore unknown fields, like the API server (which prunes them); the manifest loader
  reports them as errors.
- What the schema cannot say (a 1.20 API server runs no CEL) is a model validator here, reported by
  the manifest loader and by the operator as a condition; regex validity of Policy rules is checked
  by the operator through `anysentry.judge`.
- Status text and status lists are capped: over-long values are cut (text) or truncated (lists) by
  the model, so a status the model produces is always one the API server accepts; each capped list
  has a total count beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

GROUP = "anysentry.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "anysentry"

# ---------------------------------------------------------------------------------------------
# shared vocabulary

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
ConditionStatus = Literal["True", "False", "Unknown"]
EventKindOn = Literal["ToolExec", "Egress", "Dns", "FileAccess", "SslContent", "SecurityAction", "*"]
ObjectiveMetric = Literal[
    "coverage_score", "open_incidents", "active_alerts", "overdue_remediations",
    "risky_events", "stale_agents", "collector_down", "source_down",
]
AlertKind = Literal["incident", "event", "agent", "collector", "source", "coverage", "objective", "remediation"]

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
RULE_NAME = r"^[A-Za-z0-9]([A-Za-z0-9._:/-]*[A-Za-z0-9])?$"
HTTP_URL = r"^https?://[^\s/$.?#][^\s]*$"
NAMESPACE_OR_ALL = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$"
PUBLIC_BASE_PATH = r"^(/|(/[A-Za-z0-9][A-Za-z0-9._~-]*)+/?)?$"
CONDITION_TYPE = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
            r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
_QUANTITY_RE = re.compile(QUANTITY)

STATUS_TEXT_MAX = 1024
STATUS_LIST_MAX = 10
SUMMARY_LIST_MAX = 5
CONDITIONS_MAX = 16


def _cut(limit: int):
    """Status text longer than `limit` is cut (with an ellipsis) instead of rejected."""
    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            return value[: limit - 1] + "…"
        return value
    return BeforeValidator(cut)


def _first(limit: int):
    """A status list longer than `limit` keeps its first `limit` items (writers keep the total beside it)."""
    def first(value: Any) -> Any:
        return list(value)[:limit] if isinstance(value, (list, tuple)) else value
    return BeforeValidator(first)


def StatusText(limit: int = STATUS_TEXT_MAX):  # noqa: N802 - reads as a type
    return Annotated[str, _cut(limit), Field(max_length=limit)]


def _quantity(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a quantity is an integer or a string such as 500m, 2Gi")
    if isinstance(value, str) and not _QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (such as 500m, 256Mi, 2Gi)")
    return value


Quantity = Annotated[
    int | str,
    BeforeValidator(_quantity),
    WithJsonSchema({"description": "A quantity: an integer or a string such as 500m, 256Mi, 2Gi.",
                    "x-kubernetes-int-or-string": True, "pattern": QUANTITY}),
]


class _Model(BaseModel):
    """Base of every resource model: wire field names, unknown fields ignored (pruned)."""

    model_config = ConfigDict(extra="ignore", validate_assignment=False)

    def to_k8s(self) -> dict[str, Any]:
        """The JSON-ready Kubernetes form: datetimes as RFC 3339; None values, and "" where the
        default is "" (absent means the same), left out. Leaving "" out also keeps a 1.20 API server
        built with a recent Go toolchain (tools/k8s) happy: it takes "" for null and rejects it."""
        data = self.model_dump(mode="json", exclude_none=True)
        _drop_empty(self, data)
        return data


def _drop_empty(model: BaseModel, data: dict[str, Any]) -> None:
    for name, info in type(model).model_fields.items():
        if name not in data:
            continue
        value = getattr(model, name)
        if data[name] == "" and info.default == "":
            del data[name]
        elif isinstance(value, BaseModel) and isinstance(data[name], dict):
            _drop_empty(value, data[name])
        elif isinstance(value, list):
            for item, item_data in zip(value, data[name]):
                if isinstance(item, BaseModel):
                    _drop_empty(item, item_data)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    _drop_empty(item, data[name][key])


def merge_patch(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`; `{}` when they are equal. Keys
    gone from `new` become null (a merge patch leaves an absent key as it is), lists are replaced.
    For status writes: `merge_patch(current.get("status") or {}, status.to_k8s())`."""
    if isinstance(old, dict) and isinstance(new, dict):
        patch: dict[str, Any] = {key: None for key in old if key not in new}
        for key, value in new.items():
            if key not in old:
                patch[key] = value
            elif old[key] != value:
                patch[key] = merge_patch(old[key], value) if isinstance(old[key], dict) and isinstance(value, dict) else value
        return patch
    return new


def _set_list(**extra: Any) -> dict[str, Any]:
    return {"x-kubernetes-list-type": "set", **extra}


def _map_list(*keys: str) -> dict[str, Any]:
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


# ---------------------------------------------------------------------------------------------
# shared pieces


class SecretKeyRef(_Model):
    """A key of a Secret in the resource's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret (in the same namespace).")
    key: str = Field(max_length=253, pattern=SECRET_KEY, description="Key within the Secret's data.")


class Condition(_Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316, pattern=CONDITION_TYPE, description="Condition type in CamelCase, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, min_length=1, pattern=CONDITION_REASON,
                        description="Machine-readable CamelCase reason for the last transition.")
    message: StatusText(32768) = Field("", description="Human-readable details of the last transition.")
    lastTransitionTime: AwareDatetime = Field(description="When the status last changed (not when it was last checked).")
    observedGeneration: int = Field(0, ge=0, description="metadata.generation the condition was computed from.")


Conditions = Annotated[
    list[Condition],
    _first(CONDITIONS_MAX),
    Field(max_length=CONDITIONS_MAX, json_schema_extra=_map_list("type")),
]


def set_condition(conditions: list[Condition], type: str, status: str, reason: str, message: str = "",
                  *, generation: int = 0, now: datetime | None = None) -> list[Condition]:
    """Return `conditions` with `type` set; `lastTransitionTime` moves only when `status` changes, so
    a reconcile that finds nothing new writes an identical status."""
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type == type:
            found = True
            since = cond.lastTransitionTime if cond.status == status else now
            cond = Condition(type=type, status=status, reason=reason, message=message,
                             lastTransitionTime=since, observedGeneration=generation)
        out.append(cond)
    if not found:
        out.append(Condition(type=type, status=status, reason=reason, message=message,
                             lastTransitionTime=now, observedGeneration=generation))
    return out


class AlertRef(_Model):
    """One alert in a capped status list."""

    alertId: str = Field(max_length=128, description="Alert id (SPEC §16.3).")
    ruleId: str = Field("", max_length=128, description="Alert rule, e.g. source.availability.")
    severity: Severity = Field("medium", description="Alert severity.")
    status: Literal["open", "acknowledged", "silenced", "resolved"] = Field("open", description="Alert status.")
    title: StatusText(200) = Field("", description="Alert title.")
    lastSeenAt: AwareDatetime | None = Field(None, description="When the alert condition was last seen.")


class IncidentRef(_Model):
    """One incident in a capped status list."""

    incidentId: str = Field(max_length=128, description="Incident id (SPEC §15).")
    severity: Severity = Field("medium", description="Incident severity (the maximum seen).")
    title: StatusText(200) = Field("", description="Incident title: risk name and agent.")
    workspacePath: StatusText(1024) = Field("", description="Workspace of the incident.")
    agentId: StatusText(256) = Field("", description="Agent of the incident.")
    openedAt: AwareDatetime | None = Field(None, description="When the incident was opened.")


class OpenAlerts(_Model):
    """Active alerts: the total and the most severe few."""

    total: int = Field(0, ge=0, description="Number of active (open, acknowledged or silenced) alerts.")
    items: Annotated[list[AlertRef], _first(STATUS_LIST_MAX)] = Field(
        default_factory=list, max_length=STATUS_LIST_MAX,
        description=f"The most severe active alerts, at most {STATUS_LIST_MAX}; `total` counts them all.")


class _Status(_Model):
    observedGeneration: int = Field(0, ge=0, description="metadata.generation of the spec this status reflects.")
    conditions: Conditions = Field(default_factory=list, description="Standard conditions, one per type.")


# ---------------------------------------------------------------------------------------------
# CRD presentation (rendered by crd.py)


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    jsonPath: str
    type: str = "string"  # string | integer | number | boolean | date
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class CrdInfo:
    plural: str
    shortNames: tuple[str, ...]
    columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = (CATEGORY,)


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since the object was created.")


def _condition(type_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].status'


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata the code reads; everything else is kept as is."""

    model_config = ConfigDict(extra="allow")

    name: str = Field("", description="Object name.")
    namespace: str = Field("", description="Object namespace.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    generation: int = Field(0, description="Spec generation.")
    uid: str = Field("", description="Object uid.")
    resourceVersion: str = Field("", description="Resource version.")
    creationTimestamp: str | None = Field(None, description="Creation time.")


class Resource(_Model):
    """Base of the six resources: apiVersion, kind, metadata, spec, status."""

    KIND: ClassVar[str] = ""
    CRD: ClassVar[CrdInfo]

    apiVersion: Literal["anysentry.io/v1alpha1"] = Field(API_VERSION, description="anysentry.io/v1alpha1")
    kind: str = Field(description="Kind of the resource.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")

    def to_k8s(self) -> dict[str, Any]:
        out = super().to_k8s()
        out["metadata"] = self.metadata.model_dump(mode="json", exclude_defaults=True)
        return out

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def ref(self) -> str:
        """`Kind/name`, as errors and logs name the object."""
        return f"{self.KIND}/{self.metadata.name}"


# ---------------------------------------------------------------------------------------------
# AnySentry


class ResourceRequirements(_Model):
    """Compute resources of a container (as in a Pod spec)."""

    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum compute resources, e.g. cpu: 500m, memory: 512Mi.")
    requests: dict[str, Quantity] = Field(default_factory=dict, description="Requested compute resources, e.g. cpu: 100m, memory: 256Mi.")


class Toleration(_Model):
    """A Pod toleration, so the collector also runs on tainted nodes."""

    key: str = Field("", max_length=316, description="Taint key the toleration applies to; empty with operator Exists matches all taints.")
    operator: Literal["", "Exists", "Equal"] = Field("", description="Exists or Equal (empty means Equal).")
    value: str = Field("", max_length=63, description="Taint value to match with operator Equal.")
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = Field("", description="Taint effect to match; empty matches all effects.")
    tolerationSeconds: int | None = Field(None, ge=0, description="For NoExecute: how long the Pod stays bound after the taint appears.")


class ClickHouseCredentialsRef(_Model):
    """A Secret holding the ClickHouse user name and password."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret (in the same namespace).")
    usernameKey: str = Field("username", max_length=253, pattern=SECRET_KEY, description="Key of the user name.")
    passwordKey: str = Field("password", max_length=253, pattern=SECRET_KEY, description="Key of the password.")


class ClickHouseSpec(_Model):
    """An external ClickHouse server."""

    url: str = Field(max_length=2048, pattern=HTTP_URL, description="HTTP(S) URL of the ClickHouse server, e.g. http://clickhouse.db:8123 (no credentials in it).")
    database: str = Field("anysentry", max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database for AnySentry's tables (created if missing).")
    credentialsSecretRef: ClickHouseCredentialsRef | None = Field(None, description="Secret with the user name and password; none means the default user without a password.")


class BundledClickHouseSpec(_Model):
    """A single-node ClickHouse the operator deploys as a StatefulSet."""

    enabled: bool = Field(True, description="Deploy the bundled ClickHouse.")
    storageSize: Quantity = Field("20Gi", description="Size of its persistent volume.")
    storageClassName: str = Field("", max_length=253, description="StorageClass of the volume; empty uses the cluster default.")
    image: str = Field("", max_length=512, description="ClickHouse image; empty uses the operator's default.")


class StorageSpec(_Model):
    """Where events and control-plane state live. An external server (`clickhouse`) when set;
    otherwise the bundled ClickHouse, which is also the default when nothing is said."""

    clickhouse: ClickHouseSpec | None = Field(None, description="External ClickHouse server; takes the place of the bundled one.")
    bundled: BundledClickHouseSpec | None = Field(None, description="Bundled ClickHouse; used when clickhouse is not set.")

    @model_validator(mode="after")
    def _one_store(self) -> StorageSpec:
        if self.clickhouse is not None and self.bundled is not None and self.bundled.enabled:
            raise ValueError("set either storage.clickhouse or storage.bundled (enabled), not both")
        if self.clickhouse is None and self.bundled is not None and not self.bundled.enabled:
            raise ValueError("storage.bundled.enabled is false and no storage.clickhouse server is set: events would have nowhere to go")
        return self

    @property
    def mode(self) -> Literal["clickhouse", "bundled"]:
        return "clickhouse" if self.clickhouse is not None else "bundled"

    @property
    def effectiveBundled(self) -> BundledClickHouseSpec:
        return self.bundled or BundledClickHouseSpec()


class ApiSpec(_Model):
    """The stateless ingest, judge and query service."""

    replicas: int = Field(2, ge=1, le=20, description="Number of api Pods.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements, description="Compute resources of each api container.")
    adminTokenSecretRef: SecretKeyRef | None = Field(None, description="Secret key holding the management (admin) token; none leaves management routes open (SPEC §27).")
    image: str = Field("", max_length=512, description="AnySentry image for api (and ui) Pods; empty uses the operator's own image.")


class CollectorSpec(_Model):
    """The node collector DaemonSet."""

    enabled: bool = Field(True, description="Run the collector on every (selected) node.")
    mode: Literal["observe"] = Field("observe", description="Collector mode; observe-only (enforcement happens through the runtime guard).")
    nodeSelector: dict[str, str] = Field(default_factory=dict, description="Run only on nodes with these labels.")
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = Field(default_factory=list, description="Tolerations so the collector also runs on tainted nodes.")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements, description="Compute resources of each collector container.")
    image: str = Field("", max_length=512, description="AnySentry image for the collector; empty uses the operator's own image.")


class UiSpec(_Model):
    """The web dashboard."""

    enabled: bool = Field(True, description="Deploy the web UI.")
    replicas: int = Field(1, ge=1, le=10, description="Number of UI Pods.")
    publicBasePath: str = Field("", max_length=200, pattern=PUBLIC_BASE_PATH,
                                description="Path prefix the UI is served under when an ingress publishes it at a "
                                            "sub-path, e.g. /anysentry/ (SPEC §3.1 PUBLIC_BASE_PATH); empty serves it at /.")


class IdentitySpec(_Model):
    """Pod identity of events (SPEC §7.6): whose Pods the api reads to name the workload behind an
    event. Least privilege by default: only the installation's own namespace."""

    namespaces: Annotated[list[Annotated[str, Field(max_length=63, pattern=NAMESPACE_OR_ALL)]], Field(max_length=100)] = Field(
        default_factory=list, json_schema_extra=_set_list(),
        description="Namespaces whose Pods give events their workload identity (the api gets read access to Pods "
                    "there and nothing else); [\"*\"] for every namespace (a ClusterRole); empty: the "
                    "installation's own namespace.")

    def effective(self, own_namespace: str) -> tuple[str, ...] | None:
        """The namespaces watched, in order and without repeats; None for every namespace."""
        if "*" in self.namespaces:
            return None
        return tuple(dict.fromkeys(self.namespaces)) or (own_namespace,)


class LlmSpec(_Model):
    """The L2 fast-review model endpoint (OpenAI-compatible chat completions)."""

    url: str = Field(max_length=2048, pattern=HTTP_URL, description="Base URL of the endpoint; a trailing /chat/completions or /responses is stripped.")
    model: str = Field("default", max_length=200, description="Model name sent to the endpoint.")
    timeoutS: int = Field(60, ge=1, le=600, description="Timeout of one review call, in seconds.")
    apiKeySecretRef: SecretKeyRef | None = Field(None, description="Secret key holding the API key; none sends no key.")


class DeepInvestigationSpec(_Model):
    """The L3 deep-investigation endpoint."""

    url: str = Field(max_length=2048, pattern=HTTP_URL, description="URL of the deep-investigation endpoint.")
    timeoutS: int = Field(90, ge=1, le=3600, description="Timeout of one investigation, in seconds.")


class JudgeSpec(_Model):
    """Judgment tiers beyond the L1 rules."""

    failClosed: bool = Field(False, description="Block when judgment fails or times out. The judge fails closed when this or the active Policy says so.")
    llm: LlmSpec | None = Field(None, description="L2 fast-review model; none keeps L2 off.")
    deepInvestigation: DeepInvestigationSpec | None = Field(None, description="L3 deep-investigation endpoint; none keeps L3 off.")


class AnySentrySpec(_Model):
    """One AnySentry installation: storage, api, collector, UI and judge tiers."""

    storage: StorageSpec = Field(default_factory=StorageSpec, description="Event and state storage.")
    api: ApiSpec = Field(default_factory=ApiSpec, description="The api Deployment.")
    collector: CollectorSpec = Field(default_factory=CollectorSpec, description="The node collector DaemonSet.")
    ui: UiSpec = Field(default_factory=UiSpec, description="The web UI Deployment.")
    judge: JudgeSpec = Field(default_factory=JudgeSpec, description="L2/L3 judgment tiers and fail-closed behaviour.")
    identity: IdentitySpec = Field(default_factory=IdentitySpec, description="Where the api looks up the Pods behind events (SPEC §7.6).")
    retentionDays: int = Field(90, ge=1, le=3650, description="Days events are kept in the store (ClickHouse TTL).")


class StorageStatus(_Model):
    """Which store is in use and whether it answers."""

    mode: Literal["", "clickhouse", "bundled"] = Field("", description="clickhouse (external) or bundled.")
    endpoint: StatusText(2048) = Field("", description="URL of the store in use (never with credentials).")
    ready: bool = Field(False, description="The store answered the last check.")


class Endpoints(_Model):
    """In-cluster URLs of the services."""

    api: StatusText(2048) = Field("", description="Base URL of the api (…/security-center).")
    ingest: StatusText(2048) = Field("", description="URL producers send events to.")
    ui: StatusText(2048) = Field("", description="URL of the web UI.")


class ReplicasStatus(_Model):
    """Desired and ready Pods of a Deployment."""

    desiredReplicas: int = Field(0, ge=0, description="Pods asked for.")
    readyReplicas: int = Field(0, ge=0, description="Pods ready.")
    ready: StatusText(32) = Field("", description="ready/desired, e.g. 2/2, for kubectl get.")


class CollectorStatus(_Model):
    """Nodes the collector DaemonSet should run on and runs ready on."""

    desiredNodes: int = Field(0, ge=0, description="Nodes the collector should run on.")
    readyNodes: int = Field(0, ge=0, description="Nodes with a ready collector.")
    ready: StatusText(32) = Field("", description="ready/desired, e.g. 3/3, for kubectl get.")


class IncidentsSummary(_Model):
    """Open incidents: counts and the most severe few."""

    open: int = Field(0, ge=0, description="Open incidents.")
    critical: int = Field(0, ge=0, description="Open critical incidents.")
    high: int = Field(0, ge=0, description="Open high incidents.")
    mostSevere: Annotated[list[IncidentRef], _first(SUMMARY_LIST_MAX)] = Field(
        default_factory=list, max_length=SUMMARY_LIST_MAX,
        description=f"The most severe open incidents, at most {SUMMARY_LIST_MAX}; `open` counts them all.")


class AlertsSummary(_Model):
    """Active alerts: counts and the most severe few."""

    active: int = Field(0, ge=0, description="Active (open, acknowledged or silenced) alerts.")
    critical: int = Field(0, ge=0, description="Active critical alerts.")
    high: int = Field(0, ge=0, description="Active high alerts.")
    mostSevere: Annotated[list[AlertRef], _first(SUMMARY_LIST_MAX)] = Field(
        default_factory=list, max_length=SUMMARY_LIST_MAX,
        description=f"The most severe active alerts, at most {SUMMARY_LIST_MAX}; `active` counts them all.")


class AnySentryStatus(_Status):
    """Conditions Ready, StorageReady, ApiAvailable, CollectorAvailable; what runs; what is open."""

    CONDITION_TYPES: ClassVar[tuple[str, ...]] = ("Ready", "StorageReady", "ApiAvailable", "CollectorAvailable")

    storage: StorageStatus | None = Field(None, description="The store in use.")
    endpoints: Endpoints | None = Field(None, description="Service URLs.")
    api: ReplicasStatus | None = Field(None, description="api Pods.")
    ui: ReplicasStatus | None = Field(None, description="UI Pods.")
    collector: CollectorStatus | None = Field(None, description="Collector nodes.")
    incidents: IncidentsSummary | None = Field(None, description="Open incidents.")
    alerts: AlertsSummary | None = Field(None, description="Active alerts.")


class AnySentry(Resource):
    """An AnySentry installation: the operator deploys api, collector and UI for it."""

    KIND: ClassVar[str] = "AnySentry"
    CRD: ClassVar[CrdInfo] = CrdInfo(
        plural="anysentries",
        shortNames=("asy",),
        columns=(
            PrinterColumn("Ready", _condition("Ready"), description="All parts are available."),
            PrinterColumn("Storage", ".status.storage.mode", description="Store in use: clickhouse or bundled."),
            PrinterColumn("API", ".status.api.ready", description="Ready/desired api Pods."),
            PrinterColumn("Collectors", ".status.collector.ready", description="Ready/desired collector nodes."),
            PrinterColumn("Open Incidents", ".status.incidents.open", "integer", "Open incidents."),
            PrinterColumn("Alerts", ".status.alerts.active", "integer", "Active alerts.", priority=1),
            AGE,
        ),
    )

    kind: Literal["AnySentry"] = Field("AnySentry", description="AnySentry")
    spec: AnySentrySpec = Field(default_factory=AnySentrySpec, description="Desired installation.")
    status: AnySentryStatus | None = Field(None, description="Observed state, written by the operator.")


# ---------------------------------------------------------------------------------------------
# Source


class SourceSpec(_Model):
    """A producer of events (SPEC §22): a node observer, a forwarder, a webhook, OTel, Falco, ..."""

    type: Literal["observer", "forwarder", "webhook", "otel", "custom", "falco", "tetragon"] = Field(description="Kind of producer.")
    enabled: bool = Field(True, description="Accept events from this source; a disabled source's events are rejected.")
    requireToken: bool = Field(True, description="Reject events that do not carry this source's ingest token.")
    tokenRotationDays: int = Field(90, ge=0, le=3650, description="Days after which the ingest token is due for rotation (0: due at once).")
    collectorId: str = Field("", max_length=253, description="Collector id whose events and heartbeats belong to this source.")
    workspacePath: str = Field("", max_length=1024, description="Workspace this source reports for, if one.")
    owner: str = Field("", max_length=120, description="Owner, for alert and notification routing.")
    team: str = Field("", max_length=120, description="Team, for alert and notification routing.")
    environment: str = Field("", max_length=64, description="Environment, e.g. production.")
    tags: Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=32)] = Field(
        default_factory=list, json_schema_extra=_set_list(), description="Free-form tags.")
    note: str = Field("", max_length=2000, description="Free-form note.")


class TokenStatus(_Model):
    """The ingest token: where it is and when it is due. The token itself is only in the Secret."""

    secretRef: SecretKeyRef | None = Field(None, description="Secret (owned by the operator) holding the token.")
    preview: StatusText(32) = Field("", description="First 8 and last 6 characters of the token.")
    issuedAt: AwareDatetime | None = Field(None, description="When the token was issued.")
    rotationDueAt: AwareDatetime | None = Field(None, description="When the token is due for rotation.")
    rotationStatus: Literal["untracked", "fresh", "overdue"] = Field("untracked", description="untracked (no token required or none issued), fresh or overdue.")


class SourceStatus(_Status):
    """Health and traffic of the source."""

    CONDITION_TYPES: ClassVar[tuple[str, ...]] = ("Ready",)

    sourceId: StatusText(128) = Field("", description="Id the api knows this source by.")
    phase: Literal["", "Active", "Stale", "Unused", "Disabled"] = Field("", description="Active, Stale (no signal for a while), Unused (no accepted signal yet) or Disabled.")
    lastSeenAt: AwareDatetime | None = Field(None, description="Last accepted event or heartbeat.")
    lastEventAt: AwareDatetime | None = Field(None, description="Last accepted event.")
    lastHeartbeatAt: AwareDatetime | None = Field(None, description="Last accepted heartbeat or check-in.")
    acceptedEvents: int = Field(0, ge=0, description="Events accepted.")
    acceptedHeartbeats: int = Field(0, ge=0, description="Heartbeats and check-ins accepted.")
    rejectedEvents: int = Field(0, ge=0, description="Ingest attempts rejected.")
    lastResult: Literal["", "accepted", "rejected"] = Field("", description="Result of the last attempt.")
    lastError: StatusText() = Field("", description="Reason of the last rejection.")
    token: TokenStatus | None = Field(None, description="Ingest token.")
    openAlerts: OpenAlerts | None = Field(None, description="Active alerts about this source.")


class Source(Resource):
    """A producer of events and its ingest token."""

    KIND: ClassVar[str] = "Source"
    CRD: ClassVar[CrdInfo] = CrdInfo(
        plural="sources",
        shortNames=("asrc",),
        columns=(
            PrinterColumn("Type", ".spec.type", description="Kind of producer."),
            PrinterColumn("Phase", ".status.phase", description="Active, Stale, Unused or Disabled."),
            PrinterColumn("Last Seen", ".status.lastSeenAt", "date", "Time since the last accepted signal."),
            PrinterColumn("Accepted", ".status.acceptedEvents", "integer", "Events accepted."),
            PrinterColumn("Rejected", ".status.rejectedEvents", "integer", "Ingest attempts rejected."),
            PrinterColumn("Token", ".status.token.rotationStatus", description="Token rotation: fresh, overdue or untracked.", priority=1),
            AGE,
        ),
    )

    kind: Literal["Source"] = Field("Source", description="Source")
    spec: SourceSpec = Field(description="Desired source.")
    status: SourceStatus | None = Field(None, description="Observed state, written by the operator.")


# ---------------------------------------------------------------------------------------------
# Policy


class PolicyRule(_Model):
    """A custom L1 rule: a regex over the event subject of one kind of event."""

    name: str = Field(max_length=80, pattern=RULE_NAME, description="Rule name, unique in the policy; decisions name it.")
    on: EventKindOn = Field("ToolExec", description="Event kind the rule applies to; * for every judged kind.")
    match: str = Field(min_length=1, max_length=1000, description="Regular expression (RE2 syntax) searched in the event subject; the operator rejects one that does not compile.")
    verdict: Literal["allow", "block", "escalate"] = Field("block", description="Verdict when the rule matches.")
    severity: Severity = Field("medium", description="Severity when the rule matches.")
    reason: str = Field("custom rule", max_length=200, description="Reason recorded with the decision.")
    action: Literal["", "deny-exec", "deny-egress", "deny-file"] = Field("", description="Runtime-guard action when blocked; empty for none.")
    # YAML 1.1 (kubectl's YAML included) reads a bare `on:` key as the boolean true, which reaches
    # the API server as the key "true"; unknown, it would be pruned in silence and the rule would
    # apply to ToolExec. Knowing the key, and allowing it no value, makes the API server reject it.
    true: str | None = Field(None, max_length=0, description='Never set. A bare on: key is read as true by YAML 1.1; write "on": (quoted).')


class PolicySpec(_Model):
    """The L1 policy (SPEC §11.1): mode, custom rules and disabled built-in rules."""

    mode: Literal["monitor", "enforce"] = Field("monitor", description="monitor records verdicts only; enforce lets the runtime guard block.")
    failClosed: bool = Field(False, description="Block when judgment fails or times out.")
    rules: Annotated[list[PolicyRule], Field(max_length=200, json_schema_extra=_map_list("name"))] = Field(
        default_factory=list, description="Custom rules, evaluated before the built-in rules.")
    disabledBuiltins: Annotated[list[Annotated[str, Field(min_length=1, max_length=80, pattern=RULE_NAME)]], Field(max_length=200)] = Field(
        default_factory=list, json_schema_extra=_set_list(), description="Names of built-in rules to turn off.")


class DecisionCounts(_Model):
    """Decisions by verdict."""

    allow: int = Field(0, ge=0, description="Allowed events.")
    block: int = Field(0, ge=0, description="Blocked events.")
    escalate: int = Field(0, ge=0, description="Escalated events.")


class ReplaySummary(_Model):
    """The last replay of recent events through this policy (SPEC §11.4)."""

    at: AwareDatetime | None = Field(None, description="When the replay ran.")
    evaluatedEvents: int = Field(0, ge=0, description="Events replayed.")
    changedEvents: int = Field(0, ge=0, description="Events whose decision would change.")
    newBlocks: int = Field(0, ge=0, description="Events that would newly be blocked.")
    removedBlocks: int = Field(0, ge=0, description="Events that would no longer be blocked.")
    newEscalations: int = Field(0, ge=0, description="Events that would newly be escalated.")
    removedEscalations: int = Field(0, ge=0, description="Events that would no longer be escalated.")


class PolicyStatus(_Status):
    """Validity (condition Valid, with the exact regex error when not), version and effect."""

    CONDITION_TYPES: ClassVar[tuple[str, ...]] = ("Valid",)

    ruleCount: int = Field(0, ge=0, description="Custom rules in force.")
    policyVersion: StatusText(64) = Field("", description="Version stamped on decisions made with this policy.")
    decisions24h: DecisionCounts | None = Field(None, description="Decisions of the last 24 hours by verdict.")
    lastReplay: ReplaySummary | None = Field(None, description="Summary of the last replay.")


class Policy(Resource):
    """The judge's L1 policy."""

    KIND: ClassVar[str] = "Policy"
    CRD: ClassVar[CrdInfo] = CrdInfo(
        plural="policies",
        shortNames=("apol",),
        columns=(
            PrinterColumn("Mode", ".spec.mode", description="monitor or enforce."),
            PrinterColumn("Valid", _condition("Valid"), description="Every rule compiles."),
            PrinterColumn("Rules", ".status.ruleCount", "integer", "Custom rules in force."),
            PrinterColumn("Version", ".status.policyVersion", description="Policy version on decisions."),
            PrinterColumn("Blocks 24h", ".status.decisions24h.block", "integer", "Blocked events in the last 24 h.", priority=1),
            AGE,
        ),
    )

    kind: Literal["Policy"] = Field("Policy", description="Policy")
    spec: PolicySpec = Field(default_factory=PolicySpec, description="Desired policy.")
    status: PolicyStatus | None = Field(None, description="Observed state, written by the operator.")


# ---------------------------------------------------------------------------------------------
# Objective


class ObjectiveTarget(_Model):
    """What an objective measures."""

    type: Literal["global", "workspace", "agent", "collector", "source"] = Field("global", description="Scope of the objective.")
    id: str = Field("", max_length=1024, description="workspacePath, agentId (or workspacePath:agentId), collectorId (or node name) or sourceId; empty for global.")

    @model_validator(mode="after")
    def _id_when_scoped(self) -> ObjectiveTarget:
        if self.type != "global" and not self.id:
            raise ValueError(f"target.id is required when target.type is {self.type}")
        return self


class ObjectiveSpec(_Model):
    """A reliability objective over a metric (SPEC §18)."""

    target: ObjectiveTarget = Field(default_factory=ObjectiveTarget, description="Scope of the objective.")
    metric: ObjectiveMetric = Field(description="Metric compared with the threshold.")
    comparator: Literal["gte", "lte"] | None = Field(None, description="gte: value must be ≥ threshold; lte: ≤. Unset: gte for coverage_score, lte otherwise.")
    threshold: float | None = Field(None, ge=0, le=1_000_000, description="Threshold. Unset: 90 for coverage_score, 0 otherwise.")
    severity: Severity = Field("high", description="Severity of the breach alert.")
    owner: str = Field("", max_length=120, description="Owner of the objective, for routing.")
    description: str = Field("", max_length=1000, description="What the objective is for.")
    enabled: bool = Field(True, description="Evaluate the objective.")

    @property
    def effectiveComparator(self) -> Literal["gte", "lte"]:
        return self.comparator or ("gte" if self.metric == "coverage_score" else "lte")

    @property
    def effectiveThreshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 90.0 if self.metric == "coverage_score" else 0.0


class ObjectiveStatus(_Status):
    """The last evaluation."""

    CONDITION_TYPES: ClassVar[tuple[str, ...]] = ("Ready",)

    objectiveId: StatusText(128) = Field("", description="Id the api knows this objective by.")
    state: Literal["", "Ok", "Breach", "Disabled"] = Field("", description="Ok, Breach or Disabled.")
    value: float | None = Field(None, description="Current value of the metric.")
    comparator: Literal["", "gte", "lte"] = Field("", description="Comparator in force (spec or metric default).")
    threshold: float | None = Field(None, description="Threshold in force (spec or metric default).")
    since: AwareDatetime | None = Field(None, description="When the state last changed.")
    lastEvaluatedAt: AwareDatetime | None = Field(None, description="When the objective was last evaluated.")
    evidence: StatusText(200) = Field("", description="Short sentence, e.g. 3 open incidents.")
    alertId: StatusText(128) = Field("", description="Breach alert, while one is active.")


class Objective(Resource):
    """A service-level objective over coverage, incidents, alerts, ..."""

    KIND: ClassVar[str] = "Objective"
    CRD: ClassVar[CrdInfo] = CrdInfo(
        plural="objectives",
        shortNames=("aobj",),
        columns=(
            PrinterColumn("Metric", ".spec.metric", description="Metric measured."),
            PrinterColumn("Target", ".spec.target.type", description="Scope: global, workspace, agent, collector or source.", priority=1),
            PrinterColumn("Comparator", ".status.comparator", description="gte or lte.", priority=1),
            PrinterColumn("Threshold", ".status.threshold", "number", "Threshold in force."),
            PrinterColumn("Value", ".status.value", "number", "Current value."),
            PrinterColumn("State", ".status.state", description="Ok, Breach or Disabled."),
            AGE,
        ),
    )

    kind: Literal["Objective"] = Field("Objective", description="Objective")
    spec: ObjectiveSpec = Field(description="Desired objective.")
    status: ObjectiveStatus | None = Field(None, description="Observed state, written by the operator.")


# ---------------------------------------------------------------------------------------------
# MaintenanceWindow


class MaintenanceTarget(_Model):
    """What a maintenance window silences."""

    type: Literal["all", "workspace", "agent", "collector", "source"] = Field("all", description="Scope of the window.")
    id: str = Field("", max_length=1024, description="workspacePath, agentId (or workspacePath:agentId), collectorId (or node name) or sourceId; empty for all.")

    @model_validator(mode="after")
    def _id_when_scoped(self) -> MaintenanceTarget:
        if self.type != "all" and not self.id:
            raise ValueError(f"target.id is required when target.type is {self.type}")
        return self


class MaintenanceWindowSpec(_Model):
    """A time window in which matching alerts are not raised (SPEC §19)."""

    title: str = Field("", max_length=200, description="Title; empty uses the object name.")
    target: MaintenanceTarget = Field(default_factory=MaintenanceTarget, description="Scope of the window.")
    startAt: AwareDatetime = Field(description="Start (RFC 3339).")
    endAt: AwareDatetime = Field(description="End (RFC 3339); the window lasts at least 60 seconds.")
    reason: str = Field("", max_length=500, description="Why the window exists, e.g. a change ticket.")
    owner: str = Field("", max_length=120, description="Who asked for it.")
    note: str = Field("", max_length=2000, description="Free-form note.")
    enabled: bool = Field(True, description="A disabled window silences nothing.")

    @property
    def effectiveEndAt(self) -> datetime:
        """endAt, moved to at least startAt + 60 s (SPEC §19)."""
        return max(self.endAt, self.startAt + timedelta(seconds=60))


class MaintenanceWindowStatus(_Status):
    """Phase and effect of the window."""

    CONDITION_TYPES: ClassVar[tuple[str, ...]] = ("Ready",)

    windowId: StatusText(128) = Field("", description="Id the api knows this window by.")
    phase: Literal["", "Scheduled", "Active", "Expired", "Disabled"] = Field("", description="Scheduled, Active, Expired or Disabled.")
    suppressedAlerts: int = Field(0, ge=0, description="Alerts resolved or not raised because of this window.")


class MaintenanceWindow(Resource):
    """A maintenance window."""

    KIND: ClassVar[str] = "MaintenanceWindow"
    CRD: ClassVar[CrdInfo] = CrdInfo(
        plural="maintenancewindows",
        shortNames=("amw",),
        columns=(
            PrinterColumn("Target", ".spec.target.type", description="Scope of the window."),
            PrinterColumn("Target ID", ".spec.target.id", description="Workspace, agent, collector or source id."),
            PrinterColumn("Phase", ".status.phase", description="Scheduled, Active, Expired or Disabled."),
            # strings, not dates: a date column shows "<invalid>" for a time in the future
            PrinterColumn("Starts", ".spec.startAt", description="Start (RFC 3339)."),
            PrinterColumn("Ends", ".spec.endAt", description="End (RFC 3339)."),
            PrinterColumn("Suppressed", ".status.suppressedAlerts", "integer", "Alerts suppressed.", priority=1),
        ),
    )

    kind: Literal["MaintenanceWindow"] = Field("MaintenanceWindow", description="MaintenanceWindow")
    spec: MaintenanceWindowSpec = Field(description="Desired window.")
    status: MaintenanceWindowStatus | None = Field(None, description="Observed state, written by the operator.")


# ---------------------------------------------------------------------------------------------
# NotificationRoute


class RouteMatch(_Model):
    """Which alerts a route sends (SPEC §17); every field set must match, empty fields match all."""

    minSeverity: Literal["", "info", "low", "medium", "high", "critical"] = Field("", description="Lowest alert severity sent; empty for all.")
    kinds: Annotated[list[AlertKind], Field(max_length=8)] = Field(
        default_factory=list, json_schema_extra=_set_list(), description="Alert kinds sent; empty for all.")
    workspace: str = Field("", max_length=1024, description="Only alerts of this workspacePath.")
    agent: str = Field("", max_length=256, description="Only alerts of this agentId.")
    collector: str = Field("", max_length=253, description="Only alerts of this collectorId.")
    source: str = Field("", max_length=128, description="Only alerts of this sourceId.")
    owner: str = Field("", max_length=120, description="Only alerts of this owner.")
    team: str = Field("", max_length=120, description="Only alerts of this team.")
    text: str = Field("", max_length=200, description="Only alerts whose text contains this substring.")


class Receiver(_Model):
    """A webhook that receives the alert notifications (POST, JSON, SPEC §17)."""

    name: str = Field(max_length=63, pattern=DNS_LABEL, description="Receiver name, unique in the route.")
    webhookUrlSecretRef: SecretKeyRef = Field(description="Secret key holding the webhook URL (e.g. a Slack-compatible incoming webhook).")
    hmacKeySecretRef: SecretKeyRef | None = Field(None, description="Secret key holding an HMAC key to sign deliveries with; none sends them unsigned.")


class NotificationRouteSpec(_Model):
    """Alert notifications to webhooks."""

    match: RouteMatch = Field(default_factory=RouteMatch, description="Which alerts to send.")
    receivers: Annotated[list[Receiver], Field(min_length=1, max_length=10, json_schema_extra=_map_list("name"))] = Field(
        description="Webhooks to send them to.")
    description: str = Field("", max_length=1000, description="What the route is for.")
    enabled: bool = Field(True, description="A disabled route sends nothing.")


class ReceiverStatus(_Model):
    """Delivery state of one receiver."""

    name: str = Field(max_length=63, description="Receiver name.")
    channelId: StatusText(128) = Field("", description="Notification channel id the api knows this receiver by.")
    lastStatus: Literal["", "ok", "error", "not_sent"] = Field("", description="Result of the last delivery.")
    lastSentAt: AwareDatetime | None = Field(None, description="When the last delivery was attempted.")
    lastError: StatusText() = Field("", description="Error of the last failed delivery.")


class NotificationRouteStatus(_Status):
    """Deliveries made through this route."""

    CONDITION_TYPES: ClassVar[tuple[str, ...]] = ("Ready",)

    routeId: StatusText(128) = Field("", description="Id the api knows this route by.")
    delivered: int = Field(0, ge=0, description="Deliveries that reached the webhook.")
    failed: int = Field(0, ge=0, description="Deliveries that failed (transport error).")
    notSent: int = Field(0, ge=0, description="Deliveries not attempted (disabled or no URL).")
    lastDeliveryAt: AwareDatetime | None = Field(None, description="When the last delivery was attempted.")
    lastError: StatusText() = Field("", description="Error of the last failed delivery.")
    receivers: Annotated[list[ReceiverStatus], _first(STATUS_LIST_MAX)] = Field(
        default_factory=list, max_length=STATUS_LIST_MAX, json_schema_extra=_map_list("name"),
        description="Per-receiver delivery state.")


class NotificationRoute(Resource):
    """A notification route."""

    KIND: ClassVar[str] = "NotificationRoute"
    CRD: ClassVar[CrdInfo] = CrdInfo(
        plural="notificationroutes",
        shortNames=("anr",),
        columns=(
            PrinterColumn("Enabled", ".spec.enabled", "boolean", "The route sends."),
            PrinterColumn("Min Severity", ".spec.match.minSeverity", description="Lowest severity sent.", priority=1),
            PrinterColumn("Ready", _condition("Ready"), description="Every receiver's Secret resolves."),
            PrinterColumn("Delivered", ".status.delivered", "integer", "Deliveries that reached the webhook."),
            PrinterColumn("Failed", ".status.failed", "integer", "Deliveries that failed."),
            PrinterColumn("Last Delivery", ".status.lastDeliveryAt", "date", "Time since the last delivery."),
            AGE,
        ),
    )

    kind: Literal["NotificationRoute"] = Field("NotificationRoute", description="NotificationRoute")
    spec: NotificationRouteSpec = Field(description="Desired route.")
    status: NotificationRouteStatus | None = Field(None, description="Observed state, written by the operator.")


# ---------------------------------------------------------------------------------------------

RESOURCES: tuple[type[Resource], ...] = (AnySentry, Source, Policy, Objective, MaintenanceWindow, NotificationRoute)
KINDS: dict[str, type[Resource]] = {cls.KIND: cls for cls in RESOURCES}
