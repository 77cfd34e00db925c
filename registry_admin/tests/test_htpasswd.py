"""htpasswd.py on real files in tmp_path, and against the real registry where the registry's
reading of the file is what matters."""

import os
import stat
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
from django.db import connection

from registry_admin import db, htpasswd
from registry_admin.htpasswd import CredentialsError

from .harness import REPO_ROOT, child_database_url, live_fixture, start_registry

# On PostgreSQL every change also takes the database's advisory lock.
pytestmark = pytest.mark.django_db

HOSTILE_NAMES = [
    ("al:ice", "cannot contain ':'"),
    ("alice\nbob", "control characters"),
    ("alice\r", "control characters"),
    ("al ice", "spaces"),
    (" alice", "spaces"),
    ("a" * 300, "at most 64 characters"),
    ("a" * 65, "at most 64 characters"),
    ("ålice", "may only use"),
    ("名前", "may only use"),
    ("<script>", "may only use"),
    ("../etc", "may only use"),
    ("alice'; DROP TABLE x;--", "spaces"),
    ("a\x00b", "control characters"),
    ("", "Enter a user name"),
]


@pytest.fixture
def path(settings, tmp_path):
    target = tmp_path / "auth" / "htpasswd"
    target.parent.mkdir()
    settings.HTPASSWD_PATH = str(target)
    settings.HTPASSWD_BCRYPT_ROUNDS = 4
    return target


def bcrypt_line(name, password="irrelevant-password", rounds=4):
    return f"{name}:{htpasswd.hash_password(password, rounds)}"


