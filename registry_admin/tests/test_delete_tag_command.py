"""`manage.py delete_tag REPO:TAG | REPO@DIGEST` on the real registry, run as a real process."""

import subprocess
import sys
import uuid

import pytest

from registry_admin.models import AuditEvent, PortalAction

from . import harness
from .images import build_image


def manage(reg, *args, settings=None):
    """Run manage.py in a child process pointed at `reg`, with the test database's settings."""
    from django.conf import settings as django_settings

    env = {
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "PATH": "/usr/bin:/bin",
        "DATA_DIR": str(django_settings.DATA_DIR),
        "DATABASE_URL": harness.child_database_url(),
        "REGISTRY_URL": reg.url if reg else f"http://127.0.0.1:{harness.free_port()}",
        "REGISTRY_USERNAME": harness.SERVICE_USER,
        "REGISTRY_PASSWORD": harness.SERVICE_PASSWORD,
        "REGISTRY_TIMEOUT": "2",
    }
    return subprocess.run(
        [sys.executable, "manage.py", "delete_tag", *args],
        cwd=harness.REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def unique_repo():
    return f"cli/{uuid.uuid4().hex[:10]}"


@pytest.mark.django_db(transaction=True)
def test_deleting_one_tag_keeps_the_others(registry):
    repo = unique_repo()
    image = build_image()
    for tag in ("a", "b", "c"):
        registry.pusher().push_image(repo, tag, image)

    result = manage(registry, f"{repo}:b")

    assert result.returncode == 0, result.stderr
    assert f"Deleted {repo}:b (it pointed at {image.digest})" in result.stdout
    assert "garbage_collect" in result.stdout
    assert "the image stays for a, c: no space is freed" in result.stdout
    assert registry.pusher().tags(repo) == ["a", "c"]
    row = AuditEvent.objects.get(action=PortalAction.TAG_DELETED, repository=repo)
    assert row.tag == "b" and row.actor.startswith("cli:")


@pytest.mark.django_db(transaction=True)
def test_deleting_a_digest_lists_and_removes_all_its_tags(registry):
    repo = unique_repo()
    image = build_image()
    for tag in ("a", "b", "c"):
        registry.pusher().push_image(repo, tag, image)

    result = manage(registry, f"{repo}@{image.digest}")

    assert result.returncode == 0, result.stderr
    assert f"Deleting {repo}@{image.digest} and its tags: a, b, c" in result.stdout
    assert registry.pusher().tags(repo) == []


@pytest.mark.django_db(transaction=True)
def test_failures_exit_non_zero_with_a_message(registry):
    repo = unique_repo()
    image = build_image()
    registry.pusher().push_image(repo, "a", image)

    missing = manage(registry, f"{repo}:nope")
    moved = manage(registry, f"{repo}:a", "--expect-digest", "sha256:" + "0" * 64)

    assert missing.returncode == 1
    assert "The registry has no manifest" in missing.stderr
    assert moved.returncode == 1
    assert "Nothing was deleted" in moved.stderr
    assert registry.pusher().tags(repo) == ["a"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "reference",
    ["team/app", "../etc:passwd", "team/app:<script>", "team/app:" + "x" * 200, "TEAM/app:a", ""],
)
def test_bad_references_are_usage_errors(reference):
    result = manage(None, reference)
    assert result.returncode == 2
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_registry_is_a_message():
    result = manage(None, "team/app:a")
    assert result.returncode == 1
    assert "unreachable" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_deletes_disabled_exit_non_zero_and_change_nothing(live_server, tmp_path):
    reg = harness.start_registry(tmp_path, live_server.url, delete_enabled=False)
    try:
        image = build_image()
        reg.pusher().push_image("team/app", "a", image)
        reg.pusher().push_image("team/app", "b", image)

        result = manage(reg, "team/app:b")

        assert result.returncode == 1
        assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in result.stderr
        assert reg.pusher().tags("team/app") == ["a", "b"]
        assert reg.pusher().head_manifest("team/app", "b") == image.digest
        harness.wait_for_quiet_notifications()
    finally:
        reg.stop()
