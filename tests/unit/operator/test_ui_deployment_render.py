"""The ui Deployment the operator renders: listens on the Pod address, reaches the api Service, and
gets the admin token from the same Secret key as the api (so its actions pass the token check)."""

from __future__ import annotations

from anysentry.operator import render
from test_operator_render import installation, k8s_errors  # noqa: E402 - sibling test module

TOKEN_REF = {"name": "anysentry-admin", "key": "token"}


def containers(spec: dict) -> dict:
    rendered = render.render(installation(spec))
    return {component: rendered.get("Deployment", f"anysentry-{component}")["spec"]["template"]["spec"]["containers"][0]
            for component in ("api", "ui")}


def token_env(container: dict) -> list[dict]:
    return [e for e in container["env"] if e["name"] == "ANYSENTRY_ADMIN_TOKEN"]


def test_ui_gets_the_api_admin_token_from_the_same_secret():
    found = containers({"api": {"adminTokenSecretRef": TOKEN_REF}})
    assert token_env(found["ui"]) == token_env(found["api"]) == [
        {"name": "ANYSENTRY_ADMIN_TOKEN", "valueFrom": {"secretKeyRef": TOKEN_REF}}]
    ui = render.render(installation({"api": {"adminTokenSecretRef": TOKEN_REF}})).get("Deployment", "anysentry-ui")
    assert k8s_errors(ui) == []


def test_ui_without_a_token_secret_has_no_token_env_and_listens_on_the_pod_address():
    ui = containers({})["ui"]
    assert token_env(ui) == []
    args = ui["args"]
    assert args[:3] == ["ui", "--host", "0.0.0.0"]
    assert args[args.index("--api-url") + 1] == "http://anysentry-api.ns1.svc:29653/security-center"
    assert args[args.index("--port") + 1] == str(render.UI_PORT)
