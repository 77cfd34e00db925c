"""API tokens and /api/v1/ without a registry: making, using and revoking tokens (page, command,
service), scopes against roles, and what hostile requests get (problem details, audit rows)."""

import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from registry_admin import api_tokens
from registry_admin.api.auth import TokenRateThrottle
from registry_admin.models import ApiToken, AuditEvent, PortalAction, Repository, Run
from registry_admin.roles import ADMIN_GROUP, VIEWER_GROUP

from .factories import make_admin, make_user, make_viewer

pytestmark = pytest.mark.django_db

API = "/api/v1"
PROBLEM = "application/problem+json"


def bearer(text):
    return {"HTTP_AUTHORIZATION": f"Bearer {text}"}


def refusals():
    return list(
        AuditEvent.objects.filter(action=PortalAction.API_REFUSED)
        .order_by("id")
        .values_list("actor", "raw")
    )


def assert_problem(response, status):
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


# --- the service --------------------------------------------------------------------------------


def test_a_token_is_stored_hashed_and_shown_once():
    owner = make_admin()
    token, text = api_tokens.create("alice", owner, "ci", "read,delete", 30)
    assert text.startswith(f"oyster_{token.prefix}_") and len(text) == 63
    row = ApiToken.objects.get()
    # Neither the token nor its secret is stored; only the prefix and the secret's SHA-256.
    secret = text.rsplit("_", 1)[1]
    for field in ("name", "prefix", "secret_sha256", "scopes"):
        assert secret not in getattr(row, field)
    assert row.scopes == "read,delete"
    assert api_tokens.authenticate(text) == row
    created = AuditEvent.objects.get(action=PortalAction.API_TOKEN_CREATED)
    assert created.actor == "alice" and secret not in created.raw and token.prefix in created.raw


@pytest.mark.parametrize(
    ("scopes", "days", "name", "message"),
    [
        ("read,admin", 30, "x", "does not allow the scope admin"),
        ("write", 30, "x", "Unknown scope"),
        ("", 30, "x", "at least one scope"),
        ("read", 0, "x", "1 to 3650 days"),
        ("read", 3651, "x", "1 to 3650 days"),
        ("read", 30, "", "1 to 100 printable"),
        ("read", 30, "a\nb", "1 to 100 printable"),
        ("read", 30, "n" * 101, "1 to 100 printable"),
    ],
)
def test_a_viewer_cannot_make_a_token_beyond_its_role_or_a_malformed_one(
    scopes, days, name, message
):
    viewer = make_viewer()
    with pytest.raises(api_tokens.TokenError, match=message):
        api_tokens.create("victor", viewer, name, scopes, days)
    assert not ApiToken.objects.exists()


def test_last_used_is_written_at_most_once_a_minute():
    owner = make_viewer()
    token, text = api_tokens.create("victor", owner, "ci", "read")
    api_tokens.authenticate(text)
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    api_tokens.authenticate(text)
    assert ApiToken.objects.get().last_used_at == first
    ApiToken.objects.update(last_used_at=first - timedelta(seconds=61))
    api_tokens.authenticate(text)
    assert ApiToken.objects.get().last_used_at > first


# --- the command ------------------------------------------------------------------------------


def test_the_command_prints_only_the_token_and_lists_and_revokes():
    make_admin()
    out = io.StringIO()
    call_command(
        "api_token", "create", "alice", "--scope", "read,delete", "--name", "ci", stdout=out
    )
    text = out.getvalue().strip()
    assert "\n" not in text and text.startswith("oyster_")
    token = api_tokens.authenticate(text)
    assert token.scope_list == ["read", "delete"] and token.name == "ci"
    assert AuditEvent.objects.get(action=PortalAction.API_TOKEN_CREATED).actor.startswith("cli:")
    listing = io.StringIO()
    call_command("api_token", "list", stdout=listing)
    assert listing.getvalue().startswith(f"{token.prefix}\talice\tci\tread,delete\texpires ")
    assert text not in listing.getvalue()
    call_command("api_token", "revoke", token.prefix)
    with pytest.raises(api_tokens.Refused, match="revoked"):
        api_tokens.authenticate(text)
    with pytest.raises(CommandError, match="already revoked"):
        call_command("api_token", "revoke", token.prefix)


@pytest.mark.parametrize(
    "args",
    [
        ["create", "nobody-here", "--scope", "read"],
        ["create", "victor", "--scope", "delete"],
        ["create", "victor", "--scope", "read", "--expires", "-1"],
        ["create", "victor", "--scope", "read", "--name", "x" * 500],
        ["revoke", "0123456789ab"],
        ["list", "x" * 1000],
    ],
)
def test_the_command_refuses_with_a_sentence(args):
    make_viewer()
    with pytest.raises(CommandError):
        call_command("api_token", *args, stdout=io.StringIO())
    assert not ApiToken.objects.exists()


