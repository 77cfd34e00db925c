"""Plain make_* helpers for test data."""

import json
import uuid

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


def make_registry_event(event_id=None, action="push", repository="team/app", tag="v1", **target):
    """One registry notification event shaped like distribution 2.8's (see tests/payloads/)."""
    event_id = event_id or str(uuid.uuid4())
    target = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 578,
        "digest": "sha256:" + "ab" * 32,
        "length": 578,
        "repository": repository,
        "url": f"http://127.0.0.1:5000/v2/{repository}/manifests/sha256:{'ab' * 32}",
        **({"tag": tag} if tag else {}),
        **target,
    }
    return {
        "id": event_id,
        "timestamp": "2026-11-27T17:26:53.962919344Z",
        "action": action,
        "target": target,
        "request": {
            "id": str(uuid.uuid4()),
            "addr": "127.0.0.1:53302",
            "host": "127.0.0.1:5000",
            "method": "PUT" if action == "push" else "GET",
            "useragent": "skopeo/1.9.3",
        },
        "actor": {"name": "bob"},
        "source": {"addr": "registry-host:5000", "instanceID": "a765e95d"},
    }


def make_envelope(*events):
    return json.dumps({"events": list(events)}).encode()
