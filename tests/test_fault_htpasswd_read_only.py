"""Fault: the htpasswd file's directory turns read-only while a change is under way.

The change (from the users page, and from `manage.py htpasswd`) has started: its password is
hashed and it has opened the lock file, but another holder still has the lock. Then the
directory becomes read-only and the lock is let go. The change must stop with a clear message,
leave the file byte for byte as it was (no temp file beside it), record nothing in the audit log,
and release the lock: the next change goes through once the directory is writable again.

The suite runs as root, which ignores permission bits, so the directory is made read-only with a
read-only bind mount (EROFS binds root too); without root, permission bits do the same job.
Existing tests cover a directory that is unwritable from the start (registry_admin/tests/
test_htpasswd_command.py, test_users_input.py): there the lock file cannot even be created.
"""

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.urls import reverse

from registry_admin import htpasswd
from registry_admin.models import AuditEvent
from registry_admin.tests.harness import REPO_ROOT

CREATE = reverse("registry_admin:user-create")
PASSWORD = "valid-password-12"
MESSAGE = "Cannot create a file in {directory} ({reason}): the portal needs write access"


@pytest.fixture
def htpasswd_file(db, tmp_path, settings):
    directory = tmp_path / "auth"
    directory.mkdir()
    path = directory / "htpasswd"
    settings.HTPASSWD_PATH = str(path)
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    path.write_text(f"# kept\nalice:{htpasswd.hash_password('alice-password-1', 4)}\n")
    htpasswd.add_user("bob", "bob-password-123", rounds=4)  # leaves the lock file, as in life
    assert sorted(p.name for p in directory.iterdir()) == ["htpasswd", "htpasswd.lock"]
    return path


class ReadOnlySwitch:
    """Holds the htpasswd lock; `flip()` makes the directory read-only, then lets the lock go."""

    def __init__(self, path):
        self.directory = path.parent
        self.lock_path = Path(f"{path}.lock")
        self.fd = os.open(self.lock_path, os.O_RDWR)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.mounted = False
        self.mode = None

    def lock_file_opened_by(self, pid, count):
        """True once `pid` has `count` descriptors on the lock file (ours included)."""
        fd_dir = Path(f"/proc/{pid}/fd")
        opened = 0
        for link in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                opened += os.readlink(link) == str(self.lock_path)
        return opened >= count

    def flip(self):
        if os.geteuid() == 0:
            subprocess.run(["mount", "--bind", self.directory, self.directory], check=True)
            self.mounted = True
            subprocess.run(
                ["mount", "-o", "remount,ro,bind", self.directory, self.directory], check=True
            )
        else:
            self.mode = self.directory.stat().st_mode
            self.directory.chmod(0o555)
        with contextlib.suppress(OSError):
            (self.directory / "probe").touch()
            pytest.fail("the directory is still writable")
        self.release()  # the waiting change goes on

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def make_writable(self):
        if self.mounted:
            subprocess.run(["umount", self.directory], check=True)
            self.mounted = False
        if self.mode is not None:
            self.directory.chmod(self.mode)
            self.mode = None

    def reason(self):
        return "Read-only file system" if os.geteuid() == 0 else "Permission denied"


@pytest.fixture
def switch(htpasswd_file):
    switch = ReadOnlySwitch(htpasswd_file)
    yield switch
    switch.release()
    switch.make_writable()


def wait_until(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def assert_lock_free(lock_path):
    fd = os.open(lock_path, os.O_RDONLY)  # a read-only mount refuses O_RDWR, not flock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
    finally:
        os.close(fd)


@pytest.mark.django_db
def test_the_users_page_says_why_and_keeps_the_file(admin_client, htpasswd_file, switch):
    before = htpasswd_file.read_bytes()
    own_pid = os.getpid()

    def flip_once_the_change_waits_for_the_lock():
        wait_until(lambda: switch.lock_file_opened_by(own_pid, 2))
        switch.flip()

    flipper = threading.Thread(target=flip_once_the_change_waits_for_the_lock)
    flipper.start()
    response = admin_client.post(
        CREATE, {"username": "carol", "mode": "typed", "password1": PASSWORD, "password2": PASSWORD}
    )
    flipper.join(30)
    assert not flipper.is_alive()

    assert response.status_code == 200
    page = response.content.decode()
    message = MESSAGE.format(directory=htpasswd_file.parent, reason=switch.reason())
    assert message in page
    assert "Nothing was changed." in page
    assert htpasswd_file.read_bytes() == before
    assert sorted(p.name for p in htpasswd_file.parent.iterdir()) == ["htpasswd", "htpasswd.lock"]
    assert not AuditEvent.objects.exists()  # the row rolled back with the failed change
    assert_lock_free(switch.lock_path)

    switch.make_writable()
    again = admin_client.post(
        CREATE, {"username": "carol", "mode": "typed", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert again.status_code == 302
    assert htpasswd.read_users().get("carol") is not None
    assert AuditEvent.objects.filter(action="user.created").count() == 1


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cli")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'cli.sqlite3'}",
        "HTPASSWD_BCRYPT_ROUNDS": "4",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    manage = [sys.executable, str(REPO_ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120, cwd=REPO_ROOT)
    return env


def test_the_command_fails_with_a_message_and_keeps_the_file(
    cli_env, htpasswd_file, switch, tmp_path
):
    before = htpasswd_file.read_bytes()
    command = [sys.executable, str(REPO_ROOT / "manage.py"), "htpasswd", "passwd", "alice"]
    password_file = tmp_path / "password"
    password_file.write_text(f"{PASSWORD}\n")
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with password_file.open("rb") as stdin, out_path.open("wb") as out, err_path.open("wb") as err:
        child = subprocess.Popen(
            [*command, "--password-stdin"],
            env={**cli_env, "HTPASSWD_PATH": str(htpasswd_file)},
            cwd=REPO_ROOT,
            stdin=stdin,
            stdout=out,
            stderr=err,
        )
        try:
            wait_until(lambda: switch.lock_file_opened_by(child.pid, 1))
            switch.flip()
            child.wait(60)
        finally:
            if child.poll() is None:
                child.kill()
    stdout, stderr = out_path.read_bytes(), err_path.read_bytes()
    assert child.returncode == 1, stderr
    message = MESSAGE.format(directory=htpasswd_file.parent, reason=switch.reason())
    assert message.encode() in stderr
    assert b"Nothing was changed." in stderr
    assert stdout == b""
    assert htpasswd_file.read_bytes() == before
    assert sorted(p.name for p in htpasswd_file.parent.iterdir()) == ["htpasswd", "htpasswd.lock"]
    assert_lock_free(switch.lock_path)

    switch.make_writable()
    again = subprocess.run(
        [*command, "--password-stdin"],
        input=f"{PASSWORD}\n".encode(),
        env={**cli_env, "HTPASSWD_PATH": str(htpasswd_file)},
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert htpasswd.check_password("alice", PASSWORD)
