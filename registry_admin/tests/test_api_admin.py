"""/api/v1/ for registry users, quotas, the recycle bin and storage: the pages' rules through
the API, scopes, audit rows with the token's owner, hostile input. The htpasswd file is real
(a temporary file); the registry is not needed here (restores on the real registry:
test_recycle_bin.py drives the same `recycle_bin.restore`)."""

import json

import pytest
from django.test import Client

from registry_admin import api_tokens, htpasswd
from registry_admin.models import AuditEvent, BinItem, PortalAction, Quota, StorageSnapshot

from .factories import make_admin
from .test_api_tokens import API, assert_problem, bearer

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-enough-password"


@pytest.fixture
def users_file(settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    htpasswd.add_user("existing", PASSWORD, rounds=4)
    return tmp_path / "htpasswd"


def token(scopes):
    owner = make_admin(f"owner{token.count}")
    token.count += 1
    return api_tokens.create(owner.username, owner, "ci", scopes)[1], owner


token.count = 0


def call(method, path, text, body=None, **params):
    client = Client()
    query = "&".join(f"{k}={v}" for k, v in params.items())
    url = API + path + (f"?{query}" if query else "")
    kwargs = bearer(text)
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(url, **kwargs)


def test_registry_users_listed_created_changed_and_removed_with_the_owner_as_actor(users_file):
    text, owner = token("read,users")
    listed = call("get", "/users/", text)
    assert listed.status_code == 200
    assert [u["username"] for u in listed.json()] == ["existing"]
    made = call("post", "/users/", text, {"username": "ci-bot", "password": PASSWORD})
    assert made.status_code == 201 and made.json()["generated_password"] is None
    assert htpasswd.check_password("ci-bot", PASSWORD)
    generated = call("post", "/users/ci-bot/password", text, {})
    assert generated.status_code == 200 and len(generated.json()["generated_password"]) >= 16
    assert htpasswd.check_password("ci-bot", generated.json()["generated_password"])
    assert not htpasswd.check_password("ci-bot", PASSWORD)
    assert call("delete", "/users/ci-bot", text).status_code == 204
    assert htpasswd.read_users().get("ci-bot") is None
    rows = AuditEvent.objects.filter(
        action__in=[
            PortalAction.USER_CREATED,
            PortalAction.USER_PASSWORD_CHANGED,
            PortalAction.USER_DELETED,
        ]
    )
    assert rows.count() == 3 and set(rows.values_list("actor", flat=True)) == {owner.username}
    assert PASSWORD not in "".join(rows.values_list("raw", flat=True))
    assert generated.json()["generated_password"] not in "".join(rows.values_list("raw", flat=True))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "existing", "password": PASSWORD}, "username"),
        ({"username": "bad name", "password": PASSWORD}, "username"),
        ({"username": "x", "password": "short"}, "password"),
        ({"username": "x", "password": "é" * 50}, "password"),  # over bcrypt's 72 bytes
        ({"username": "x" * 65, "password": PASSWORD}, "username"),
        ({"password": PASSWORD}, "username"),
        ({"username": ["x"], "password": PASSWORD}, "username"),
    ],
)
def test_bad_users_are_refused_with_the_pages_sentences(users_file, body, field):
    text, _ = token("users")
    answer = assert_problem(call("post", "/users/", text, body), 400)
    assert field in json.dumps(answer)
    assert [e.username for e in htpasswd.read_users().entries] == ["existing"]


def test_the_service_account_and_unknown_users_are_refused(users_file, settings):
    text, _ = token("users")
    service = settings.REGISTRY_USERNAME
    assert_problem(call("delete", f"/users/{service}", text), 409)
    assert_problem(call("post", f"/users/{service}/password", text, {}), 409)
    assert_problem(call("post", "/users/", text, {"username": service}), 400)
    assert_problem(call("delete", "/users/nobody", text), 404)
    assert_problem(call("delete", "/users/bad%20name", text), 400)
    assert_problem(call("delete", "/users/" + "x" * 300, text), 400)


