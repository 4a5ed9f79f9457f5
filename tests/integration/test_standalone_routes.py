"""NotificationRoute resources in `anysentry serve`: receivers' Secrets come from local secrets."""

from anysentry.ops.standalone import apply_resources
from anysentry.resources.manifests import load_text

ROUTE = """
apiVersion: anysentry.io/v1alpha1
kind: NotificationRoute
metadata: {name: security-oncall}
spec:
  enabled: true
  match: {minSeverity: high, kinds: [incident]}
  receivers:
    - name: slack
      webhookUrlSecretRef: {name: security-slack, key: webhookUrl}
      hmacKeySecretRef: {name: security-slack, key: hmacKey}
"""


async def test_route_applied_with_secrets_from_a_mounted_folder(api, tmp_path, monkeypatch):
    secret = tmp_path / "secrets" / "security-slack"
    secret.mkdir(parents=True)
    (secret / "webhookUrl").write_text("https://hooks.example.test/services/T000/B000/XYZ\n")
    monkeypatch.setenv("ANYSENTRY_SECRETS_DIR", str(tmp_path / "secrets"))
    monkeypatch.setenv("ANYSENTRY_SECRET_SECURITY_SLACK_HMACKEY", "signing-key-from-env")
    report = apply_resources(api.services, load_text(ROUTE, "route.yaml"))
    assert report.applied == ["NotificationRoute/security-oncall"] and report.errors == []
    config = await api.data("GET", "/notifications/config")
    route = config["routes"][0]
    assert route["name"] == "security-oncall" and route["minSeverity"] == "high" and route["kinds"] == ["incident"]
    channel = config["channels"][0]
    assert channel["endpointPreview"] == "https://hooks.example.test/..."
    assert "XYZ" not in str(config) and "signing-key-from-env" not in str(config)


async def test_missing_secret_is_reported_not_fatal(api, monkeypatch):
    monkeypatch.delenv("ANYSENTRY_SECRETS_DIR", raising=False)
    report = apply_resources(api.services, load_text(ROUTE, "route.yaml"))
    assert report.applied == ["NotificationRoute/security-oncall"]
    assert any("security-slack/webhookUrl not set" in e for e in report.errors)
