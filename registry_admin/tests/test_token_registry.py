"""The portal as the token server of the real registry 2.8.2 (auth: token), with skopeo as client.

The registry's notifications go to the live test server as usual; its `auth.token.realm` is the
live server's /auth/token, and its `rootcertbundle` is the file `registry_config --auth token`
wrote. Everything here is real: the registry verifies every token it is given.
"""

import io
from datetime import timedelta

import pytest
import requests
import yaml
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from registry_admin import access, htpasswd, index, reconcile
from registry_admin.models import AuditEvent, PortalAction, RobotAccount, Tag

from . import harness
from .images import build_image, sha256_digest, write_oci_layout

PASSWORD = "a-long-enough-password"


@pytest.fixture
def token_registry(tmp_path, live_server, settings):
    settings.REGISTRY_AUTH_MODE = "token"
    settings.TOKEN_KEY_DIR = str(tmp_path / "token-keys")
    reg = harness.start_registry(tmp_path / "registry", live_server.url)
    harness.registry_settings(settings, reg)
    out = io.StringIO()
    bundle = tmp_path / "bundle" / "root.pem"
    call_command(
        "registry_config",
        "--url",
        live_server.url,
        "--auth",
        "token",
        "--cert-out",
        str(bundle),
        "--hide-token",
        stdout=out,
        stderr=io.StringIO(),
    )
    # The command's own YAML, parsed back: what an operator would paste is what is tested.
    auth_yaml = out.getvalue().split("# Token auth", 1)[1].split("\n", 1)[1]
    auth_yaml = auth_yaml.split("# Or as the registry's environment variables:")[0]
    auth_block = yaml.safe_load(auth_yaml)["auth"]
    assert auth_block["token"]["rootcertbundle"] == str(bundle)
    config = yaml.safe_load(reg.config_path.read_text())
    config["auth"] = auth_block
    reg.restart(config)
    reg.bundle = bundle
    try:
        yield reg
    finally:
        harness.wait_for_quiet_notifications()
        reg.stop()


def _push(skopeo_binary, reg, tmp_path, repo, username, password, tag="v1"):
    image = build_image()
    layout = tmp_path / f"layout-{repo.replace('/', '_')}-{username}"
    write_oci_layout(layout, image, tag)
    return harness.Skopeo(skopeo_binary, reg.url).copy_to_registry(
        layout, tag, repo, username, password
    ), image


def _inspect(reg, repo, tag, username=None, password=None):
    return harness.Skopeo(harness.SKOPEO_BINARY, reg.url).inspect(repo, tag, username, password)


def _delete(reg, repo, tag, username, password):
    return harness.Skopeo(harness.SKOPEO_BINARY, reg.url).delete(repo, tag, username, password)


@pytest.mark.django_db(transaction=True)
def test_skopeo_against_the_real_registry_in_token_mode(token_registry, tmp_path, admin_client):
    harness.require_binary(harness.SKOPEO_BINARY, "apt-get install skopeo")
    reg = token_registry
    for name in ("dev", "reader", "robot-ci"):
        htpasswd.add_user(name, PASSWORD, rounds=4)
    access.grant("test", "dev", "team/*", "pull,push")
    access.grant("test", "reader", "team/**", "pull")
    access.grant("test", "anonymous", "public/*", "pull")
    access.grant("test", "robot-ci", "team/**", "pull,push")
    RobotAccount.objects.create(username="robot-ci", expires_at=timezone.now() - timedelta(days=1))
    bin_ = harness.SKOPEO_BINARY

    # Push allowed on team/*, refused on other/app.
    pushed, image = _push(bin_, reg, tmp_path, "team/app", "dev", PASSWORD)
    assert pushed.returncode == 0, pushed.stderr
    refused, _ = _push(bin_, reg, tmp_path, "other/app", "dev", PASSWORD)
    assert refused.returncode != 0
    assert "denied" in refused.stderr.lower() or "unauthorized" in refused.stderr.lower()

    # Pull-only: pulls, cannot push, cannot delete.
    pulled = _inspect(reg, "team/app", "v1", "reader", PASSWORD)
    assert pulled.returncode == 0, pulled.stderr
    assert sha256_digest(pulled.stdout.encode()) == image.digest
    assert _push(bin_, reg, tmp_path, "team/app", "reader", PASSWORD, tag="v2")[0].returncode != 0
    assert _delete(reg, "team/app", "v1", "reader", PASSWORD).returncode != 0
    # dev has no delete either.
    assert _delete(reg, "team/app", "v1", "dev", PASSWORD).returncode != 0

    # Expired robot: refused although its password and rules are right.
    robot = _inspect(reg, "team/app", "v1", "robot-ci", PASSWORD)
    assert robot.returncode != 0

    # Anonymous: refused, except where anonymous pull is granted.
    assert _inspect(reg, "team/app", "v1").returncode != 0
    pushed_public, _ = _push(
        bin_, reg, tmp_path, "public/base", harness.SERVICE_USER, harness.SERVICE_PASSWORD
    )
    assert pushed_public.returncode == 0, pushed_public.stderr
    assert _inspect(reg, "public/base", "v1").returncode == 0

    # Wrong password: refused.
    assert _inspect(reg, "team/app", "v1", "reader", "wrong-password-here").returncode != 0

    # Every refusal is in the audit log with who asked for what.
    refusals = AuditEvent.objects.filter(action=PortalAction.TOKEN_REFUSED)
    by_actor = {(e.actor, e.repository) for e in refusals}
    assert ("dev", "other/app") in by_actor
    assert ("reader", "team/app") in by_actor
    assert ("robot-ci", "team/app") in by_actor
    assert ("anonymous", "team/app") in by_actor
    assert not refusals.filter(actor="anonymous", repository="public/base").exists()
    assert "expired" in refusals.filter(actor="robot-ci").first().raw

    # The portal's own pages work unchanged: reconcile, browse, delete (service account tokens).
    reconcile.reconcile()
    assert set(Tag.objects.filter(repository__name="team/app").values_list("name", flat=True)) == {
        "v1"
    }
    page = admin_client.get(reverse("registry_admin:tag", args=["team/app", "v1"]))
    assert page.status_code == 200
    assert image.digest in page.content.decode()
    index.upsert_tag("team/app", "v1", image.digest, timezone.now())
    done = admin_client.post(
        reverse("registry_admin:tag-delete"),
        {"repository": "team/app", "tag": "v1", "digest": image.digest, "confirm": "yes"},
    )
    assert done.status_code in (200, 302)
    gone = _inspect(reg, "team/app", "v1", "reader", PASSWORD)
    assert gone.returncode != 0 and "unknown" in gone.stderr.lower()


