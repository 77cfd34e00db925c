"""Portal accounts for tests: an admin, a viewer and an account without a role."""

import pytest

from .factories import make_admin, make_user, make_viewer


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
