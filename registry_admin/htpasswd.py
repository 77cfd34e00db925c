"""The htpasswd file shared with the registry: the only code that reads or writes it.

Why bcrypt directly and not passlib's HtpasswdFile: passlib refuses a file with one malformed
line and rewrites comments, while we must list such files and keep every line we do not manage
byte for byte. Hashing itself is the bcrypt library's; nothing here implements a hash.

Lines are read the way the registry reads them (distribution 2.8,
registry/auth/htpasswd/htpasswd.go): split on "\\n", trimmed, blank and "#" lines skipped, the
name is everything before the first ":" and the last line of a name wins. Reading differently
would let a delete leave behind a line the registry still honours.

Every change is a read-modify-write under an exclusive `fcntl` lock on a lock file beside the
htpasswd file, written to a temp file in the same directory, fsynced, then `os.replace`d over the
original (keeping its mode and, where allowed, its owner and group). On PostgreSQL the change
also holds a database advisory lock first: portal instances on several machines share the file
over a network share (Azure Files, SMB), where an `fcntl` lock is not something to rely on, but
they always share the database. SQLite deployments are one machine, where the file lock holds. The registry reloads the
file only when its mtime changes and must never see a partial file: one malformed line makes it
answer 400 and ignore every later change, so a malformed line is written back as a comment.
"""

import contextlib
import fcntl
import logging
import os
import re
import secrets
import string
import tempfile
import time
from dataclasses import dataclass

import bcrypt
from django.conf import settings
from django.db import DatabaseError, connection

from . import db

logger = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
USERNAME_MAX_LENGTH = 64
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_MAX_BYTES = 72
NEW_FILE_MODE = 0o640
# Go's bufio.Scanner (the registry's reader) fails on a line of 64 KiB or more.
REGISTRY_MAX_LINE_BYTES = 64 * 1024 - 1
# A malformed line is kept, disabled, behind this prefix so nothing typed by hand is lost.
DISABLED_PREFIX = "# oyster: malformed line disabled: "
LOCK_TIMEOUT_SECONDS = 10
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PERSON_PASSWORD_LENGTH = 24
SERVICE_PASSWORD_LENGTH = 43  # 43 characters from 62 symbols: about 256 bits


class CredentialsError(Exception):
    """Reading or changing the htpasswd file failed; str(error) is a sentence for the page."""


@dataclass(frozen=True)
class Entry:
    """One user line as the registry reads it.

    `scheme` is bcrypt, apr1, sha1, md5-crypt, sha-crypt, crypt or plaintext. `manageable` is
    false for names the portal would refuse to create (edit those by hand); `shadowed` is true
    when a later line for the same name overrides this one.
    """

    username: str
    scheme: str
    line_number: int
    manageable: bool = True
    shadowed: bool = False

    @property
    def accepted_by_registry(self):
        return self.scheme == "bcrypt"


@dataclass(frozen=True)
class MalformedLine:
    line_number: int
    reason: str


@dataclass(frozen=True)
class Listing:
    """The file's users, the lines that break it, and malformed lines disabled earlier."""

    path: str
    exists: bool
    entries: tuple = ()
    malformed: tuple = ()
    disabled_lines: tuple = ()

    def get(self, username):
        """The entry the registry uses for `username` (the last one), or None."""
        found = [e for e in self.entries if e.username == username]
        return found[-1] if found else None


def hash_scheme(hashed):
    if hashed.startswith(BCRYPT_PREFIXES):
        return "bcrypt"
    if hashed.startswith("$apr1$"):
        return "apr1"
    if hashed.startswith("{SHA}"):
        return "sha1"
    if hashed.startswith("$1$"):
        return "md5-crypt"
    if hashed.startswith(("$5$", "$6$")):
        return "sha-crypt"
    if re.fullmatch(r"[./0-9A-Za-z]{13}", hashed):
        return "crypt"
    return "plaintext"


def _split_lines(text):
    """Lines with their endings, split on "\\n" only, as the registry does.

    str.splitlines() would also split on \\r, \\v, \\f and Unicode separators, which the
    registry treats as ordinary characters inside a line.
    """
    lines = text.split("\n")
    with_endings = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        with_endings.append(lines[-1])
    return with_endings


def _parse_line(raw):
    """(username, hash) for a user line; None for a comment or blank line; ValueError if malformed.

    Mirrors the registry's parser: it is the registry's view of the file that matters.
    """
    if len(raw.encode("utf-8", "surrogateescape")) > REGISTRY_MAX_LINE_BYTES:
        raise ValueError("the line is longer than the registry can read (64 KiB)")
    text = raw.rstrip("\n").removesuffix("\r").strip()
    if not text or text.startswith("#"):
        return None
    if ":" not in text:
        raise ValueError("no ':' between user name and hash")
    username, hashed = text.split(":", 1)
    return username, hashed


