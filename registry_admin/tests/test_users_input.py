"""Bad, hostile and unauthorised input on the registry users pages: refused with a message, file
unchanged. Files live in tmp_path; the registry is not needed to see that nothing was written."""

from urllib.parse import urlencode

import pytest
from django.test import Client
from django.urls import reverse

from registry_admin import htpasswd
from registry_admin.models import AuditEvent

LIST = reverse("registry_admin:users")
CREATE = reverse("registry_admin:user-create")
PASSWORD = reverse("registry_admin:user-password")
DELETE = reverse("registry_admin:user-delete")
REPAIR = reverse("registry_admin:user-service-repair")


@pytest.fixture
def path(settings, tmp_path):
    target = tmp_path / "htpasswd"
    settings.HTPASSWD_PATH = str(target)
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    settings.REGISTRY_USERNAME = "svc"
    target.write_text(
        "# hand-written comment\n"
        f"svc:{htpasswd.hash_password('the-service-password', 4)}\n"
        f"alice:{htpasswd.hash_password('alice-password-1', 4)}\n"
        "legacy:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n"
    )
    return target


def typed(password, again=None):
    return {
        "mode": "typed",
        "password1": password,
        "password2": password if again is None else again,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("al:ice", "cannot contain &#x27;:&#x27;"),
        ("alice\nbob", "control characters"),
        ("al ice", "spaces"),
        (" padded", "spaces"),
        ("a" * 300, "at most 64 characters; this one has 300"),
        ("ålice", "may only use"),
        ("<script>alert(1)</script>", "may only use"),
        ("../../etc/passwd", "may only use"),
        ("x' OR '1'='1", "spaces"),
        ("tab\there", "spaces"),
        ("nul\x00byte", "Null characters are not allowed"),
        ("", "This field is required"),
        ("alice", "A user named alice exists already"),
        ("svc", "the portal&#x27;s own service account"),
    ],
)
def test_bad_user_names_are_refused_with_a_message(admin_client, path, name, message):
    before = path.read_bytes()
    response = admin_client.post(CREATE, {"username": name, **typed("valid-password-12")})
    assert response.status_code == 200
    assert message in response.content.decode()
    assert "<script>alert" not in response.content.decode()
    assert path.read_bytes() == before
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (typed("a" * 73), "longer than bcrypt&#x27;s limit of 72 bytes"),
        (typed("é" * 37), "longer than bcrypt&#x27;s limit of 72 bytes"),
        (typed("x" * 500_000), "longer than bcrypt&#x27;s limit of 72 bytes"),
        (typed("short"), "at least 12 characters"),
        (typed(""), "Enter a password"),
        (typed("valid-password-12", "valid-password-13"), "The two passwords differ"),
        (typed("line\nbreak-password"), "line breaks"),
        ({"mode": "bogus"}, "Select a valid choice"),
        ({}, "This field is required"),
    ],
)
def test_bad_passwords_are_refused_on_create_and_change(admin_client, path, data, message):
    before = path.read_bytes()
    created = admin_client.post(CREATE, {"username": "newcomer", **data})
    changed = admin_client.post(f"{PASSWORD}?name=alice", data)
    for response in (created, changed):
        assert response.status_code == 200
        assert message in response.content.decode()
    assert path.read_bytes() == before
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    ["nobody", "", "al:ice", "../alice", "a" * 300, "<b>x</b>", "alice%00", "a\x00b", "ålice"],
)
def test_unknown_or_hostile_names_in_change_and_delete_go_back_to_the_list(
    admin_client, path, name
):
    before = path.read_bytes()
    query = urlencode({"name": name})
    for url in (PASSWORD, DELETE):
        for method in (admin_client.get, admin_client.post):
            response = method(f"{url}?{query}", follow=True)
            assert response.redirect_chain == [(LIST, 302)]
            content = response.content.decode()
            assert "notice-error" in content
            assert "<b>x</b>" not in content
    assert path.read_bytes() == before


@pytest.mark.django_db
def test_posts_without_a_csrf_token_are_refused(admin_user, path):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    before = path.read_bytes()
    for url, data in [
        (CREATE, {"username": "csrf", **typed("valid-password-12")}),
        (f"{PASSWORD}?name=alice", typed("valid-password-12")),
        (f"{DELETE}?name=alice", {}),
        (REPAIR, {}),
    ]:
        assert client.post(url, data).status_code == 403
    assert path.read_bytes() == before


@pytest.mark.django_db
def test_viewers_read_the_list_without_controls_and_cannot_change_anything(viewer_client, path):
    page = viewer_client.get(LIST)
    assert page.status_code == 200
    content = page.content.decode()
    assert 'data-user="alice"' in content
    assert "the registry rejects this entry" in content
    for control in (CREATE, PASSWORD, DELETE, REPAIR, '<form method="post" action="/users'):
        assert control not in content
    before = path.read_bytes()
    for url, data in [
        (CREATE, {"username": "viewer-made", **typed("valid-password-12")}),
        (f"{PASSWORD}?name=alice", typed("valid-password-12")),
        (f"{DELETE}?name=alice", {}),
        (REPAIR, {}),
    ]:
        assert viewer_client.post(url, data).status_code == 403
    for url in (CREATE, f"{PASSWORD}?name=alice", f"{DELETE}?name=alice"):
        assert viewer_client.get(url).status_code == 403
    assert path.read_bytes() == before