def test_users_need_the_users_scope(users_file):
    text, _ = token("read,delete")
    assert_problem(call("get", "/users/", text), 403)
    assert_problem(call("post", "/users/", text, {"username": "x", "password": PASSWORD}), 403)
    assert htpasswd.read_users().get("x") is None


def test_an_unreadable_users_file_is_a_503_not_a_500(users_file):
    text, _ = token("users")
    users_file.unlink()
    users_file.mkdir()  # a directory where the file should be: unreadable even for root
    assert_problem(call("get", "/users/", text), 503)
    assert_problem(call("post", "/users/", text, {"username": "x", "password": PASSWORD}), 503)


def test_quotas_listed_set_and_removed():
    text, owner = token("read,admin")
    assert call("get", "/quotas/", text).json() == []
    saved = call("post", "/quotas/", text, {"pattern": "team/*", "size": "2GB", "warn_percent": 90})
    assert saved.status_code == 200
    assert saved.json()["limit_bytes"] == 2 * 10**9 and saved.json()["partial"] is True
    assert [q["pattern"] for q in call("get", "/quotas/", text).json()] == ["team/*"]
    assert call("delete", "/quotas/", text, pattern="team/*").status_code == 204
    assert not Quota.objects.exists()
    actors = set(
        AuditEvent.objects.filter(
            action__in=[PortalAction.QUOTA_SET, PortalAction.QUOTA_REMOVED]
        ).values_list("actor", flat=True)
    )
    assert actors == {owner.username}


@pytest.mark.parametrize(
    "body",
    [
        {"pattern": "Team/*", "size": "1GB"},
        {"pattern": "team/*", "size": "lots"},
        {"pattern": "team/*", "size": "1GB", "warn_percent": 0},
        {"pattern": "team/*"},
        {"pattern": "x" * 1000, "size": "1GB"},
        {"pattern": "team/*", "size": "9" * 100},
    ],
)
def test_bad_quotas_are_problems(body):
    text, _ = token("admin")
    assert_problem(call("post", "/quotas/", text, body), 400)
    assert not Quota.objects.exists()


def test_quota_changes_need_the_admin_scope_and_a_missing_one_is_404():
    text, _ = token("read")
    assert_problem(call("post", "/quotas/", text, {"pattern": "a/*", "size": "1GB"}), 403)
    admin_text, _ = token("admin")
    assert_problem(call("delete", "/quotas/", admin_text, pattern="none/*"), 404)


def test_the_recycle_bin_lists_and_a_restore_of_nothing_is_404():
    from django.utils import timezone

    text, _ = token("read,delete")
    item = BinItem.objects.create(
        repository="team/app",
        digest="sha256:" + "a" * 64,
        kind="image",
        tags=["v1"],
        state=BinItem.State.HELD,
        reason="manual",
        actor="alice",
        deleted_at=timezone.now(),
        expires_at=timezone.now(),
        size_bytes=10,
    )
    listed = call("get", "/recycle-bin/", text).json()
    assert [(i["id"], i["tags"]) for i in listed] == [(item.pk, ["v1"])]
    assert call("get", "/recycle-bin/", text, repository="other/x").json() == []
    assert_problem(call("get", "/recycle-bin/", text, repository="%01"), 400)
    assert_problem(call("post", "/recycle-bin/999999/restore", text), 404)
    read_only, _ = token("read")
    assert_problem(call("post", f"/recycle-bin/{item.pk}/restore", read_only), 403)


def test_storage_is_null_before_a_scan_and_the_latest_scan_after():
    text, _ = token("read")
    assert call("get", "/storage/", text).json()["total_bytes"] is None
    StorageSnapshot.objects.create(
        backend="filesystem",
        total_bytes=1234,
        blob_count=3,
        reclaimable_bytes=5,
        reclaimable_count=1,
    )
    answer = call("get", "/storage/", text).json()
    assert answer["total_bytes"] == 1234 and answer["reclaimable_bytes"] == 5


