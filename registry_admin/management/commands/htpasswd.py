"""`python manage.py htpasswd list|add|passwd|delete|rotate-service`: the users pages for scripts.

Exit status 0 on success, 1 when the change is refused or fails (the reason on stderr), 2 for a
usage error. Passwords come from a terminal prompt, one line on stdin (`--password-stdin`), or
are generated (`--generate`); never from arguments, which other users can read in `ps`.
A generated password is the only thing written to stdout, so `$(...)` captures just it.
"""

import getpass
import sys

from django.conf import settings
from django.core.management.base import CommandError

from ... import htpasswd, registry_users
from ...registry_users import cli_actor
from ..base import PortalCommand

# One line of a password and then some: enough to say "too long" without reading a huge stream.
STDIN_LIMIT = 4096


class Command(PortalCommand):
    help = "List and change the registry's htpasswd users (HTPASSWD_PATH)."
    failures = (htpasswd.CredentialsError,)
    database_failure = "Cannot record the change in the audit log ({error}); nothing was changed."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.add_parser("list", help="List users, their hash scheme and problem lines.")
        for name, text in (("add", "Create a user."), ("passwd", "Change a user's password.")):
            sub = actions.add_parser(name, help=text)
            sub.add_argument("username", metavar="NAME")
            source = sub.add_mutually_exclusive_group()
            source.add_argument(
                "--password-stdin",
                action="store_true",
                help="Read the password from the first line of standard input.",
            )
            source.add_argument(
                "--generate",
                action="store_true",
                help="Generate a random password and print it once on standard output.",
            )
        sub = actions.add_parser("delete", help="Delete a user.")
        sub.add_argument("username", metavar="NAME")
        actions.add_parser(
            "rotate-service",
            help="Give the portal's service account (REGISTRY_USERNAME) a new random password "
            "at HTPASSWD_SERVICE_BCRYPT_ROUNDS and print it once.",
        )

    def run(self, *, action, **options):
        handler = {
            "list": self.list_users,
            "add": self.add_user,
            "passwd": self.change_password,
            "delete": self.delete_user,
            "rotate-service": self.rotate_service,
        }[action]
        handler(**options)

    def list_users(self, **options):
        listing = htpasswd.read_users()
        if not listing.exists:
            self.stdout.write(f"{listing.path} does not exist yet (no users).")
            return
        for entry in listing.entries:
            notes = []
            if entry.username == settings.REGISTRY_USERNAME:
                notes.append("portal service account")
            if not entry.accepted_by_registry:
                notes.append("the registry rejects this entry")
            if entry.shadowed:
                notes.append(f"line {entry.line_number} overridden by a later line")
            if not entry.manageable:
                notes.append("unusual name: edit by hand")
            self.stdout.write(f"{entry.username}\t{entry.scheme}\t{'; '.join(notes)}".rstrip())
        for line in listing.malformed:
            self.stderr.write(f"line {line.line_number}: malformed ({line.reason})")
        if listing.disabled_lines:
            numbers = ", ".join(str(n) for n in listing.disabled_lines)
            self.stderr.write(f"line(s) {numbers}: malformed lines kept as comments")

    def add_user(self, username, **options):
        htpasswd.validate_username(username)
        if username == settings.REGISTRY_USERNAME:
            raise CommandError(
                f"{username} is the portal's service account: use `rotate-service` "
                "or `ensure_service_account` for it."
            )
        self.store_password(
            registry_users.create, username, f"Added the user {username}.", **options
        )

    def change_password(self, username, **options):
        htpasswd.validate_username(username)
        self.refuse_service_account(username, "changing its password")
        done = f"Changed the password of {username}."
        self.store_password(registry_users.change_password, username, done, **options)

    def delete_user(self, username, **options):
        htpasswd.validate_username(username)
        self.refuse_service_account(username, "deleting it")
        registry_users.delete(cli_actor(), username, via="cli")
        self.stdout.write(f"Deleted the user {username}.")

    def rotate_service(self, **options):
        username = settings.REGISTRY_USERNAME
        htpasswd.validate_username(username)
        password = registry_users.rotate_service_account(cli_actor(), username, via="cli")
        self.stdout.write(password)
        self.stderr.write(
            f"That is the new password of the service account {username} (bcrypt cost "
            f"{settings.HTPASSWD_SERVICE_BCRYPT_ROUNDS}); it is shown only once. Set "
            "REGISTRY_PASSWORD to it where the portal reads its settings (the environment, a "
            "secret, or .env beside manage.py) and restart the portal and its worker: until "
            "then they cannot reach the registry."
        )

    def refuse_service_account(self, username, doing):
        if username == settings.REGISTRY_USERNAME:
            raise CommandError(
                f"{username} is the portal's service account (REGISTRY_USERNAME): {doing} "
                "would lock the portal out of the registry. Use `htpasswd rotate-service`."
            )

    def store_password(self, change, username, done, **options):
        """Ask for (or generate) the password, `change` the file with an audit row, report."""
        password = self.read_password(username, **options)
        change(cli_actor(), username, password, via="cli")
        self.report(done, password, options["generate"])

    def read_password(self, username, password_stdin=False, generate=False, **options):
        if generate:
            return htpasswd.generate_password()
        if password_stdin:
            return read_password_stdin()
        if not sys.stdin.isatty():
            raise CommandError(
                "Standard input is not a terminal, so there is nobody to ask: pass the password "
                "on stdin with --password-stdin, or use --generate."
            )
        password = getpass.getpass(f"Password for {username}: ")
        htpasswd.validate_password(password)
        if getpass.getpass("Again: ") != password:
            raise CommandError("The two passwords differ; nothing was changed.")
        return password

    def report(self, message, password, generated):
        if generated:
            self.stdout.write(password)
            self.stderr.write(f"{message} The password above is shown only once.")
        else:
            self.stdout.write(message)


def read_password_stdin():
    raw = sys.stdin.buffer.read(STDIN_LIMIT + 1)
    if len(raw) > STDIN_LIMIT:
        raise CommandError("The password on standard input is far too long; nothing was changed.")
    if raw.endswith(b"\n"):
        raw = raw[:-1].removesuffix(b"\r")
    if b"\n" in raw:
        raise CommandError("Give exactly one line (the password) on standard input.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandError("The password on standard input is not UTF-8 text.") from exc
