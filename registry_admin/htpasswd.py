"""The htpasswd file shared with the registry: the only code that reads or writes it.

Why bcrypt directly and not passlib's HtpasswdFile: passlib refuses a file with one malformed
line and rewrites comments, while we must list such files and keep every line we do not manage
byte for byte. Hashing itself is the bcrypt library's; nothing here implements a hash.

Every change is a read-modify-write under an exclusive `fcntl` lock on a lock file beside the
htpasswd file, written to a temp file in the same directory, fsynced, then `os.replace`d over the
original (keeping its mode). The registry re-reads the file when its mtime changes and must
never see a partial file: one malformed line makes it answer 400 to every login.
"""

import contextlib
import fcntl
import os
import re
import secrets
import tempfile
from dataclasses import dataclass

import bcrypt
from django.conf import settings

USERNAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
BCRYPT_MAX_BYTES = 72
NEW_FILE_MODE = 0o640
SERVICE_PASSWORD_BYTES = 32  # token_urlsafe(32) gives 43 characters


class CredentialsError(Exception):
    """Reading or changing the htpasswd file failed; str(error) is a sentence for the page."""


@dataclass(frozen=True)
class Entry:
    """One user line. `scheme` is bcrypt, apr1, sha1, md5-crypt, sha-crypt, crypt or plaintext."""

    username: str
    scheme: str
    line_number: int

    @property
    def accepted_by_registry(self):
        return self.scheme == "bcrypt"


@dataclass(frozen=True)
class MalformedLine:
    line_number: int
    reason: str


@dataclass(frozen=True)
class Listing:
    entries: tuple
    malformed: tuple
    exists: bool


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
    if len(hashed) == 13 and re.fullmatch(r"[./0-9A-Za-z]{13}", hashed):
        return "crypt"
    return "plaintext"


def _split_lines(data):
    """Lines with their endings, so unchanged lines are written back byte for byte."""
    return data.splitlines(keepends=True)


def _parse_line(raw):
    """(username, hash) for a user line; None for a comment or blank line; ValueError if malformed."""
    text = raw.rstrip("\r\n")
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if ":" not in text:
        raise ValueError("no ':' between user name and hash")
    username, hashed = text.split(":", 1)
    if not username or username != username.strip():
        raise ValueError("empty user name or surrounding spaces")
    if not hashed:
        raise ValueError("empty hash")
    return username, hashed


def htpasswd_path():
    return os.path.abspath(settings.HTPASSWD_PATH)