def _is_valid_username(username):
    return bool(USERNAME_RE.fullmatch(username))


def _display(text):
    """`text` with undecodable bytes (read with surrogateescape) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def htpasswd_path():
    """The file to change: HTPASSWD_PATH with symlinks resolved, so a link survives a write."""
    return os.path.realpath(os.path.abspath(settings.HTPASSWD_PATH))


def _read_text(path):
    """The file's text, or None when it does not exist. Bytes that are not UTF-8 survive."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise CredentialsError(
            f"The htpasswd file {path} cannot be read by the portal (permission denied). "
            "Give the portal's user read and write access to it and to its directory."
        ) from exc
    except OSError as exc:
        raise CredentialsError(
            f"The htpasswd file {path} cannot be read ({exc.strerror})."
        ) from exc
    return data.decode("utf-8", "surrogateescape")


def _listing_from_text(path, text):
    if text is None:
        return Listing(path=path, exists=False)
    entries, malformed, disabled = [], [], []
    last_line_of = {}
    parsed_lines = []
    for number, raw in enumerate(_split_lines(text), start=1):
        if raw.startswith(DISABLED_PREFIX):
            disabled.append(number)
            continue
        try:
            parsed = _parse_line(raw)
        except ValueError as exc:
            malformed.append(MalformedLine(line_number=number, reason=str(exc)))
            continue
        if parsed:
            parsed_lines.append((number, *parsed))
            last_line_of[parsed[0]] = number
    for number, username, hashed in parsed_lines:
        entries.append(
            Entry(
                username=_display(username),
                scheme=hash_scheme(hashed),
                line_number=number,
                manageable=_is_valid_username(username),
                shadowed=last_line_of[username] != number,
            )
        )
    return Listing(
        path=path,
        exists=True,
        entries=tuple(entries),
        malformed=tuple(malformed),
        disabled_lines=tuple(disabled),
    )


def read_users():
    """The file's user entries and problem lines. Missing file: an empty listing.

    Raises CredentialsError when the file cannot be read.
    """
    path = htpasswd_path()
    return _listing_from_text(path, _read_text(path))


def validate_username(username):
    """Raise CredentialsError with a sentence naming what is wrong with `username`."""
    if not isinstance(username, str) or username == "":
        raise CredentialsError("Enter a user name.")
    if ":" in username:
        raise CredentialsError(
            "A user name cannot contain ':' (the file uses it to separate the name from the hash)."
        )
    if any(c.isspace() or not c.isprintable() for c in username):
        raise CredentialsError(
            "A user name cannot contain spaces, line breaks or other control characters."
        )
    if len(username) > USERNAME_MAX_LENGTH:
        raise CredentialsError(
            f"A user name is at most {USERNAME_MAX_LENGTH} characters; this one has "
            f"{len(username)}."
        )
    if not _is_valid_username(username):
        raise CredentialsError(
            "A user name may only use the letters A-Z and a-z, the digits 0-9, '.', '_' and '-'."
        )


def validate_password(password, min_length=None):
    """Raise CredentialsError unless bcrypt can hash `password` exactly, as the registry checks it.

    bcrypt ignores everything after 72 bytes; such a password is refused rather than cut.
    """
    min_length = settings.HTPASSWD_MIN_PASSWORD_LENGTH if min_length is None else min_length
    if not isinstance(password, str) or password == "":
        raise CredentialsError("Enter a password.")
    if len(password) < min_length:
        raise CredentialsError(f"The password must be at least {min_length} characters long.")
    if len(password.encode("utf-8", "surrogatepass")) > BCRYPT_MAX_BYTES:
        raise CredentialsError(
            f"The password is longer than bcrypt's limit of {BCRYPT_MAX_BYTES} bytes (UTF-8; "
            "letters outside ASCII take 2 to 4 bytes). bcrypt would ignore the rest, so choose "
            "a shorter one."
        )
    if any(c in password for c in "\r\n\x00"):
        raise CredentialsError("The password cannot contain line breaks or NUL characters.")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CredentialsError("The password contains characters that are not valid text.") from exc