def test_access_rules_granted_listed_and_revoked():
    text, owner = token("read,users")
    saved = call(
        "post",
        "/access/rules/",
        text,
        {"subject": "@ci", "pattern": "team/*", "actions": ["pull", "push"]},
    )
    assert saved.status_code == 200 and saved.json()["actions"] == ["pull", "push"]
    denied = call(
        "post", "/access/rules/", text, {"subject": "dev", "pattern": "secret/*", "actions": []}
    )
    assert denied.status_code == 200 and denied.json()["actions"] == []
    listed = call("get", "/access/rules/", text).json()
    assert {(r["subject"], r["pattern"]) for r in listed} == {
        ("@ci", "team/*"),
        ("dev", "secret/*"),
    }
    assert (
        call("delete", "/access/rules/", text, subject="@ci", pattern="team/*").status_code == 204
    )
    assert_problem(call("delete", "/access/rules/", text, subject="@ci", pattern="team/*"), 404)
    actors = set(
        AuditEvent.objects.filter(
            action__in=[PortalAction.ACCESS_GRANTED, PortalAction.ACCESS_REVOKED]
        ).values_list("actor", flat=True)
    )
    assert actors == {owner.username}


@pytest.mark.parametrize(
    "body",
    [
        {"subject": "bad subject", "pattern": "team/*", "actions": ["pull"]},
        {"subject": "dev", "pattern": "Team/*", "actions": ["pull"]},
        {"subject": "dev", "pattern": "team/*", "actions": ["fly"]},
        {"subject": "dev", "pattern": "team/*", "actions": "pull"},
        {"subject": "dev", "pattern": "../x", "actions": ["pull"]},
        {"subject": "x" * 100, "pattern": "team/*", "actions": ["pull"]},
        {"pattern": "team/*", "actions": ["pull"]},
    ],
)
def test_bad_rules_are_problems(body):
    from registry_admin.models import AccessRule

    text, _ = token("users")
    assert_problem(call("post", "/access/rules/", text, body), 400)
    assert not AccessRule.objects.exists()


def test_robots_created_with_a_password_once_and_removed(users_file):
    from registry_admin.models import RobotAccount

    text, _ = token("read,users")
    made = call("post", "/access/robots/", text, {"name": "deployer", "days": 30})
    assert made.status_code == 201
    robot = made.json()
    assert robot["username"] == "robot-deployer" and len(robot["password"]) >= 20
    assert htpasswd.check_password("robot-deployer", robot["password"])
    assert [r["username"] for r in call("get", "/access/robots/", text).json()] == [
        "robot-deployer"
    ]
    assert "password" not in call("get", "/access/robots/", text).json()[0]
    assert robot["password"] not in "".join(AuditEvent.objects.values_list("raw", flat=True))
    assert call("delete", "/access/robots/robot-deployer", text).status_code == 204
    assert not RobotAccount.objects.exists() and htpasswd.read_users().get("robot-deployer") is None
    assert_problem(call("delete", "/access/robots/robot-deployer", text), 404)
    for bad in (
        {"name": "x", "days": 0},
        {"name": "bad name", "days": 3},
        {"name": "x", "days": "soon"},
    ):
        assert_problem(call("post", "/access/robots/", text, bad), 400)
    read_only, _ = token("read")
    assert_problem(call("post", "/access/robots/", read_only, {"name": "x", "days": 3}), 403)