def _read_text(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise CredentialsError(
            f"The htpasswd file {path} cannot be read by the portal (permission denied)."
        ) from exc
    except OSError as exc:
        raise CredentialsError(
            f"The htpasswd file {path} cannot be read ({exc.strerror})."
        ) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CredentialsError(
            f"The htpasswd file {path} is not UTF-8 text; fix it by hand before using the portal."
        ) from exc


def _listing_from_text(text):
    entries, malformed = [], []
    if text is None:
        return Listing(entries=(), malformed=(), exists=False)
    for number, raw in enumerate(_split_lines(text), start=1):
        try:
            parsed = _parse_line(raw)
        except ValueError as exc:
            malformed.append(MalformedLine(line_number=number, reason=str(exc)))
            continue
        if parsed:
            username, hashed = parsed
            entries.append(Entry(username=username, scheme=hash_scheme(hashed), line_number=number))
    return Listing(entries=tuple(entries), malformed=tuple(malformed), exists=True)


def read_users():
    """The file's user entries and malformed lines. Missing file: an empty listing."""
    return _listing_from_text(_read_text(htpasswd_path()))


def validate_username(username):
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise CredentialsError(
            "A user name is 1 to 64 characters from letters, digits, '.', '_' and '-'."
        )


def validate_password(password, min_length=None):
    min_length = settings.HTPASSWD_MIN_PASSWORD_LENGTH if min_length is None else min_length
    if len(password) < min_length:
        raise CredentialsError(f"The password must be at least {min_length} characters long.")
    if len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise CredentialsError(
            "The password is longer than bcrypt's limit of 72 bytes (UTF-8); "
            "it would be cut silently, so choose a shorter one."
        )
    if any(c in password for c in "\r\n\x00"):
        raise CredentialsError("The password cannot contain line breaks or NUL characters.")


def hash_password(password, rounds):
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def check_password(username, password):
    """True when the file holds a bcrypt entry for `username` matching `password`."""
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
        return False
    return bcrypt.checkpw(password.encode("utf-8"), found.encode("ascii"))


@contextlib.contextmanager
def _locked(path):
    """An exclusive cross-process lock on `<path>.lock`, held for a read-modify-write."""
    lock_path = path + ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CredentialsError(
            f"Cannot create the lock file {lock_path} ({exc.strerror}): the portal needs write "
            "access to the htpasswd file's directory."
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_atomically(path, text):
    directory = os.path.dirname(path)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    try:
        fd, tmp = tempfile.mkstemp(prefix=".htpasswd.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CredentialsError(
            f"Cannot write beside {path} ({exc.strerror}); nothing was changed."
        ) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
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


def _modify(change):
    """Apply `change(lines) -> lines` to the file under the lock; returns what change returned."""
    path = htpasswd_path()
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise CredentialsError(f"The directory {directory} of HTPASSWD_PATH does not exist.")
    with _locked(path):
        text = _read_text(path)
        lines = _split_lines(text or "")
        new_lines = change(lines)
        if new_lines is None:
            return
        if new_lines and not new_lines[-1].endswith(("\n", "\r")):
            new_lines[-1] += "\n"
        _write_atomically(path, "".join(new_lines))


def _line_ending(lines):
    for raw in lines:
        if raw.endswith("\r\n"):
            return "\r\n"
    return "\n"


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


def set_password(username, password, rounds=None, create=False):
    """Set `username`'s password (bcrypt, `rounds` or HTPASSWD_BCRYPT_ROUNDS).

    A missing user is created when `create` is true, else CredentialsError.
    Returns True when the user was created, False when an existing entry was replaced.
    """
    validate_username(username)
    rounds = settings.HTPASSWD_BCRYPT_ROUNDS if rounds is None else rounds
    new_hash = hash_password(password, rounds)  # outside the lock: bcrypt is slow on purpose
    created = {}

    def change(lines):
        indexes = _user_line_indexes(lines, username)
        if not indexes:
            if not create:
                raise CredentialsError(f"There is no user {username!r} in the htpasswd file.")
            ending = _line_ending(lines)
            if lines and not lines[-1].endswith(("\n", "\r")):
                lines[-1] += ending
            lines.append(f"{username}:{new_hash}{ending}")
            created["yes"] = True
            return lines
        # Replace the last entry (the one the registry uses) and drop earlier duplicates.
        last = indexes[-1]
        ending = lines[last][len(lines[last].rstrip("\r\n")) :] or "\n"
        lines[last] = f"{username}:{new_hash}{ending}"
        for i in reversed(indexes[:-1]):
            del lines[i]
        return lines

    _modify(change)
    return bool(created)


def add_user(username, password, rounds=None):
    """Create a user; CredentialsError if the name exists already."""
    validate_username(username)
    rounds = settings.HTPASSWD_BCRYPT_ROUNDS if rounds is None else rounds
    new_hash = hash_password(password, rounds)

    def change(lines):
        if _user_line_indexes(lines, username):
            raise CredentialsError(f"A user named {username!r} exists already.")
        ending = _line_ending(lines)
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += ending
        lines.append(f"{username}:{new_hash}{ending}")
        return lines

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


def generate_password(nbytes=18):
    """A random password for people (24 URL-safe characters by default)."""
    return secrets.token_urlsafe(nbytes)


def ensure_service_account(username, password):
    """Make sure `username` authenticates with `password`, hashed at the service cost.

    The registry verifies bcrypt on every request, so the portal's own account uses a long
    random password at a low cost: its entropy, not the cost, protects it.
    Returns True when the file was changed.
    """
    if check_password(username, password):
        return False
    set_password(username, password, rounds=settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS, create=True)
    return True
