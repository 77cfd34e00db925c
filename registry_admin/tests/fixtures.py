"""Shared test fixtures: portal accounts (an admin, a viewer and an account without a role) and
the webhook's batched mode."""

import pytest

from .factories import make_admin, make_user, make_viewer


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """The per-process caches of enabled event hooks and quotas (2 s each) start empty in every
    test: one filled by an earlier test describes that test's database, not this one's."""
    from registry_admin import event_hooks, quotas

    event_hooks.forget_cached()
    quotas.forget_cached()
    yield


@pytest.fixture
def admin_user(db):
    return make_admin()


@pytest.fixture
def viewer_user(db):
    return make_viewer()


@pytest.fixture
def roleless_user(db):
    return make_user("nobody")


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def viewer_client(client, viewer_user):
    client.force_login(viewer_user)
    return client


@pytest.fixture
def batched(settings, monkeypatch):
    """Batched mode (the registry's default path, NOTIFICATIONS_APPLY_DELAY > 0) with the
    applier thread asleep: as if the web process died right after answering; what applies the
    events is then `catch_up` (the worker's loop, another process). The list counts wake-ups."""
    from registry_admin import ingest

    settings.NOTIFICATIONS_APPLY_DELAY = 0.25
    woken = []
    monkeypatch.setattr(ingest, "wake", lambda: woken.append(1))
    return woken