def test_a_missing_file_lists_nothing_and_is_created_0640_on_first_write(path):
    listing = htpasswd.read_users()
    assert not listing.exists
    assert listing.entries == ()
    htpasswd.add_user("alice", "alice-password-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert htpasswd.check_password("alice", "alice-password-1")
    assert path.read_text().endswith("\n")


def test_lists_schemes_and_flags_what_the_registry_rejects(path):
    path.write_text(
        "\n".join(
            [
                bcrypt_line("b"),
                "apr:$apr1$salt$hash",
                "sha:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
                "md5:$1$salt$hash",
                "sha512:$6$salt$hash",
                "des:abJnggxhB/yWI",
                "plain:hunter2",
            ]
        )
        + "\n"
    )
    listing = htpasswd.read_users()
    schemes = {e.username: (e.scheme, e.accepted_by_registry) for e in listing.entries}
    assert schemes == {
        "b": ("bcrypt", True),
        "apr": ("apr1", False),
        "sha": ("sha1", False),
        "md5": ("md5-crypt", False),
        "sha512": ("sha-crypt", False),
        "des": ("crypt", False),
        "plain": ("plaintext", False),
    }


def test_reads_lines_the_way_the_registry_does(path):
    """Trimmed lines, '#' comments after spaces, names with odd spaces, last line wins."""
    path.write_bytes(
        (
            "  # indented comment\n"
            "\t\n"
            f"  {bcrypt_line('padded')}  \r\n"
            f"{bcrypt_line('dup')}\n"
            f"{bcrypt_line('dup')}\n"
            "odd name:{SHA}x\n"
            "form\x0cfeed:{SHA}x\n"
        ).encode()
    )
    listing = htpasswd.read_users()
    assert [e.username for e in listing.entries] == [
        "padded",
        "dup",
        "dup",
        "odd name",
        "form\x0cfeed",
    ]
    assert listing.malformed == ()
    dups = [e for e in listing.entries if e.username == "dup"]
    assert [d.shadowed for d in dups] == [True, False]
    assert listing.get("dup").line_number == 5
    unusual = {e.username for e in listing.entries if not e.manageable}
    assert unusual == {"odd name", "form\x0cfeed"}


def test_reports_malformed_lines_with_their_numbers(path):
    path.write_text(f"{bcrypt_line('a')}\nno colon here\n# fine\n" + "x" * 70000 + "\n")
    listing = htpasswd.read_users()
    assert [(m.line_number, m.reason) for m in listing.malformed] == [
        (2, "no ':' between user name and hash"),
        (4, "the line is longer than the registry can read (64 KiB)"),
    ]


def test_round_trip_keeps_every_other_line_byte_for_byte(path):
    """Comments, blank lines, CRLF, a non-bcrypt entry, bytes that are not UTF-8, no final
    newline: an add and a delete change only their own line; the malformed line becomes a
    comment that keeps its text."""
    other = bcrypt_line("other").encode()
    original = (
        b"# managed by hand\r\n"
        b"\n"
        b"legacy:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\r\n"
        b"# caf\xe9 latin-1 comment\n"
        b"this line is malformed\n" + other + b"\n"
        b"   \n"
        b"# last line without newline"
    )
    path.write_bytes(original)
    htpasswd.add_user("newcomer", "newcomer-password")
    after_add = path.read_bytes()
    assert after_add.startswith(
        b"# managed by hand\r\n\nlegacy:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\r\n"
        b"# caf\xe9 latin-1 comment\n"
        b"# oyster: malformed line disabled: this line is malformed\n" + other + b"\n   \n"
        b"# last line without newline\r\nnewcomer:$2b$04$"
    )
    assert htpasswd.check_password("newcomer", "newcomer-password")
    htpasswd.delete_user("newcomer")
    expected = original.replace(
        b"this line is malformed", b"# oyster: malformed line disabled: this line is malformed"
    ).replace(b"# last line without newline", b"# last line without newline\r\n")
    assert path.read_bytes() == expected
    listing = htpasswd.read_users()
    assert listing.malformed == ()
    assert listing.disabled_lines == (5,)
    assert [e.username for e in listing.entries] == ["legacy", "other"]


def test_delete_only_touches_the_deleted_users_lines(path):
    original = f"# c\n{bcrypt_line('a')}\n  {bcrypt_line('gone')}\n{bcrypt_line('gone')}\n"
    path.write_text(original + "z:{SHA}x")
    htpasswd.delete_user("gone")
    lines = original.splitlines(keepends=True)
    assert path.read_text() == lines[0] + lines[1] + "z:{SHA}x"


def test_set_password_replaces_the_entry_the_registry_uses_and_drops_duplicates(path):
    path.write_text(f"{bcrypt_line('a', 'first-password-1')}\r\nkeep:{{SHA}}x\r\nsha:{{SHA}}x\r\n")
    htpasswd.set_password("sha", "a-new-password-1")
    htpasswd.set_password("a", "second-password-1")
    listing = htpasswd.read_users()
    assert {e.username: e.scheme for e in listing.entries} == {
        "a": "bcrypt",
        "keep": "sha1",
        "sha": "bcrypt",
    }
    assert htpasswd.check_password("a", "second-password-1")
    assert not htpasswd.check_password("a", "first-password-1")
    assert htpasswd.check_password("sha", "a-new-password-1")
    assert path.read_bytes().count(b"\r\n") == 3
    assert b"keep:{SHA}x\r\n" in path.read_bytes()


def test_hashes_at_the_configured_cost(path, settings):
    settings.HTPASSWD_BCRYPT_ROUNDS = 5
    htpasswd.add_user("alice", "alice-password-1")
    assert path.read_text().split(":", 1)[1].startswith("$2b$05$")
    htpasswd.set_password("alice", "alice-password-2", rounds=6)
    assert path.read_text().split(":", 1)[1].startswith("$2b$06$")


def test_add_refuses_an_existing_name_and_changes_nothing(path):
    htpasswd.add_user("alice", "alice-password-1")
    before = path.read_bytes()
    with pytest.raises(CredentialsError, match="exists already"):
        htpasswd.add_user("alice", "alice-password-2")
    assert path.read_bytes() == before


def test_changing_or_deleting_a_missing_user_is_an_error(path):
    htpasswd.add_user("alice", "alice-password-1")
    before = path.read_bytes()
    with pytest.raises(CredentialsError, match="no user 'bob'"):
        htpasswd.set_password("bob", "bob-password-123")
    with pytest.raises(CredentialsError, match="no user 'bob'"):
        htpasswd.delete_user("bob")
    assert path.read_bytes() == before


@pytest.mark.parametrize(("name", "message"), HOSTILE_NAMES)
def test_hostile_user_names_are_refused_with_a_reason(path, name, message):
    path.write_text(bcrypt_line("a") + "\n")
    before = path.read_bytes()
    for action in (
        lambda: htpasswd.add_user(name, "valid-password-1"),
        lambda: htpasswd.set_password(name, "valid-password-1", create=True),
        lambda: htpasswd.delete_user(name),
    ):
        with pytest.raises(CredentialsError, match=message):
            action()
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("a" * 73, "72 bytes"),
        ("é" * 37, "72 bytes"),  # 37 characters, 74 bytes
        ("🐳" * 19, "72 bytes"),
        ("short", "at least 12 characters"),
        ("", "Enter a password"),
        ("has\nnewline-1", "line breaks"),
        ("has\x00nul-12345", "NUL"),
        ("lone\udc80surrogate", "not valid text"),
    ],
)
def test_bad_passwords_are_refused_never_truncated(path, password, message):
    path.write_text(bcrypt_line("a") + "\n")
    before = path.read_bytes()
    with pytest.raises(CredentialsError, match=message):
        htpasswd.add_user("newuser", password)
    with pytest.raises(CredentialsError, match=message):
        htpasswd.set_password("a", password)
    assert path.read_bytes() == before