# --- the profile page ---------------------------------------------------------------------------


def test_a_viewer_makes_a_read_token_on_the_page_and_sees_it_once(client):
    viewer = make_viewer()
    client.force_login(viewer)
    page = client.get("/account/tokens/")
    assert page.status_code == 200
    assert b'value="read"' in page.content and b'value="delete"' not in page.content
    made = client.post("/account/tokens/", {"name": "laptop", "scopes": ["read"], "days": "7"})
    assert made.status_code == 200
    token = ApiToken.objects.get()
    text = made.content.decode().split('id="api-token" class="mono">')[1].split("<")[0]
    assert api_tokens.authenticate(text) == token
    assert made["Cache-Control"].count("no-store") == 1
    again = client.get("/account/tokens/")
    assert text.encode() not in again.content and token.prefix.encode() in again.content
    # Beyond the role: refused by the form (the choice is not offered) and nothing is made.
    refused = client.post("/account/tokens/", {"name": "x", "scopes": ["delete"], "days": "7"})
    assert refused.status_code == 400 and ApiToken.objects.count() == 1


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"name": "", "scopes": ["read"], "days": "7"},
        {"name": "a\x00b", "scopes": ["read"], "days": "7"},
        {"name": "x" * 10_000, "scopes": ["read"], "days": "7"},
        {"name": "x", "scopes": ["read"], "days": "99999999999999999999"},
        {"name": "x", "scopes": ["root"], "days": "7"},
        {"name": "x", "scopes": ["read"], "days": "-3"},
    ],
)
def test_the_page_refuses_hostile_forms(admin_client, data):
    response = admin_client.post("/account/tokens/", data)
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_the_token_pages_need_login_and_csrf(admin_user):
    anonymous = Client()
    assert anonymous.get("/account/tokens/").status_code == 302
    assert anonymous.post("/account/tokens/", {"name": "x"}).status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(admin_user)
    response = strict.post("/account/tokens/", {"name": "x", "scopes": ["read"], "days": "7"})
    assert response.status_code == 403 and not ApiToken.objects.exists()
    token, _ = api_tokens.create("alice", admin_user, "ci", "read")
    response = strict.post("/account/tokens/revoke/", {"prefix": token.prefix})
    assert response.status_code == 403
    assert ApiToken.objects.get().revoked_at is None
    roleless = Client()
    roleless.force_login(make_user("nobody"))
    assert roleless.get("/account/tokens/").status_code == 403


def test_only_the_owner_or_an_admin_revokes(client):
    owner = make_viewer()
    other = make_viewer("valerie")
    token, _ = api_tokens.create("victor", owner, "ci", "read")
    client.force_login(other)
    assert client.post("/account/tokens/revoke/", {"prefix": token.prefix}).status_code == 403
    assert client.post("/account/tokens/revoke/", {"prefix": "x" * 5000}).status_code == 403
    assert ApiToken.objects.get().revoked_at is None
    admin = Client()
    admin.force_login(make_admin())
    assert token.prefix.encode() in admin.get("/account/tokens/").content
    assert admin.post("/account/tokens/revoke/", {"prefix": token.prefix}).status_code == 302
    row = ApiToken.objects.get()
    assert row.revoked_at is not None and row.revoked_by == "alice"
    assert AuditEvent.objects.get(action=PortalAction.API_TOKEN_REVOKED).actor == "alice"


def test_a_token_does_not_log_into_the_pages():
    owner = make_admin()
    _, text = api_tokens.create("alice", owner, "ci", "read,delete,users,admin")
    for path in ("/", "/repositories/", "/account/tokens/", "/audit/"):
        response = Client().get(path, **bearer(text))
        assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- the API: authentication, scopes, hostile input --------------------------------------------


def test_a_read_token_lists_repositories_and_is_refused_a_delete():
    owner = make_admin()
    Repository.objects.create(name="team/app", is_empty=False, tag_count=1)
    _, text = api_tokens.create("alice", owner, "ci", "read")
    listing = Client().get(f"{API}/repositories/", **bearer(text))
    assert listing.status_code == 200
    assert [r["name"] for r in listing.json()["results"]] == ["team/app"]
    assert "no-store" in listing["Cache-Control"]
    refused = Client().delete(f"{API}/repositories/team/app/-/tags/v1", **bearer(text))
    assert "'delete' scope" in assert_problem(refused, 403)["detail"]
    (actor, raw), *_ = refusals()
    assert actor == "alice" and json.loads(raw)["reason"] == "needs scope delete"