def test_retention_rules_created_updated_and_deleted_with_the_pages_rules():
    from registry_admin.models import RetentionRule

    text, owner = token("read,delete")
    made = call(
        "post",
        "/retention-rules/",
        text,
        {
            "name": "previews",
            "repository_pattern": "team/*",
            "keep_latest": 5,
            "keep_regex": "latest|v\\d+",
        },
    )
    assert made.status_code == 201, made.content
    rule = made.json()
    assert rule["keep_latest"] == 5 and rule["enabled"] is True
    changed = call(
        "post",
        f"/retention-rules/{rule['id']}",
        text,
        {
            "name": "previews",
            "repository_pattern": "team/**",
            "not_pulled_for_days": 30,
            "enabled": False,
        },
    )
    assert changed.status_code == 200, changed.content
    assert changed.json()["repository_pattern"] == "team/**" and changed.json()["enabled"] is False
    assert changed.json()["keep_latest"] is None  # every field replaced, as the page's form
    assert [r["name"] for r in call("get", "/retention-rules/", text).json()] == ["previews"]
    assert call("delete", f"/retention-rules/{rule['id']}", text).status_code == 204
    assert not RetentionRule.objects.exists()
    assert_problem(call("get", f"/retention-rules/{rule['id']}", text), 404)
    actors = set(
        AuditEvent.objects.filter(
            action__in=[PortalAction.RETENTION_RULE_SAVED, PortalAction.RETENTION_RULE_DELETED]
        ).values_list("actor", flat=True)
    )
    assert actors == {owner.username}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "r", "repository_pattern": "team/*", "keep_regex": "(?=lookahead)"},  # not RE2
        {"name": "r", "repository_pattern": "Team/*", "keep_latest": 1},
        {"name": "r", "repository_pattern": "team/*", "keep_latest": -1},
        {"name": "r", "repository_pattern": "team/*", "not_pulled_for_days": 99999999},
        {
            "name": "<script>",
            "repository_pattern": "team/*",
            "keep_latest": 1,
            "keep_regex": "x" * 600,
        },
        {"repository_pattern": "team/*"},
    ],
)
def test_bad_retention_rules_are_problems(body):
    from registry_admin.models import RetentionRule

    text, _ = token("delete")
    assert_problem(call("post", "/retention-rules/", text, body), 400)
    assert not RetentionRule.objects.exists()
    read_only, _ = token("read")
    assert_problem(call("post", "/retention-rules/", read_only, {"name": "r"}), 403)


def test_the_unused_report_and_its_days():
    text, _ = token("read")
    report = call("get", "/unused/", text, days="30")
    assert report.status_code == 200 and report.json()["days"] == 30
    assert report.json()["tags"] == [] and report.json()["repositories"] == []
    for bad in ("-1", "x", "99999", "1e3"):
        assert_problem(call("get", "/unused/", text, days=bad), 400)


def test_access_groups_set_listed_and_removed():
    from registry_admin.models import AccessGroup

    text, owner = token("read,users")
    assert (
        call(
            "post", "/access/groups/", text, {"name": "ci", "members": ["bot1", "bot2"]}
        ).status_code
        == 204
    )
    assert call("get", "/access/groups/", text).json() == [
        {"name": "ci", "members": ["bot1", "bot2"]}
    ]
    assert call("post", "/access/groups/", text, {"name": "ci", "members": []}).status_code == 204
    assert not AccessGroup.objects.exists()
    for bad in (
        {"name": "bad name", "members": ["x"]},
        {"name": "ci", "members": ["bad user"]},
        {"name": "ci", "members": "bot1"},
        {"name": "ci", "members": ["x"] * 1001},
    ):
        assert_problem(call("post", "/access/groups/", text, bad), 400)
    assert not AccessGroup.objects.exists()


