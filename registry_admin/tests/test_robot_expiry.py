"""Robot accounts expire in htpasswd mode too: the worker removes an expired robot's line from
the htpasswd file, so the registry itself refuses it (checked with skopeo on the real one); without
a worker, the robot's first use after its expiry does it."""

import json
import time
import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from registry_admin import access, htpasswd, notifications, pulls
from registry_admin.models import AuditEvent, PortalAction, RobotAccount

from .images import build_image, write_oci_layout


def expire(username):
    RobotAccount.objects.filter(username=username).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.django_db
def test_only_expired_robots_lose_their_password_and_stay_listed(settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    htpasswd.add_user("person", "a-long-enough-password", rounds=4)
    old, _ = access.create_robot("admin", "old", 1)
    fresh, _ = access.create_robot("admin", "fresh", 30)
    expire(old.username)

    assert access.disable_expired_robots() == [old.username]

    users = htpasswd.read_users()
    assert users.get(old.username) is None
    assert users.get(fresh.username) is not None and users.get("person") is not None
    assert RobotAccount.objects.filter(username=old.username).exists()  # listed, as expired
    record = AuditEvent.objects.get(action=PortalAction.ROBOT_EXPIRED)
    assert (record.actor, record.source) == ("system", "portal")
    assert old.username in record.raw
    assert access.disable_expired_robots() == []  # nothing left to remove, nothing recorded
    assert AuditEvent.objects.filter(action=PortalAction.ROBOT_EXPIRED).count() == 1
    access.delete_robot("admin", old.username)  # its line is gone already: still deletable
    assert not RobotAccount.objects.filter(username=old.username).exists()


@pytest.mark.django_db
def test_the_worker_disables_expired_robots_with_its_heartbeat(settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    robot, _ = access.create_robot("admin", "nightly", 1)
    expire(robot.username)
    call_command("run_worker", "--once", stdout=StringIO())
    assert htpasswd.read_users().get(robot.username) is None


@pytest.mark.django_db
def test_an_unreadable_htpasswd_file_only_logs_and_the_next_beat_retries(
    settings, tmp_path, caplog
):
    from registry_admin.management.commands.run_worker import Command

    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    robot, _ = access.create_robot("admin", "nightly", 1)
    expire(robot.username)
    settings.HTPASSWD_PATH = str(tmp_path)  # a directory: reading it fails
    beat = Command()
    beat.started_at = timezone.now()

    beat._beat()

    assert "could not disable expired robot accounts yet" in caplog.text
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    beat._beat()
    assert htpasswd.read_users().get(robot.username) is None


def robot_that_pushed(skopeo, tmp_path):
    """A new robot that pushed an image with skopeo: (robot, password, repository)."""
    robot, password = access.create_robot("admin", f"ci-{uuid.uuid4().hex[:6]}", 1)
    repo = f"robots-{uuid.uuid4().hex[:8]}/app"
    write_oci_layout(tmp_path / "layout", build_image(), "v1")
    pushed = skopeo.copy_to_registry(tmp_path / "layout", "v1", repo, robot.username, password)
    assert pushed.returncode == 0, pushed.stderr
    # The push's own notifications are this robot's events too: stored after the test expires
    # it, they would remove its line before the use the test makes. The registry sends them in
    # order, so once the manifest's push is in, every event of the push is.
    deadline = time.monotonic() + 15
    pushes = AuditEvent.objects.filter(
        actor=robot.username, action="push", repository=repo, kind=AuditEvent.Kind.MANIFEST
    )
    while not pushes.exists():
        assert time.monotonic() < deadline, "the push never reached the audit log"
        time.sleep(0.05)
    return robot, password, repo


def assert_refused(result):
    assert result.returncode != 0
    assert "unauthorized" in result.stderr.lower() or "401" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_the_registry_refuses_a_robot_once_it_expired(registry, skopeo, tmp_path):
    robot, password, repo = robot_that_pushed(skopeo, tmp_path)

    expire(robot.username)
    assert access.disable_expired_robots() == [robot.username]

    assert_refused(skopeo.inspect(repo, "v1", robot.username, password))
    again = skopeo.copy_to_registry(tmp_path / "layout", "v1", repo, robot.username, password)
    assert again.returncode != 0


def pull_by(actor):
    """The registry's real 2.8.2 envelope of a manifest GET, by `actor`, with a fresh id."""
    from pathlib import Path

    path = Path(__file__).parent / "payloads" / "pull-manifest-by-digest.json"
    envelope = json.loads(path.read_text())
    for event in envelope["events"]:
        event["id"] = str(uuid.uuid4())
        event["actor"] = {"name": actor}
    return json.dumps(envelope).encode()


@pytest.mark.django_db
def test_without_a_worker_a_robot_used_after_its_expiry_loses_its_line(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    """The web process applies the events when no worker runs; a registry event by an expired
    robot then removes its line, and only that robot's."""
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    old, _ = access.create_robot("admin", "old", 1)
    fresh, _ = access.create_robot("admin", "fresh", 30)
    stale, _ = access.create_robot("admin", "stale", 1)
    expire(old.username)
    expire(stale.username)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        notifications.record(notifications.parse_envelope(pull_by(fresh.username)))
    # A robot within its time: nothing to do (the pull counters' own refresh aside).
    assert [c for c in callbacks if c.__module__ != pulls.__name__] == []
    assert htpasswd.read_users().get(old.username) is not None

    with django_capture_on_commit_callbacks(execute=True):
        notifications.record(notifications.parse_envelope(pull_by(old.username)))
    users = htpasswd.read_users()
    assert users.get(old.username) is None
    assert users.get(fresh.username) is not None
    # Every expired robot goes in that round (the heartbeat's own job).
    assert users.get(stale.username) is None
    assert AuditEvent.objects.filter(action=PortalAction.ROBOT_EXPIRED).count() == 2


@pytest.mark.django_db(transaction=True)
def test_without_a_worker_the_registry_refuses_an_expired_robot_after_its_first_use(
    registry, skopeo, tmp_path
):
    robot, password, repo = robot_that_pushed(skopeo, tmp_path)
    expire(robot.username)

    # The registry only reads its file: this use gets through, and it tells the portal.
    first = skopeo.inspect(repo, "v1", robot.username, password)
    assert first.returncode == 0, first.stderr
    deadline = time.monotonic() + 15
    while htpasswd.read_users().get(robot.username) is not None:
        assert time.monotonic() < deadline, "the expired robot's line is still there"
        time.sleep(0.1)

    assert_refused(skopeo.inspect(repo, "v1", robot.username, password))