def test_a_demoted_owner_loses_the_scopes_at_once():
    owner = make_admin()
    _, text = api_tokens.create("alice", owner, "ci", "read,admin")
    assert Client().get(f"{API}/runs/sync/", **bearer(text)).status_code == 200
    owner.groups.set([Group.objects.get(name=VIEWER_GROUP)])
    refused = Client().post(
        f"{API}/runs/sync/", {}, content_type="application/json", **bearer(text)
    )
    assert "no longer allows" in assert_problem(refused, 403)["detail"]
    assert Client().get(f"{API}/runs/sync/", **bearer(text)).status_code == 200
    owner.groups.clear()
    assert_problem(Client().get(f"{API}/runs/sync/", **bearer(text)), 401)
    owner.groups.set([Group.objects.get(name=ADMIN_GROUP)])
    owner.is_active = False
    owner.save()
    assert_problem(Client().get(f"{API}/runs/sync/", **bearer(text)), 401)


def test_bad_expired_and_revoked_tokens_are_refused_and_audited():
    owner = make_viewer()
    token, text = api_tokens.create("victor", owner, "ci", "read")
    headers = [
        {},
        {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"},
        {"HTTP_AUTHORIZATION": "Bearer"},
        bearer("x" * 10_000),
        bearer("oyster_" + "z" * 56),
        bearer(text[:-1] + ("A" if text[-1] != "A" else "B")),
        bearer(text + "\x00"),
        bearer("oyster_\u00e9\u00e9\u00e9"),
    ]
    for header in headers:
        body = assert_problem(Client().get(f"{API}/repositories/", **header), 401)
        assert text not in json.dumps(body)
    answer = Client().get(f"{API}/repositories/")
    assert answer["WWW-Authenticate"].startswith("Bearer")
    # Anyone can send these: at most three rows a minute per address.
    assert len(refusals()) == 3
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert (
        "expired"
        in assert_problem(Client().get(f"{API}/repositories/", **bearer(text)), 401)["detail"]
    )
    ApiToken.objects.update(expires_at=timezone.now() + timedelta(days=1))
    api_tokens.revoke("victor", token)
    assert (
        "revoked"
        in assert_problem(Client().get(f"{API}/repositories/", **bearer(text)), 401)["detail"]
    )
    reasons = [json.loads(raw)["reason"] for actor, raw in refusals() if actor == "victor"]
    assert reasons == ["token expired", "token revoked"]
    assert all(text not in raw for _, raw in refusals())


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/repositories/?cursor=garbage", 400),
        ("/repositories/?cursor=" + "A" * 5000, 400),
        ("/repositories/?sort=evil", 400),
        ("/repositories/?limit=0", 400),
        ("/repositories/?limit=100000", 400),
        ("/repositories/?q=%00", 400),
        ("/repositories/?q=" + "a" * 300, 400),
        ("/audit-events/?cursor=nope", 400),
        ("/audit-events/?since=2020-13-45", 400),
        ("/audit-events/?actor=%01", 400),
        ("/audit-events/?all=null", 400),  # the fuzzer's find: the page's checkbox took any text
        ("/audit-events/?all=yes please", 400),
        ("/repositories/Team/App/-/tags/", 400),
        ("/repositories/a/../b/-/tags/", 400),
        ("/repositories/" + "a" * 300 + "/-/tags/", 400),
        ("/repositories/team/none/-/tags/", 404),
        ("/repositories/team/app/-/tags/?page=0", 400),
        ("/repositories/team/app/-/tags/.bad", 400),
        ("/runs/not-a-kind/", 404),
    ],
)
def test_malformed_parameters_are_problems(path, status):
    owner = make_admin()
    Repository.objects.create(name="team/app", is_empty=False)
    _, text = api_tokens.create("alice", owner, "ci", "read,delete,admin")
    assert_problem(Client().get(API + path, **bearer(text)), status)


def test_bodies_hostile_or_oversized_are_refused(settings):
    settings.API_MAX_BODY = 1024
    owner = make_admin()
    Repository.objects.create(name="team/app", is_empty=False)
    _, text = api_tokens.create("alice", owner, "ci", "read,delete,admin")
    url = f"{API}/repositories/team/app/-/bulk-delete"
    cases = [
        ("{", 400),
        ("[]", 400),
        ('{"tags": []}', 400),
        ('{"tags": [{"tag": "../x"}]}', 400),
        ('{"tags": [{"tag": "v1", "expected_digest": "md5:1"}]}', 400),
        ('{"tags": [{"tag": "v1"}, {"tag": "v1"}]}', 400),
        (json.dumps({"tags": [{"tag": f"t{i}"} for i in range(200)]}), 413),
    ]
    for body, status in cases:
        assert_problem(
            Client().post(url, body, content_type="application/json", **bearer(text)), status
        )
    unsupported = Client().post(url, "tags=v1", content_type="text/plain", **bearer(text))
    assert_problem(unsupported, 415)
    assert not AuditEvent.objects.filter(action=PortalAction.TAG_DELETED).exists()


