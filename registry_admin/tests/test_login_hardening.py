"""Login as an attacker would use it (issue #14 items 1, 2, 8): lock-outs imposed through a proxy,
failed logins as a CPU weapon, and the small holes around login and logout."""

import pytest
from django.contrib.auth.hashers import MD5PasswordHasher
from django.test import Client, RequestFactory
from django.urls import reverse

from registry_admin import accounts

from .factories import TEST_PASSWORD, make_admin, make_user

PROXY = "10.0.0.1"


class CountingHasher(MD5PasswordHasher):
    """The test hasher, counting every hash: a refused login must cost none."""

    calls = 0

    def encode(self, password, salt, *args, **kwargs):
        CountingHasher.calls += 1
        return super().encode(password, salt, *args, **kwargs)


def forwarded(client_address):
    """A request as App Service's front end passes it on: it appends the client to the header."""
    return {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": f"{client_address}:51234"}


@pytest.mark.parametrize(
    ("count", "meta", "expected"),
    [
        # No proxy: a forged header is never read.
        (0, {"REMOTE_ADDR": "198.51.100.9", "HTTP_X_FORWARDED_FOR": "203.0.113.1"}, "198.51.100.9"),
        # One proxy: the entry it appended wins over anything the client wrote further left.
        (1, {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.7"}, "203.0.113.7"),
        (1, {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "203.0.113.7:4431"}, "203.0.113.7"),
        (
            2,
            {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.7, 10.0.0.9"},
            "203.0.113.7",
        ),
        # Reached without passing the proxies: the socket address, not a forged header.
        (1, {"REMOTE_ADDR": "198.51.100.9"}, "198.51.100.9"),
        (1, {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "not-an-address"}, PROXY),
        (1, {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": "x" * 10000}, PROXY),
    ],
)
def test_the_client_address_behind_proxy_count_proxies(settings, count, meta, expected):
    settings.PROXY_COUNT = count
    request = RequestFactory().get("/", **meta)
    assert accounts.client_ip(request) == expected


@pytest.mark.django_db
def test_failures_for_the_admin_through_the_proxy_do_not_lock_the_admin_out(settings):
    """Item 1: 5 failed logins for `admin` from one forwarded address used to lock out everyone."""
    settings.PROXY_COUNT = 1
    admin = make_admin("admin")
    attacker = Client(**forwarded("203.0.113.66"))
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        attacker.post(reverse("login"), {"username": "admin", "password": "guess"})
    locked = attacker.post(reverse("login"), {"username": "admin", "password": TEST_PASSWORD})
    assert locked.status_code == 429

    owner = Client(**forwarded("198.51.100.20"))
    response = owner.post(reverse("login"), {"username": "admin", "password": TEST_PASSWORD})
    assert response.status_code == 302
    assert owner.session["_auth_user_id"] == str(admin.pk)


@pytest.mark.django_db
def test_many_user_names_from_one_address_stop_costing_hashes(settings):
    """Item 2: 50 failed logins with 50 user names from one address cost at most the limit."""
    settings.PROXY_COUNT = 1
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 10
    CountingHasher.calls = 0
    attacker = Client(**forwarded("203.0.113.50"))
    statuses = [
        attacker.post(reverse("login"), {"username": f"user{i}", "password": "x"}).status_code
        for i in range(50)
    ]
    assert statuses[:10] == [200] * 10
    assert statuses[10:] == [429] * 40
    assert CountingHasher.calls == 10
    refused = attacker.post(reverse("login"), {"username": "user99", "password": "x"})
    assert b"Too many failed logins came from your address" in refused.content

    # Someone else, elsewhere, still logs in.
    make_admin("carol")
    other = Client(**forwarded("198.51.100.21"))
    ok = other.post(reverse("login"), {"username": "carol", "password": TEST_PASSWORD})
    assert ok.status_code == 302


@pytest.mark.django_db
def test_a_login_waits_for_a_free_hashing_slot_then_is_answered_busy(settings, monkeypatch):
    make_admin("admin")
    settings.LOGIN_QUEUE_SECONDS = 0.05
    slots, held = accounts.hash_slots(), []
    while slots.acquire(blocking=False):
        held.append(True)
    try:
        response = Client().post(reverse("login"), {"username": "admin", "password": TEST_PASSWORD})
    finally:
        for _ in held:
            slots.release()
    assert response.status_code == 429
    assert b"checking many logins at once" in response.content
    again = Client().post(reverse("login"), {"username": "admin", "password": TEST_PASSWORD})
    assert again.status_code == 302


def test_login_concurrency_is_read_when_a_slot_is_taken_not_at_import(settings):
    """Issue #26: the semaphore was sized at import, so override_settings had no effect."""
    settings.LOGIN_QUEUE_SECONDS = 0
    settings.LOGIN_CONCURRENCY = 2
    with accounts.hashing_slot() as first, accounts.hashing_slot() as second:
        assert first and second
        with accounts.hashing_slot() as third:
            assert not third
    settings.LOGIN_CONCURRENCY = 1
    with accounts.hashing_slot() as first, accounts.hashing_slot() as second:
        assert first and not second


@pytest.mark.django_db
def test_a_logged_in_user_opening_login_next_login_lands_on_the_dashboard(client):
    client.force_login(make_admin())
    for next_url in ("/login/", "/login/?next=/login/", "/login/?x=1"):
        response = client.get(reverse("login"), {"next": next_url})
        assert response.status_code == 302
        assert response["Location"] == reverse("registry_admin:dashboard")


@pytest.mark.django_db
def test_an_account_without_a_role_can_log_out():
    client = Client()
    client.force_login(make_user("norole"))
    assert client.get(reverse("registry_admin:dashboard")).status_code == 403
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(("value", "trusted"), [(None, False), ("0", False), ("1", True)])
def test_x_forwarded_proto_is_trusted_only_when_turned_on(tmp_path, value, trusted):
    """A client reaching gunicorn directly must not be able to claim HTTPS by default."""
    from .test_settings_and_checks import run_python

    code = (
        "import os\n"
        f"if {value is None!r}: os.environ.pop('TRUST_X_FORWARDED_PROTO', None)\n"
        "from django.conf import settings; print(settings.SECURE_PROXY_SSL_HEADER)"
    )
    env = {"DEBUG": "0", "DATA_DIR": str(tmp_path), "SECRET_KEY": "k" * 50}
    result = run_python(code, **env, TRUST_X_FORWARDED_PROTO=value or "")
    assert result.returncode == 0, result.stderr
    expected = "('HTTP_X_FORWARDED_PROTO', 'https')" if trusted else "None"
    assert result.stdout.strip() == expected


def test_a_proxy_that_ends_tls_without_trusting_its_header_is_warned_about(settings):
    from registry_admin.checks import check_proxy_settings

    settings.PROXY_COUNT, settings.SECURE_SSL_REDIRECT = 1, True
    settings.SECURE_PROXY_SSL_HEADER = None
    assert [p.id for p in check_proxy_settings(None)] == ["oyster.W040"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert check_proxy_settings(None) == []
    settings.PROXY_COUNT = -1
    assert [p.id for p in check_proxy_settings(None)] == ["oyster.E040"]