def test_a_72_byte_password_is_kept_whole(path):
    password = "x" * 70 + "é"  # exactly 72 bytes
    htpasswd.add_user("edge", password)
    assert htpasswd.check_password("edge", password)
    assert not htpasswd.check_password("edge", "x" * 70)


def test_the_minimum_length_comes_from_settings(path, settings):
    settings.HTPASSWD_MIN_PASSWORD_LENGTH = 20
    with pytest.raises(CredentialsError, match="at least 20 characters"):
        htpasswd.add_user("alice", "nineteen-characters")
    htpasswd.add_user("alice", "twenty--characters!!")


def test_keeps_the_mode_and_leaves_no_temp_file(path):
    path.write_text(bcrypt_line("a") + "\n")
    path.chmod(0o604)
    htpasswd.add_user("b", "b-password-123")
    assert stat.S_IMODE(path.stat().st_mode) == 0o604
    assert sorted(p.name for p in path.parent.iterdir()) == ["htpasswd", "htpasswd.lock"]


def test_every_write_moves_the_mtime_forward(path):
    """The registry reloads only on an mtime change; two writes in one clock tick must differ."""
    path.write_text(bcrypt_line("a") + "\n")
    future = path.stat().st_mtime_ns + 10**9  # as if the clock were behind the file
    os.utime(path, ns=(future, future))
    htpasswd.add_user("b", "b-password-123")
    assert path.stat().st_mtime_ns > future
    previous = path.stat().st_mtime_ns
    htpasswd.add_user("c", "c-password-123")
    assert path.stat().st_mtime_ns > previous


def test_a_symlinked_file_stays_a_symlink(path, tmp_path):
    real = tmp_path / "real-htpasswd"
    real.write_text(bcrypt_line("a") + "\n")
    path.symlink_to(real)
    htpasswd.add_user("b", "b-password-123")
    assert path.is_symlink()
    assert "b:$2b$" in real.read_text()


def test_a_missing_directory_is_a_clear_error(settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "nowhere" / "htpasswd")
    with pytest.raises(CredentialsError, match="does not exist; nothing was changed"):
        htpasswd.add_user("alice", "alice-password-1")
    assert not (tmp_path / "nowhere").exists()


def test_a_path_that_is_a_directory_cannot_be_read(settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path)
    with pytest.raises(CredentialsError, match="cannot be read"):
        htpasswd.read_users()
    with pytest.raises(CredentialsError, match="cannot be read"):
        htpasswd.add_user("alice", "alice-password-1")


