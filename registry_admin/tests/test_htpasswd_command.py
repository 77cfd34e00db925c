"""`manage.py htpasswd`: in-process for the behaviour, as real processes for exit codes, terminals,
permission errors and a failing disk write.

The suite runs as root, which reads and writes anything. Permission tests therefore run the child
without root's capabilities (`setpriv --bounding-set=-all`) on files and directories owned by
`nobody`; `runuser -u nobody` is not enough here because the interpreter lives under /root (0700).
"""

import io
import json
import logging
import os
import pty
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from registry_admin import htpasswd
from registry_admin.models import AuditEvent

from .harness import REPO_ROOT

PYTHON = sys.executable
MANAGE = str(REPO_ROOT / "manage.py")


@pytest.fixture
def path(settings, tmp_path):
    target = tmp_path / "htpasswd"
    settings.HTPASSWD_PATH = str(target)
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS = 4
    settings.REGISTRY_USERNAME = "svc"
    target.write_text(
        "# comment\n"
        f"svc:{htpasswd.hash_password('the-service-password', 4)}\n"
        f"alice:{htpasswd.hash_password('alice-password-1', 4)}\n"
        "legacy:{SHA}x\n"
    )
    return target


class FakeStdin(io.TextIOWrapper):
    def __init__(self, data, tty=False):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._tty = tty

    def isatty(self):
        return self._tty