@pytest.mark.django_db
def test_anonymous_requests_go_to_the_login_page(client, path):
    before = path.read_bytes()
    for url in (CREATE, f"{PASSWORD}?name=alice", f"{DELETE}?name=alice", REPAIR):
        response = client.post(url, {"username": "anon", **typed("valid-password-12")})
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    assert path.read_bytes() == before


@pytest.mark.django_db
def test_repair_is_post_only(admin_client, path):
    assert admin_client.get(REPAIR).status_code == 405


@pytest.mark.django_db
def test_the_list_reports_malformed_and_disabled_lines(admin_client, path):
    with path.open("a") as f:
        f.write("this line has no colon\n")
    content = admin_client.get(LIST).content.decode()
    assert "The registry cannot read this file" in content
    assert "Line 5: no &#x27;:&#x27; between user name and hash" in content
    htpasswd.add_user("bob", "bob-password-12")
    content = admin_client.get(LIST).content.decode()
    assert "The registry cannot read this file" not in content
    assert "Malformed line 5 was kept as comment" in content


@pytest.mark.django_db
def test_a_missing_file_is_explained(admin_client, settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    content = admin_client.get(LIST).content.decode()
    assert "There is no htpasswd file yet" in content
    admin_client.post(CREATE, {"username": "first", **typed("first-password-1")})
    assert htpasswd.check_password("first", "first-password-1")


@pytest.mark.django_db
def test_an_unreadable_file_is_a_message_on_the_page_not_a_500(admin_client, settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path)  # a directory: reading it fails as a file would
    response = admin_client.get(LIST)
    assert response.status_code == 200
    assert 'data-state="unreadable"' in response.content.decode()
    assert "cannot be read" in response.content.decode()
    created = admin_client.post(CREATE, {"username": "x-user", **typed("valid-password-12")})
    assert created.status_code == 200
    assert "cannot be read" in created.content.decode()


@pytest.mark.django_db
def test_an_unwritable_directory_is_a_message_and_nothing_is_lost(admin_client, path):
    (path.parent / "htpasswd.lock").mkdir()  # the lock cannot be taken: the write must not start
    before = path.read_bytes()
    created = admin_client.post(CREATE, {"username": "newcomer", **typed("valid-password-12")})
    assert "Cannot open the lock file" in created.content.decode()
    changed = admin_client.post(f"{PASSWORD}?name=alice", typed("valid-password-12"))
    assert "Cannot open the lock file" in changed.content.decode()
    deleted = admin_client.post(f"{DELETE}?name=alice", follow=True)
    assert "Cannot open the lock file" in deleted.content.decode()
    assert path.read_bytes() == before
    assert not AuditEvent.objects.exists()  # the audit row rolls back with the failed change


@pytest.mark.django_db
def test_a_missing_directory_is_a_message(admin_client, settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "gone" / "htpasswd")
    created = admin_client.post(CREATE, {"username": "newcomer", **typed("valid-password-12")})
    assert "does not exist; nothing was changed" in created.content.decode()


@pytest.mark.django_db
def test_last_push_and_pull_come_from_the_registry_events(admin_client, path):
    from datetime import UTC, datetime

    def event(actor, action, when, noise=False, source=AuditEvent.Source.REGISTRY):
        AuditEvent.objects.create(
            source=source,
            event_id=f"{actor}-{action}-{when}-{noise}-{source}",
            timestamp=datetime.fromisoformat(when).replace(tzinfo=UTC),
            action=action,
            kind="manifest",
            noise=noise,
            actor=actor,
        )

    event("alice", "push", "2026-03-01T10:00:00")
    event("alice", "push", "2026-03-05T11:30:00")
    event("alice", "pull", "2026-03-04T09:15:00")
    event("alice", "pull", "2026-03-09T09:15:00", noise=True)  # a blob or HEAD: not a pull
    event("alice", "push", "2026-04-01T00:00:00", source=AuditEvent.Source.PORTAL)
    event("legacy", "pull", "2026-02-02T02:02:00")
    content = admin_client.get(LIST).content.decode()
    alice = content[content.index('data-user="alice"') :].split("</tr>", 1)[0]
    assert alice.count("<time") == 2
    assert '<time datetime="2026-03-05T11:30:00+00:00">2026-03-05 11:30</time>' in alice
    assert '<time datetime="2026-03-04T09:15:00+00:00">2026-03-04 09:15</time>' in alice
    legacy = content[content.index('data-user="legacy"') :].split("</tr>", 1)[0]
    assert legacy.count("<time") == 1


@pytest.mark.django_db
def test_an_add_and_a_delete_on_the_pages_leave_every_other_line_alone(admin_client, path):
    original = (
        b"# hand-written comment\r\n"
        b"\n" + path.read_bytes().split(b"\n", 1)[1] + b"a malformed line\n# trailing comment\n"
    )
    path.write_bytes(original)
    admin_client.post(CREATE, {"username": "passing", **typed("passing-password-1")})
    assert htpasswd.check_password("passing", "passing-password-1")
    admin_client.post(f"{DELETE}?name=passing")
    assert htpasswd.read_users().get("passing") is None
    assert path.read_bytes() == original.replace(
        b"a malformed line", b"# oyster: malformed line disabled: a malformed line"
    )