def test_a_lock_file_that_cannot_be_opened_stops_the_change(path):
    path.write_text(bcrypt_line("a") + "\n")
    before = path.read_bytes()
    (path.parent / "htpasswd.lock").mkdir()
    with pytest.raises(CredentialsError, match="lock file .* Nothing was changed"):
        htpasswd.add_user("b", "b-password-123")
    assert path.read_bytes() == before


def test_a_held_lock_times_out_with_a_message(path, monkeypatch):
    import fcntl

    path.write_text(bcrypt_line("a") + "\n")
    before = path.read_bytes()
    monkeypatch.setattr(htpasswd, "LOCK_TIMEOUT_SECONDS", 0.3)
    holder = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(CredentialsError, match="held its lock"):
            htpasswd.add_user("b", "b-password-123")
    finally:
        os.close(holder)
    assert path.read_bytes() == before
    htpasswd.add_user("b", "b-password-123")


@pytest.mark.postgres
def test_on_postgresql_the_database_lock_guards_changes_across_machines(path, monkeypatch):
    """Another machine's portal holds the advisory lock (a second database session here; its
    file lock would be on another host, so no fcntl lock is taken): the change waits for it,
    times out with a message and changes nothing; once released, the change goes through."""
    import psycopg

    from registry_admin.tests.harness import child_database_url

    path.write_text(bcrypt_line("a") + "\n")
    before = path.read_bytes()
    monkeypatch.setattr(htpasswd, "LOCK_TIMEOUT_SECONDS", 0.3)
    with psycopg.connect(child_database_url().replace("postgres://", "postgresql://")) as other:
        other.execute(
            "SELECT pg_advisory_lock(%s, %s)", (db.ADVISORY_NAMESPACE, db.AdvisoryKey.HTPASSWD_FILE)
        )
        with pytest.raises(CredentialsError, match="another portal instance.*database lock"):
            htpasswd.add_user("b", "b-password-123")
        assert path.read_bytes() == before
        other.execute(
            "SELECT pg_advisory_unlock(%s, %s)",
            (db.ADVISORY_NAMESPACE, db.AdvisoryKey.HTPASSWD_FILE),
        )
    htpasswd.add_user("b", "b-password-123")
    assert sorted(e.username for e in htpasswd.read_users().entries) == ["a", "b"]
    # Released after the change: nothing of ours holds it now.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cursor.fetchone()[0] == 0


def test_a_line_too_long_for_the_registry_stops_writes(path):
    path.write_text(bcrypt_line("a") + "\n" + "y" * 70000 + "\n")
    before = path.read_bytes()
    with pytest.raises(CredentialsError, match="Line 2 .* too long"):
        htpasswd.add_user("b", "b-password-123")
    assert path.read_bytes() == before


def test_threads_in_one_process_do_not_lose_writes(path):
    names = [f"t{i}" for i in range(40)]

    def add(name):
        try:
            htpasswd.add_user(name, f"{name}-password-123")
        finally:
            connection.close()  # each thread's own connection (PostgreSQL's advisory lock)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.username for e in htpasswd.read_users().entries) == sorted(names)


def test_check_password_survives_damaged_hashes(path):
    path.write_text("broken:$2y$garbage\n")
    assert not htpasswd.check_password("broken", "anything-at-all")
    assert not htpasswd.check_password("nobody", "anything-at-all")


def test_generated_passwords(settings):
    settings.HTPASSWD_MIN_PASSWORD_LENGTH = 12
    person = htpasswd.generate_password()
    assert len(person) == 24 and person.isalnum()
    settings.HTPASSWD_MIN_PASSWORD_LENGTH = 30
    assert len(htpasswd.generate_password()) == 30
    assert htpasswd.generate_password() != htpasswd.generate_password()