def test_a_real_run_of_a_deleting_kind_is_refused_and_a_dry_run_requested():
    owner = make_admin()
    _, text = api_tokens.create("alice", owner, "ci", "read,admin")
    url = f"{API}/runs/retention/"
    refused = Client().post(
        url, {"dry_run": False}, content_type="application/json", **bearer(text)
    )
    assert assert_problem(refused, 409)["type"].endswith("dry-run-only")
    asked = Client().post(url, {}, content_type="application/json", **bearer(text))
    assert asked.status_code == 202
    run = asked.json()["run"]
    assert run["kind"] == "retention" and run["options"] == {"dry_run": True}
    assert run["requested_by"] == "alice"


def test_undocumented_methods_are_405_problems():
    owner = make_admin()
    _, text = api_tokens.create("alice", owner, "ci", "read,delete,admin")
    response = Client().put(f"{API}/repositories/", **bearer(text))
    assert_problem(response, 405)
    assert response["Allow"] == "GET"


def test_the_token_is_throttled(monkeypatch):
    # API_THROTTLE_RATE (REST framework reads it once, at import) for this test.
    monkeypatch.setattr(TokenRateThrottle, "rate", "3/m", raising=False)
    owner = make_viewer()
    _, first = api_tokens.create("victor", owner, "a", "read")
    _, second = api_tokens.create("victor", owner, "b", "read")
    for _ in range(3):
        assert Client().get(f"{API}/repositories/", **bearer(first)).status_code == 200
    throttled = Client().get(f"{API}/repositories/", **bearer(first))
    assert_problem(throttled, 429)
    assert int(throttled["Retry-After"]) > 0
    # Per token: the owner's other token is not slowed down.
    assert Client().get(f"{API}/repositories/", **bearer(second)).status_code == 200


def test_the_schema_and_reference_page_need_no_login():
    schema = Client().get(f"{API}/schema/")
    assert schema.status_code == 200
    document = json.loads(schema.content)
    assert document["openapi"] == "3.1.0"
    assert "/api/v1/repositories/{repository}/-/tags/" in document["paths"]
    delete = document["paths"]["/api/v1/repositories/{repository}/-/tags/{tag}"]["delete"]
    assert "expected_digest" in [p["name"] for p in delete["parameters"]]
    page = Client().get(f"{API}/docs/")
    assert page.status_code == 200 and b"swagger-ui-bundle.js" in page.content
    assert "script-src 'self'" in page["Content-Security-Policy"]


def test_the_untagged_prune_dry_run_lists_and_the_real_run_asks_the_worker():
    owner = make_admin()
    _, deleter = api_tokens.create("alice", owner, "ci", "read,delete")
    _, reader = api_tokens.create("alice", owner, "dash", "read")
    url = f"{API}/untagged/prune"
    dry = Client().post(
        url, {"repository": "team/*"}, content_type="application/json", **bearer(deleter)
    )
    assert dry.status_code == 200
    assert dry.json() | {"results": []} == {
        "dry_run": True,
        "results": [],
        "total": 0,
        "reclaimable_bytes": 0,
        "run": None,
    }
    assert not Run.objects.exists()
    refused = Client().post(
        url, {"dry_run": False}, content_type="application/json", **bearer(reader)
    )
    assert_problem(refused, 403)
    assert not Run.objects.exists()
    hostile = Client().post(
        url, {"repository": "a\x00"}, content_type="application/json", **bearer(deleter)
    )
    assert_problem(hostile, 400)
    real = Client().post(
        url,
        {"repository": "team/*", "dry_run": False},
        content_type="application/json",
        **bearer(deleter),
    )
    assert real.status_code == 202
    run = Run.objects.get()
    assert (run.kind, run.options, run.requested_by) == (
        "prune_untagged",
        {"repository": "team/*"},
        "alice",
    )
    assert real.json()["run"]["id"] == run.pk


def test_a_repository_delete_is_not_started_through_the_runs_endpoint():
    from registry_admin.models import JobKind, Run

    owner = make_admin()
    _, text = api_tokens.create("alice", owner, "ci", "read,delete,admin")
    for dry_run in (True, False):
        answer = Client().post(
            API + "/runs/delete_repository/",
            {"dry_run": dry_run},
            content_type="application/json",
            **bearer(text),
        )
        assert_problem(answer, 409)
    assert not Run.objects.filter(kind=JobKind.DELETE_REPOSITORY).exists()
