"""The ui Deployment behind an ingress at a sub-path (`spec.ui.publicBasePath`, SPEC §3.1): the UI
gets PUBLIC_BASE_PATH and the status endpoint names the prefixed URL; without it nothing changes."""

from __future__ import annotations

from test_operator_render import installation, k8s_errors  # noqa: E402 - sibling test module

from anysentry.operator import render
from anysentry.resources.manifests import validate_object


def ui_env(spec: dict) -> dict:
    ui = render.render(installation(spec)).get("Deployment", "anysentry-ui")
    assert k8s_errors(ui) == []
    return {e["name"]: e.get("value") for e in ui["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_a_public_base_path_reaches_the_ui_and_its_endpoint():
    for given in ("/anysentry/", "/anysentry"):
        assert ui_env({"ui": {"publicBasePath": given}})["PUBLIC_BASE_PATH"] == "/anysentry"
        assert render.endpoints(installation({"ui": {"publicBasePath": given}}))["ui"] == \
            "http://anysentry-ui.ns1.svc:5006/anysentry/"
    assert ui_env({"ui": {"publicBasePath": "/tools/security/"}})["PUBLIC_BASE_PATH"] == "/tools/security"


def test_without_one_the_ui_is_served_at_the_root():
    for spec in ({}, {"ui": {"publicBasePath": "/"}}):
        assert "PUBLIC_BASE_PATH" not in ui_env(spec)
        assert render.endpoints(installation(spec))["ui"] == "http://anysentry-ui.ns1.svc:5006/"


def test_the_schema_refuses_what_is_not_a_path():
    for bad in ("anysentry", "/any sentry", "/a?b=1", "/../etc", "//x", "http://host/x"):
        _, errors = validate_object({"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry",
                                     "metadata": {"name": "a", "namespace": "ns1"}, "spec": {"ui": {"publicBasePath": bad}}})
        assert any("ui.publicBasePath" in str(e) for e in errors), bad