@pytest.mark.django_db(transaction=True)
def test_tampered_and_foreign_tokens_are_refused_by_the_registry(token_registry, settings):
    from registry_admin import tokens

    reg = token_registry
    url = f"{reg.url}/v2/_catalog"
    challenge = requests.get(url, timeout=5)
    assert challenge.status_code == 401
    assert f'realm="{settings.TOKEN_SERVICE}"' not in challenge.headers["WWW-Authenticate"]
    assert "/auth/token" in challenge.headers["WWW-Authenticate"]

    catalog = [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    good, _ = tokens.issue(harness.SERVICE_USER, catalog, settings.TOKEN_SERVICE)
    assert (
        requests.get(url, headers={"Authorization": f"Bearer {good}"}, timeout=5).status_code == 200
    )

    header, claims, signature = good.split(".")
    tampered_sig = (
        header + "." + claims + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    )
    other_service, _ = tokens.issue(harness.SERVICE_USER, catalog, "another-service")
    expired, _ = tokens.issue(
        harness.SERVICE_USER, catalog, settings.TOKEN_SERVICE, now=timezone.now().timestamp() - 3600
    )
    import base64
    import json

    fake_claims = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    fake_claims["sub"] = "mallory"
    forged_claims = base64.urlsafe_b64encode(json.dumps(fake_claims).encode()).rstrip(b"=").decode()
    for bad in (
        tampered_sig,
        other_service,
        expired,
        f"{header}.{forged_claims}.{signature}",
        "x.y.z",
    ):
        answer = requests.get(url, headers={"Authorization": f"Bearer {bad}"}, timeout=5)
        assert answer.status_code == 401, bad[:40]


@pytest.mark.django_db(transaction=True)
def test_an_oidc_users_cli_secret_pushes_for_their_directory_group_until_revoked(
    token_registry, tmp_path, settings
):
    """A person signed in through the directory: their CLI secret pushes to team/app because
    their directory group has team/*, and stops when the group is lost or the secret revoked."""
    harness.require_binary(harness.SKOPEO_BINARY, "apt-get install skopeo")
    from registry_admin import cli_secrets, directory
    from registry_admin.models import DirectoryIdentity

    settings.OIDC_ROLE_MAP = {"oyster-readers": "viewer"}
    issuer = "https://login.example.org"
    claims = {"sub": "d-1", "preferred_username": "dana@example.org"}
    user = directory.sign_in(issuer, claims | {"groups": ["oyster-readers", "team"]}, via="oidc")
    access.grant("test", "@team", "team/*", "pull,push")
    identity = DirectoryIdentity.objects.get(user=user)
    row, secret = cli_secrets.create(identity, "laptop", 1)
    name = identity.registry_name
    assert name == "dana.example.org"
    bin_, reg = harness.SKOPEO_BINARY, token_registry

    pushed, _ = _push(bin_, reg, tmp_path / "1", "team/app", name, secret)
    assert pushed.returncode == 0, pushed.stderr
    assert _push(bin_, reg, tmp_path / "2", "other/app", name, secret)[0].returncode != 0

    # The group lost in the directory, read at the next portal sign-in.
    directory.sign_in(issuer, claims | {"groups": ["oyster-readers"]}, via="oidc")
    assert _push(bin_, reg, tmp_path / "3", "team/app", name, secret, tag="v2")[0].returncode != 0
    directory.sign_in(issuer, claims | {"groups": ["oyster-readers", "team"]}, via="oidc")
    again, _ = _push(bin_, reg, tmp_path / "4", "team/app", name, secret, tag="v3")
    assert again.returncode == 0, again.stderr

    # Revoked: refused at the next token request.
    assert cli_secrets.revoke(identity, row.pk)
    refused, _ = _push(bin_, reg, tmp_path / "5", "team/app", name, secret, tag="v4")
    assert refused.returncode != 0
    assert "unauthorized" in refused.stderr.lower() or "denied" in refused.stderr.lower()