def run(*args, stdin=b"", monkeypatch=None):
    """call_command with stdin; returns (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", FakeStdin(stdin))
    call_command("htpasswd", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
def test_list_shows_users_schemes_and_problems(path, monkeypatch):
    with path.open("a") as f:
        f.write("no colon\n")
    out, err = run("list", monkeypatch=monkeypatch)
    assert out.splitlines() == [
        "svc\tbcrypt\tportal service account",
        "alice\tbcrypt",
        "legacy\tsha1\tthe registry rejects this entry",
    ]
    assert "line 5: malformed (no ':' between user name and hash)" in err


@pytest.mark.django_db
def test_add_passwd_delete_with_password_stdin(path, monkeypatch, caplog, admin_user):
    caplog.set_level(logging.DEBUG)
    out, _ = run(
        "add", "bob", "--password-stdin", stdin=b"bob-password-12\n", monkeypatch=monkeypatch
    )
    assert out == "Added the user bob.\n"
    assert htpasswd.check_password("bob", "bob-password-12")
    out, _ = run(
        "passwd", "bob", "--password-stdin", stdin=b"bob-password-34\r\n", monkeypatch=monkeypatch
    )
    assert out == "Changed the password of bob.\n"
    assert htpasswd.check_password("bob", "bob-password-34")
    run("passwd", "legacy", "--password-stdin", stdin=b"legacy-reset-pw", monkeypatch=monkeypatch)
    assert htpasswd.read_users().get("legacy").scheme == "bcrypt"
    out, _ = run("delete", "bob", monkeypatch=monkeypatch)
    assert out == "Deleted the user bob.\n"
    assert htpasswd.read_users().get("bob") is None
    assert path.read_text().startswith("# comment\nsvc:")

    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == [
        "user.created",
        "user.password_changed",
        "user.password_changed",
        "user.deleted",
    ]
    assert {e.actor.split(":")[0] for e in events} == {"cli"}
    assert json.loads(events[0].raw) == {"registry_user": "bob", "via": "cli"}
    everything = caplog.text + "".join(e.raw for e in events)
    for secret in ("bob-password-12", "bob-password-34", "legacy-reset-pw"):
        assert secret not in everything


@pytest.mark.django_db
def test_generate_prints_only_the_password_on_stdout(path, monkeypatch):
    out, err = run("add", "gen", "--generate", monkeypatch=monkeypatch)
    password = out.strip()
    assert len(password) == 24 and out == password + "\n"
    assert "shown only once" in err
    assert htpasswd.check_password("gen", password)
    assert password not in AuditEvent.objects.get().raw


@pytest.mark.django_db
def test_rotate_service_prints_a_long_password_at_the_service_cost_once(
    path, monkeypatch, settings
):
    settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS = 5
    out, err = run("rotate-service", monkeypatch=monkeypatch)
    password = out.strip()
    assert len(password) >= 32
    assert htpasswd.check_password("svc", password)
    assert not htpasswd.check_password("svc", "the-service-password")
    assert next(x for x in path.read_text().splitlines() if x.startswith("svc:")).startswith(
        "svc:$2b$05$"
    )
    assert "Set REGISTRY_PASSWORD to it" in err
    assert "restart the portal" in err
    event = AuditEvent.objects.get()
    assert json.loads(event.raw)["service_account"] is True
    assert password not in event.raw


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", "alice", "--password-stdin"], b"alice-password-2\n", "exists already"),
        (["add", "al:ice", "--password-stdin"], b"valid-password-12\n", "cannot contain ':'"),
        (["add", "a" * 300, "--password-stdin"], b"valid-password-12\n", "at most 64"),
        (["add", "ålice", "--password-stdin"], b"valid-password-12\n", "may only use"),
        (["add", "new\nline", "--password-stdin"], b"valid-password-12\n", "control characters"),
        (["add", "bob", "--password-stdin"], b"a" * 73 + b"\n", "72 bytes"),
        (["add", "bob", "--password-stdin"], b"short\n", "at least 12"),
        (["add", "bob", "--password-stdin"], b"", "Enter a password"),
        (["add", "bob", "--password-stdin"], b"two-lines-here\nsecond\n", "exactly one line"),
        (["add", "bob", "--password-stdin"], b"\xff\xfe-not-utf8-pw\n", "not UTF-8"),
        (["add", "bob", "--password-stdin"], b"x" * 100_000, "far too long"),
        (["add", "bob"], b"", "not a terminal"),
        (["add", "svc", "--password-stdin"], b"valid-password-12\n", "service account"),
        (["passwd", "svc", "--password-stdin"], b"valid-password-12\n", "lock the portal out"),
        (["passwd", "nobody", "--password-stdin"], b"valid-password-12\n", "no user 'nobody'"),
        (["delete", "svc"], b"", "lock the portal out"),
        (["delete", "nobody"], b"", "no user 'nobody'"),
        (["delete", "../etc/passwd"], b"", "may only use"),
    ],
)
def test_refusals_change_nothing_and_record_nothing(path, monkeypatch, args, stdin, message):
    before = path.read_bytes()
    with pytest.raises(CommandError, match=message):
        run(*args, stdin=stdin, monkeypatch=monkeypatch)
    assert path.read_bytes() == before
    assert not AuditEvent.objects.exists()


# --- real processes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_env():
    """Environment for `manage.py` in a child process, with a migrated database of its own in a
    directory any user may write (the child may run as `nobody`)."""
    data_dir = Path(tempfile.mkdtemp(prefix="oyster-cli-"))
    data_dir.chmod(0o777)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": f"sqlite:///{data_dir / 'cli.sqlite3'}",
        "REGISTRY_USERNAME": "svc",
        "HTPASSWD_BCRYPT_ROUNDS": "4",
        "HTPASSWD_SERVICE_BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "DEBUG",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    subprocess.run(
        [PYTHON, MANAGE, "migrate", "-v0"], env=env, check=True, timeout=120, cwd=REPO_ROOT
    )
    for item in data_dir.iterdir():
        item.chmod(0o666)
    yield env
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def shared_dir():
    """A directory outside pytest's private tmp tree, so `nobody` can reach it."""
    directory = Path(tempfile.mkdtemp(prefix="oyster-htpasswd-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


NOBODY = 65534


def make_foreign(path, mode):
    """Give `path` to another user (when we are root) with `mode`, so its permissions bind us."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)


def cli(env, htpasswd_path, *args, stdin=b"", unprivileged=False, preexec_fn=None):
    command = [PYTHON, MANAGE, "htpasswd", *args]
    if unprivileged and os.geteuid() == 0:
        # Root without capabilities is bound by file permissions like any other user.
        command = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", *command]
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        env={**env, "HTPASSWD_PATH": str(htpasswd_path)},
        cwd=REPO_ROOT,
        timeout=60,
        preexec_fn=preexec_fn,
    )


def seed(directory):
    target = directory / "htpasswd"
    target.write_text(f"# keep me\nalice:{htpasswd.hash_password('alice-password-1', 4)}\n")
    target.chmod(0o644)
    return target


def test_exit_codes_and_messages(cli_env, shared_dir):
    target = seed(shared_dir)
    ok = cli(cli_env, target, "add", "bob", "--password-stdin", stdin=b"bob-password-12\n")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, b"Added the user bob.\n", b"")
    exists = cli(cli_env, target, "add", "bob", "--password-stdin", stdin=b"bob-password-12\n")
    assert exists.returncode == 1
    assert exists.stderr == b"CommandError: A user named 'bob' exists already.\n"
    no_tty = cli(cli_env, target, "passwd", "bob")
    assert no_tty.returncode == 1
    assert b"--password-stdin" in no_tty.stderr
    # There is no way to give a password as an argument: other users can read them in `ps`.
    as_argument = cli(cli_env, target, "add", "carol", "carol-password-12")
    assert as_argument.returncode == 2
    assert b"unrecognized arguments" in as_argument.stderr
    assert cli(cli_env, target).returncode == 2
    assert cli(cli_env, target, "frobnicate").returncode == 2
    listed = cli(cli_env, target, "list")
    assert listed.returncode == 0
    assert listed.stdout == b"alice\tbcrypt\nbob\tbcrypt\n"
    assert b"bob-password-12" not in ok.stdout + ok.stderr + exists.stderr


def test_a_terminal_prompts_twice_without_echo(cli_env, shared_dir):
    target = seed(shared_dir)
    output, status = run_in_pty(
        [PYTHON, MANAGE, "htpasswd", "add", "tty-user"],
        {**cli_env, "HTPASSWD_PATH": str(target)},
        answers=[
            (b"Password for tty-user: ", b"typed-on-a-tty-1\n"),
            (b"Again: ", b"typed-on-a-tty-1\n"),
        ],
    )
    assert status == 0, output
    assert b"Added the user tty-user." in output
    assert b"typed-on-a-tty-1" not in output  # getpass turned echo off
    assert "tty-user:$2b$04$" in target.read_text()

    output, status = run_in_pty(
        [PYTHON, MANAGE, "htpasswd", "passwd", "tty-user"],
        {**cli_env, "HTPASSWD_PATH": str(target)},
        answers=[
            (b"Password for tty-user: ", b"first-attempt-12\n"),
            (b"Again: ", b"second-attempt-12\n"),
        ],
    )
    assert status == 1
    assert b"The two passwords differ; nothing was changed." in output


def run_in_pty(argv, env, answers, timeout=60):
    """Run argv on a new pseudo-terminal, answering each prompt; returns (output, exit status)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty, as in a real shell
        os.chdir(REPO_ROOT)
        os.execve(argv[0], argv, env)
    output = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break  # EIO: the child closed the terminal
                if not chunk:
                    break
                output += chunk
            if pending and output.endswith(pending[0][0]):
                os.write(fd, pending.pop(0)[1])
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return output, os.waitstatus_to_exitcode(status)


def test_an_unreadable_file_is_a_clear_error(cli_env, shared_dir):
    target = seed(shared_dir)
    make_foreign(target, 0o000)
    before = target.read_bytes()
    listed = cli(cli_env, target, "list", unprivileged=True)
    assert listed.returncode == 1
    assert b"cannot be read by the portal (permission denied)" in listed.stderr
    added = cli(
        cli_env,
        target,
        "add",
        "bob",
        "--password-stdin",
        stdin=b"bob-password-12\n",
        unprivileged=True,
    )
    assert added.returncode == 1
    assert b"permission denied" in added.stderr
    assert target.read_bytes() == before


def test_an_unwritable_directory_is_a_clear_error(cli_env, shared_dir):
    target = seed(shared_dir)
    make_foreign(shared_dir, 0o755)  # the file stays readable; nothing can be created beside it
    before = target.read_bytes()
    listed = cli(cli_env, target, "list", unprivileged=True)
    assert (listed.returncode, listed.stdout) == (0, b"alice\tbcrypt\n")
    for args in (["add", "bob", "--password-stdin"], ["passwd", "alice", "--password-stdin"]):
        result = cli(cli_env, target, *args, stdin=b"bob-password-12\n", unprivileged=True)
        assert result.returncode == 1
        assert b"Cannot open the lock file" in result.stderr
        assert b"Permission denied" in result.stderr
    deleted = cli(cli_env, target, "delete", "alice", unprivileged=True)
    assert deleted.returncode == 1
    assert b"Nothing was changed" in deleted.stderr
    assert target.read_bytes() == before
    assert sorted(p.name for p in shared_dir.iterdir()) == ["htpasswd"]


def test_a_write_that_fails_half_way_loses_nothing(cli_env, shared_dir):
    """The disk refuses the new file part-way (RLIMIT_FSIZE stands in for a full disk): the old
    file stays whole and no temp file is left behind."""
    target = shared_dir / "htpasswd"
    comment = "# " + "padding " * 1000 + "\n"
    target.write_text(comment * 400 + f"alice:{htpasswd.hash_password('alice-password-1', 4)}\n")
    before = target.read_bytes()
    limit = len(before) - 1000  # the database stays far below; the new htpasswd file does not

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = cli(
        cli_env,
        target,
        "add",
        "bob",
        "--password-stdin",
        stdin=b"bob-password-12\n",
        preexec_fn=small_files,
    )
    assert result.returncode == 1, result.stderr
    assert b"File too large); nothing was changed" in result.stderr
    assert target.read_bytes() == before
    assert sorted(p.name for p in shared_dir.iterdir()) == ["htpasswd", "htpasswd.lock"]
