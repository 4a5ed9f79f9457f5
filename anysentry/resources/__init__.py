"""The custom resources (DESIGN.md §3): pydantic models (`models`), the CRDs rendered from them
(`crd`), and the loader that validates CR manifests against those CRDs (`manifests`)."""

from .models import (
    API_VERSION,
    GROUP,
    KINDS,
    RESOURCES,
    VERSION,
    AnySentry,
    Condition,
    MaintenanceWindow,
    NotificationRoute,
    Objective,
    Policy,
    Resource,
    Source,
    merge_patch,
    set_condition,
)

__all__ = [
    "API_VERSION", "GROUP", "KINDS", "RESOURCES", "VERSION",
    "AnySentry", "Condition", "MaintenanceWindow", "NotificationRoute", "Objective", "Policy", "Resource", "Source",
    "merge_patch", "set_condition",
]