def hash_password(password, rounds):
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def check_password(username, password, dummy_rounds=None):
    """True when the registry would accept `username` with `password` in the current file.

    With `dummy_rounds`, a name without a bcrypt line costs a bcrypt check at that cost too, so
    the answer's time does not tell an unknown name from a wrong password.
    """
    text = _read_text(htpasswd_path()) or ""
    found = None
    for raw in _split_lines(text):
        try:
            parsed = _parse_line(raw)
        except ValueError:
            continue
        if parsed and parsed[0] == username:
            found = parsed[1]  # the last line wins, as in the registry
    if not found or hash_scheme(found) != "bcrypt":
        if dummy_rounds:
            bcrypt.checkpw(password.encode("utf-8", "replace"), _dummy_hash(dummy_rounds))
        return False
    try:
        return bcrypt.checkpw(password.encode("utf-8"), found.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False  # a damaged hash or a password bcrypt refuses: not accepted either way


_dummy_hashes = {}


def _dummy_hash(rounds):
    """A bcrypt hash of a random password at `rounds`, made once per process and cost."""
    hashed = _dummy_hashes.get(rounds)
    if hashed is None:
        secret = secrets.token_urlsafe(16).encode("ascii")
        hashed = _dummy_hashes.setdefault(rounds, bcrypt.hashpw(secret, bcrypt.gensalt(rounds)))
    return hashed


@contextlib.contextmanager
def _database_locked(path, deadline):
    """A session-level PostgreSQL advisory lock held across machines; nothing on SQLite. One
    database serves one portal deployment, which manages one htpasswd file, so the key need
    not name the path (whose mount point may differ between machines anyway)."""
    try:
        while not db.try_session_lock(db.AdvisoryKey.HTPASSWD_FILE):
            if time.monotonic() > deadline:
                raise CredentialsError(
                    f"Another change to {path} (from this or another portal instance) has held "
                    f"the database lock for over {LOCK_TIMEOUT_SECONDS} seconds; nothing was "
                    "changed. Try again."
                )
            time.sleep(0.01)
    except DatabaseError as exc:
        raise CredentialsError(
            "Cannot take the database lock that guards the htpasswd file across portal "
            f"instances ({exc.__class__.__name__}); nothing was changed."
        ) from exc
    try:
        yield
    finally:
        try:
            db.release_session_lock(db.AdvisoryKey.HTPASSWD_FILE)
        except DatabaseError:
            # A broken connection has already dropped its session locks with it.
            logger.warning("could not release the htpasswd database lock; closing the connection")
            connection.close()


@contextlib.contextmanager
def _locked(path):
    """Exclusive locks for a read-modify-write: the database's advisory lock on PostgreSQL
    (across machines), then `fcntl` on `<path>.lock` (across processes of one machine)."""
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    with _database_locked(path, deadline), _file_locked(path, deadline):
        yield


@contextlib.contextmanager
def _file_locked(path, deadline):
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CredentialsError(
            f"Cannot open the lock file {lock_path} ({exc.strerror}): the portal needs write "
            "access to the htpasswd file's directory. Nothing was changed."
        ) from exc
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CredentialsError(
                        f"Another change to {path} has held its lock for over "
                        f"{LOCK_TIMEOUT_SECONDS} seconds; nothing was changed. Try again."
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _copy_ownership(tmp, previous):
    """Give the new file the old file's owner and group where the OS lets us.

    The registry may read the file through its group; a file recreated with the portal's group
    would lock it out. Only root may change the owner; members may change the group.
    """
    if previous is None:
        return
    with contextlib.suppress(OSError):
        os.chown(tmp, previous.st_uid, previous.st_gid)
        return
    with contextlib.suppress(OSError):
        os.chown(tmp, -1, previous.st_gid)


def _write_atomically(path, text):
    directory = os.path.dirname(path)
    try:
        previous = os.stat(path)
    except FileNotFoundError:
        previous = None
    except OSError as exc:
        raise CredentialsError(
            f"Cannot inspect {path} ({exc.strerror}); nothing was changed."
        ) from exc
    mode = previous.st_mode & 0o7777 if previous else NEW_FILE_MODE
    try:
        fd, tmp = tempfile.mkstemp(prefix=".htpasswd.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CredentialsError(
            f"Cannot create a file in {directory} ({exc.strerror}): the portal needs write "
            "access to the htpasswd file's directory. Nothing was changed."
        ) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8", "surrogateescape"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        _copy_ownership(tmp, previous)
        _bump_mtime(tmp, previous)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CredentialsError(
            f"Cannot write {path} ({exc.strerror}); nothing was changed."
        ) from exc
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _bump_mtime(tmp, previous):
    """Make the new file's mtime differ from the old one's.

    The registry reloads only when the mtime changes, and two writes within one clock tick
    (a few milliseconds) can share an mtime: the second change would go unseen.
    """
    if previous is None:
        return
    new_mtime = os.stat(tmp).st_mtime_ns
    if new_mtime <= previous.st_mtime_ns:
        bumped = previous.st_mtime_ns + 1_000
        os.utime(tmp, ns=(bumped, bumped))


def _disable_malformed(lines):
    """Comment out lines the registry cannot parse, keeping their text after a marker."""
    for i, raw in enumerate(lines):
        if raw.startswith(DISABLED_PREFIX):
            continue
        try:
            _parse_line(raw)
        except ValueError:
            body = raw.rstrip("\n").removesuffix("\r")
            if len((DISABLED_PREFIX + body).encode("utf-8", "surrogateescape")) > (
                REGISTRY_MAX_LINE_BYTES
            ):
                raise CredentialsError(
                    f"Line {i + 1} of the htpasswd file is too long for the registry to read; "
                    "remove it by hand. Nothing was changed."
                ) from None
            logger.warning("Disabling malformed line %d of the htpasswd file", i + 1)
            lines[i] = DISABLED_PREFIX + raw
    return lines


def _modify(change):
    """Apply `change(lines) -> lines` to the file under the lock."""
    path = htpasswd_path()
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CredentialsError(
            f"The directory {directory} of HTPASSWD_PATH does not exist; nothing was changed."
        )
    with _locked(path):
        text = _read_text(path)
        lines = change(_split_lines(text or ""))
        _write_atomically(path, "".join(_disable_malformed(lines)))


def _line_ending(lines):
    return "\r\n" if any(raw.endswith("\r\n") for raw in lines) else "\n"


def _append(lines, new_line):
    ending = _line_ending(lines)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += ending
    lines.append(new_line + ending)
    return lines


def _user_line_indexes(lines, username):
    indexes = []
    for i, raw in enumerate(lines):
        try:
            parsed = _parse_line(raw)
        except ValueError:
            continue
        if parsed and parsed[0] == username:
            indexes.append(i)
    return indexes


def set_password(username, password, rounds=None, create=False, min_length=None):
    """Set `username`'s password (bcrypt, `rounds` or HTPASSWD_BCRYPT_ROUNDS).

    A missing user is created when `create` is true, else CredentialsError.
    Returns True when the user was created, False when an existing entry was replaced.
    """
    validate_username(username)
    validate_password(password, min_length=min_length)
    rounds = settings.HTPASSWD_BCRYPT_ROUNDS if rounds is None else rounds
    new_hash = hash_password(password, rounds)  # outside the lock: bcrypt is slow on purpose
    created = False

    def change(lines):
        nonlocal created
        indexes = _user_line_indexes(lines, username)
        if not indexes:
            if not create:
                raise CredentialsError(f"There is no user {username!r} in the htpasswd file.")
            created = True
            return _append(lines, f"{username}:{new_hash}")
        # Replace the last entry (the one the registry uses) and drop earlier duplicates.
        last = indexes[-1]
        ending = lines[last][len(lines[last].rstrip("\r\n")) :]
        lines[last] = f"{username}:{new_hash}{ending}"
        for i in reversed(indexes[:-1]):
            del lines[i]
        return lines

    _modify(change)
    return created


def add_user(username, password, rounds=None):
    """Create a user; CredentialsError if the name exists already or the input is refused."""
    validate_username(username)
    validate_password(password)
    rounds = settings.HTPASSWD_BCRYPT_ROUNDS if rounds is None else rounds
    new_hash = hash_password(password, rounds)

    def change(lines):
        if _user_line_indexes(lines, username):
            raise CredentialsError(f"A user named {username!r} exists already.")
        return _append(lines, f"{username}:{new_hash}")

    _modify(change)


def delete_user(username):
    """Remove every line of `username`; CredentialsError if there is none."""
    validate_username(username)

    def change(lines):
        indexes = _user_line_indexes(lines, username)
        if not indexes:
            raise CredentialsError(f"There is no user {username!r} in the htpasswd file.")
        for i in reversed(indexes):
            del lines[i]
        return lines

    _modify(change)


def generate_password(length=None):
    """A random password of letters and digits (no characters that need quoting anywhere)."""
    length = max(length or PERSON_PASSWORD_LENGTH, settings.HTPASSWD_MIN_PASSWORD_LENGTH)
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length))


def ensure_service_account(username, password):
    """Make sure `username` authenticates with `password`, hashed at the service cost.

    The registry verifies bcrypt on every request, so the portal's own account uses a long
    random password at a low cost: its entropy, not the cost, protects it.
    Returns True when the file was changed.
    """
    validate_password(password)
    if check_password(username, password):
        return False
    set_password(username, password, rounds=settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS, create=True)
    return True


def rotate_service_account(username):
    """Give `username` a new random password (>= 43 characters) at the service cost; return it."""
    password = generate_password(SERVICE_PASSWORD_LENGTH)
    set_password(username, password, rounds=settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS, create=True)
    return password
