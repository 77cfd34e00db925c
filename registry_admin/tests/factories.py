"""Plain make_* helpers for test data."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from registry_admin.roles import ADMIN_GROUP, VIEWER_GROUP

TEST_PASSWORD = "correct-horse-battery-staple"


def make_user(username, password=TEST_PASSWORD, groups=()):
    user = get_user_model().objects.create_user(username=username, password=password)
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


def make_admin(username="alice"):
    return make_user(username, groups=[ADMIN_GROUP])


def make_viewer(username="victor"):
    return make_user(username, groups=[VIEWER_GROUP])
