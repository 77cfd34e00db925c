"""The registry users pages against the real registry: what the page does, the registry obeys."""

import json
import uuid

import pytest
import requests
from django.urls import reverse

from registry_admin import htpasswd
from registry_admin.models import AuditEvent

from .harness import SERVICE_USER
from .images import build_image, wait_for, write_oci_layout

LIST = reverse("registry_admin:users")
CREATE = reverse("registry_admin:user-create")


def password_url(name):
    return reverse("registry_admin:user-password") + f"?name={name}"


def delete_url(name):
    return reverse("registry_admin:user-delete") + f"?name={name}"


def unique(prefix="user"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def v2_status(registry, name, password):
    return requests.get(f"{registry.url}/v2/", auth=(name, password), timeout=5).status_code


def create_typed(client, name, password):
    return client.post(
        CREATE,
        {"username": name, "mode": "typed", "password1": password, "password2": password},
    )


@pytest.mark.django_db(transaction=True)
def test_a_user_created_on_the_page_logs_in_at_once_and_pushes_with_skopeo(
    admin_client, admin_user, registry, skopeo, tmp_path
):
    name, password = unique(), "page-created-password"
    response = create_typed(admin_client, name, password)
    assert response.status_code == 302
    assert response["Location"] == LIST
    wait_for(lambda: v2_status(registry, name, password) == 200, timeout=5.0, message="login")
    assert v2_status(registry, name, "wrong-password-123") == 401

    image = build_image()
    write_oci_layout(tmp_path / "layout", image, "v1")
    pushed = skopeo.copy_to_registry(tmp_path / "layout", "v1", f"{name}/app", name, password)
    assert pushed.returncode == 0, pushed.stderr
    assert registry.pusher().head_manifest(f"{name}/app", "v1") == image.digest

    # The registry's push notification reaches the audit log; the list shows it as the last push.
    wait_for(
        lambda: AuditEvent.objects.filter(actor=name, action="push", noise=False).exists(),
        message="the push notification",
    )
    page = admin_client.get(LIST).content.decode()
    assert "Created the registry user" in page
    row = page[page.index(f'data-user="{name}"') :].split("</tr>", 1)[0]
    cells = row.split("<td")
    assert "<time" in cells[3]  # last push
    assert "<time" not in cells[4]  # no pull yet

    event = AuditEvent.objects.get(action="user.created", raw__contains=name)
    assert event.actor == admin_user.username
    assert event.source == AuditEvent.Source.PORTAL
    assert json.loads(event.raw) == {"registry_user": name, "generated": False}
    assert password not in event.raw


@pytest.mark.django_db(transaction=True)
def test_a_password_change_takes_effect_at_once_and_delete_locks_out(
    admin_client, admin_user, registry
):
    name, old, new = unique(), "the-old-password-1", "the-new-password-2"
    htpasswd.add_user(name, old, rounds=4)
    assert v2_status(registry, name, old) == 200

    form = admin_client.get(password_url(name))
    assert form.status_code == 200
    assert "Change the password of" in form.content.decode()
    response = admin_client.post(
        password_url(name), {"mode": "typed", "password1": new, "password2": new}
    )
    assert response.status_code == 302
    assert v2_status(registry, name, old) == 401
    assert v2_status(registry, name, new) == 200

    confirm = admin_client.get(delete_url(name))
    assert confirm.status_code == 200
    assert f"Delete the registry user {name}?" in confirm.content.decode()
    assert v2_status(registry, name, new) == 200  # the confirmation page changes nothing
    response = admin_client.post(delete_url(name))
    assert response.status_code == 302
    assert v2_status(registry, name, new) == 401
    assert htpasswd.read_users().get(name) is None

    actions = list(
        AuditEvent.objects.filter(raw__contains=name).order_by("id").values_list("action", "actor")
    )
    assert actions == [
        ("user.password_changed", admin_user.username),
        ("user.deleted", admin_user.username),
    ]
    assert old not in str(list(AuditEvent.objects.values_list("raw", flat=True)))
    assert new not in str(list(AuditEvent.objects.values_list("raw", flat=True)))


@pytest.mark.django_db(transaction=True)
def test_a_generated_password_is_shown_once_with_a_copy_button_and_works(admin_client, registry):
    name = unique()
    response = admin_client.post(CREATE, {"username": name, "mode": "generated"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    content = response.content.decode()
    start = content.index('id="generated-password"')
    password = content[content.index(">", start) + 1 : content.index("</code>", start)]
    assert len(password) == 24
    assert 'data-copy-target="generated-password"' in content
    assert "registry_admin/users.js" in content
    assert v2_status(registry, name, password) == 200
    assert password not in admin_client.get(LIST).content.decode()

    changed = admin_client.post(password_url(name), {"mode": "generated"})
    content = changed.content.decode()
    start = content.index('id="generated-password"')
    second = content[content.index(">", start) + 1 : content.index("</code>", start)]
    assert second != password
    assert v2_status(registry, name, password) == 401
    assert v2_status(registry, name, second) == 200
    event = AuditEvent.objects.filter(raw__contains=name).latest("id")
    assert json.loads(event.raw) == {"registry_user": name, "generated": True}


@pytest.mark.django_db(transaction=True)
def test_a_non_bcrypt_entry_is_flagged_and_can_be_reset(admin_client, registry):
    name = unique("legacy")
    with open(registry.htpasswd_path, "a") as f:
        f.write(f"{name}:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n")
    page = admin_client.get(LIST).content.decode()
    row = page[page.index(f'data-user="{name}"') :].split("</tr>", 1)[0]
    assert "apr1" in row
    assert "the registry rejects this entry" in row
    assert "Reset password" in row
    form = admin_client.get(password_url(name)).content.decode()
    assert "which the registry rejects" in form
    admin_client.post(
        password_url(name),
        {"mode": "typed", "password1": "reset-password-1", "password2": "reset-password-1"},
    )
    assert v2_status(registry, name, "reset-password-1") == 200
    row = admin_client.get(LIST).content.decode()
    row = row[row.index(f'data-user="{name}"') :].split("</tr>", 1)[0]
    assert "the registry rejects this entry" not in row
    admin_client.post(delete_url(name))


@pytest.mark.django_db(transaction=True)
def test_the_service_account_cannot_be_deleted_or_locked_out(admin_client, registry):
    before = registry.htpasswd_path.read_bytes()
    page = admin_client.get(LIST).content.decode()
    row = page[page.index(f'data-user="{SERVICE_USER}"') :].split("</tr>", 1)[0]
    assert "portal service account" in row
    assert reverse("registry_admin:user-delete") not in row
    assert reverse("registry_admin:user-password") not in row
    assert "rotate-service" in row
    hijack = {"mode": "typed", "password1": "hijacked-password", "password2": "hijacked-password"}
    refusals = {
        "you cannot delete it from the portal": [
            admin_client.get(delete_url(SERVICE_USER), follow=True),
            admin_client.post(delete_url(SERVICE_USER), follow=True),
        ],
        "you cannot change its password from the portal": [
            admin_client.get(password_url(SERVICE_USER), follow=True),
            admin_client.post(password_url(SERVICE_USER), hijack, follow=True),
            admin_client.post(password_url(SERVICE_USER), {"mode": "generated"}, follow=True),
        ],
    }
    for message, responses in refusals.items():
        for response in responses:
            assert response.redirect_chain == [(LIST, 302)]
            assert message in response.content.decode()
    assert registry.htpasswd_path.read_bytes() == before
    created = create_typed(admin_client, SERVICE_USER, "hijacked-password").content.decode()
    assert "service account" in created
    assert registry.htpasswd_path.read_bytes() == before
    assert v2_status(registry, SERVICE_USER, "hijacked-password") == 401


@pytest.mark.django_db(transaction=True)
def test_a_broken_service_account_is_reported_and_repaired_from_registry_password(
    admin_client, registry, settings
):
    from .harness import SERVICE_PASSWORD

    htpasswd.set_password(SERVICE_USER, "someone-else-set-this", rounds=4)
    try:
        page = admin_client.get(LIST).content.decode()
        assert 'data-service="mismatch"' in page
        assert "Write REGISTRY_PASSWORD into the file" in page
        response = admin_client.post(reverse("registry_admin:user-service-repair"))
        assert response.status_code == 302
        assert v2_status(registry, SERVICE_USER, SERVICE_PASSWORD) == 200
        assert 'data-service="' not in admin_client.get(LIST).content.decode()
        event = AuditEvent.objects.filter(action="user.password_changed").latest("id")
        assert json.loads(event.raw)["service_account"] is True
    finally:
        htpasswd.ensure_service_account(SERVICE_USER, SERVICE_PASSWORD)