def test_the_service_account_uses_a_long_password_at_the_service_cost(path, settings):
    settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS = 5
    path.write_text(f"svc:{{SHA}}x\n{bcrypt_line('a')}\n")
    password = htpasswd.rotate_service_account("svc")
    assert len(password) >= 32
    assert htpasswd.check_password("svc", password)
    line = next(x for x in path.read_text().splitlines() if x.startswith("svc:"))
    assert line.startswith("svc:$2b$05$")
    assert htpasswd.ensure_service_account("svc", password) is False
    assert htpasswd.ensure_service_account("svc", "another-long-service-password") is True
    assert htpasswd.check_password("svc", "another-long-service-password")


# --- with the real registry -------------------------------------------------------------------


# Each adder is a fresh interpreter (not a fork of the test process, whose threads may hold locks).
ADDER = """
import sys, time
from registry_admin import htpasswd
prefix, count, start_at = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
time.sleep(max(0.0, start_at - time.time()))  # all processes start adding at the same moment
for i in range(count):
    htpasswd.add_user(f"{prefix}-{i}", f"{prefix}-{i}-password", rounds=4)
"""


def start_adders(htpasswd_path, prefixes, count):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "HTPASSWD_PATH": str(htpasswd_path),
        # On PostgreSQL the adders also take the database's advisory lock: this test's database.
        "DATABASE_URL": child_database_url(),
    }
    start_at = str(time.time() + 3)
    return [
        subprocess.Popen(
            [sys.executable, "-c", ADDER, prefix, str(count), start_at],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for prefix in prefixes
    ]


@live_fixture
def own_registry(tmp_path, settings):
    """A registry of its own, so 400 extra users do not land in the session registry's file."""
    registry = start_registry(tmp_path / "registry", "http://127.0.0.1:9")
    settings.HTPASSWD_PATH = str(registry.htpasswd_path)
    yield registry
    registry.stop()


@pytest.mark.slow
def test_8_processes_x_50_concurrent_adds_all_land_and_the_registry_accepts_them(own_registry):
    prefix = f"bulk{uuid.uuid4().hex[:6]}"
    jobs = [(f"{prefix}p{p}", 50) for p in range(8)]
    adders = start_adders(own_registry.htpasswd_path, [p for p, _ in jobs], 50)
    for adder in adders:
        _, stderr = adder.communicate(timeout=300)
        assert adder.returncode == 0, stderr.decode()
    listing = htpasswd.read_users()
    assert listing.malformed == ()
    names = {e.username for e in listing.entries}
    expected = {f"{p}-{i}" for p, _ in jobs for i in range(50)}
    assert expected <= names
    assert len(expected) == 400
    # Every line is a valid bcrypt entry bcrypt itself can verify.
    for line in own_registry.htpasswd_path.read_text().splitlines():
        name, hashed = line.split(":", 1)
        if name.startswith(prefix):
            assert hashed.startswith("$2b$04$") and len(hashed) == 60
    for p, i in [(0, 0), (3, 17), (5, 49), (7, 25), (1, 33), (6, 8)]:
        name = f"{prefix}p{p}-{i}"
        response = requests.get(
            f"{own_registry.url}/v2/", auth=(name, f"{name}-password"), timeout=5
        )
        assert response.status_code == 200, name


def test_the_registry_accepts_a_user_added_to_a_file_with_a_malformed_line(own_registry):
    """Appending to a broken file would be useless (the registry ignores it): the malformed line
    is disabled and the new user logs in."""
    with open(own_registry.htpasswd_path, "a") as f:
        f.write("broken line without colon\n")
    bad = requests.get(f"{own_registry.url}/v2/", auth=("pusher", "x"), timeout=5)
    assert bad.status_code == 400
    assert "invalid entry at line 3" in own_registry.log_path.read_text()
    htpasswd.add_user("fresh", "fresh-password-1", rounds=4)
    ok = requests.get(f"{own_registry.url}/v2/", auth=("fresh", "fresh-password-1"), timeout=5)
    assert ok.status_code == 200
    assert htpasswd.read_users().disabled_lines == (3,)