def test_event_hooks_added_listed_tested_and_removed_without_their_paths(settings):
    from registry_admin.models import EventHook, HookDelivery

    settings.EVENT_HOOKS_ALLOW_PRIVATE = True
    text, _ = token("read,admin")
    made = call(
        "post",
        "/event-hooks/",
        text,
        {
            "name": "ci",
            "url": "http://127.0.0.1:1/hooks/SECRETPATH",
            "format": "generic",
            "events": ["push"],
        },
    )
    assert made.status_code == 201 and len(made.json()["secret"]) > 20
    listed = call("get", "/event-hooks/", text)
    assert listed.json()[0]["endpoint"] == "http://127.0.0.1:1/…"
    assert (
        b"SECRETPATH" not in listed.content and made.json()["secret"].encode() not in listed.content
    )
    assert call("post", "/event-hooks/ci", text).status_code == 202
    assert HookDelivery.objects.get().kind == "test"
    assert call("delete", "/event-hooks/ci", text).status_code == 204
    assert not EventHook.objects.exists()
    assert_problem(call("delete", "/event-hooks/ci", text), 404)
    settings.EVENT_HOOKS_ALLOW_PRIVATE = False
    refused = call(
        "post",
        "/event-hooks/",
        text,
        {"name": "x", "url": "http://169.254.169.254/", "format": "slack"},
    )
    assert "EVENT_HOOKS_ALLOW_PRIVATE" in json.dumps(assert_problem(refused, 400))
    read_only, _ = token("read")
    assert_problem(call("get", "/event-hooks/", read_only), 403)


def test_the_audit_log_as_csv_with_the_pages_filters_and_formula_cells_quoted(settings):
    import csv as csv_module

    text, owner = token("read")
    AuditEvent.objects.log_portal_action(
        "=cmd|' /C calc'!A0", PortalAction.TAG_DELETED, repository="team/app", tag="v1"
    )
    AuditEvent.objects.log_portal_action(
        "bob", PortalAction.TAG_DELETED, repository="other/x", tag="v2"
    )
    answer = call("get", "/audit-events/export.csv", text, repository="team/")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("text/csv")
    assert answer["Content-Disposition"].startswith('attachment; filename="oyster-audit-')
    rows = list(csv_module.reader(b"".join(answer.streaming_content).decode().splitlines()))
    assert rows[0][0] == "event_id" and len(rows) == 2
    assert rows[1][rows[0].index("actor")] == "'=cmd|' /C calc'!A0"
    settings.AUDIT_EXPORT_MAX_ROWS = 1
    too_many = assert_problem(call("get", "/audit-events/export.csv", text), 400)
    assert "AUDIT_EXPORT_MAX_ROWS" in too_many["detail"]
    assert_problem(call("get", "/audit-events/export.csv", text, cursor="abc"), 400)
    assert_problem(call("get", "/audit-events/export.csv", text, since="2020-13-45"), 400)


def test_nul_and_control_characters_are_refused_not_a_database_error(settings, users_file):
    """schemathesis sent DELETE /quotas/?pattern=%00 and PostgreSQL refused the NUL with a 500."""
    settings.EVENT_HOOKS_ALLOW_PRIVATE = True
    text, _ = token("read,delete,users,admin")
    assert_problem(call("delete", "/quotas/", text, pattern="%00"), 404)
    assert_problem(call("delete", "/access/rules/", text, subject="%00", pattern="a%00"), 404)
    assert_problem(call("delete", "/access/robots/robot-%00", text), 404)
    assert_problem(call("delete", "/event-hooks/a%00", text), 404)
    assert_problem(call("post", "/event-hooks/a%00", text), 404)
    assert_problem(call("delete", "/users/a%00", text), 400)
    for body in (
        {"name": "h", "url": "http://127.0.0.1:1/a\x00b", "format": "slack"},
        {"name": "h\x00", "url": "http://127.0.0.1:1/", "format": "slack"},
    ):
        assert_problem(call("post", "/event-hooks/", text, body), 400)
    assert_problem(call("post", "/quotas/", text, {"pattern": "a\x00/*", "size": "1GB"}), 400)
    assert_problem(
        call("post", "/access/rules/", text, {"subject": "a\x00", "pattern": "x", "actions": []}),
        400,
    )
