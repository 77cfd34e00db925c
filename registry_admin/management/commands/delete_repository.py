"""`python manage.py delete_repository NAME [--dry-run] [--json]`: a whole repository goes, through
the recycle bin, and leaves the registry's catalog (README "Deleting a repository").

Exit status 0 when the repository was removed (or the dry run planned), 1 when it was not (a
client pushed meanwhile, the registry or the storage refused: the sentence on stderr), 2 for a
usage error. Recorded in the audit log as `cli:<operating-system user>`.
"""

import json

from django.core.management.base import CommandError

from ... import references, repository_delete
from ...registry_users import cli_actor
from ..base import PortalCommand


class Command(PortalCommand):
    help = (
        "Delete a repository: every tag and image (held in the recycle bin), its layer links and "
        "uploads, then its directory in the registry's storage, so that the catalog no longer "
        "lists it. Needs write access to the storage."
    )
    failures = (repository_delete.RepositoryDeleteError,)
    dry_run_help = "Only say what would be deleted; change nothing."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("name", metavar="NAME")
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help="One JSON document."
        )

    def run(self, *, name, dry_run=False, as_json=False, **options):
        try:
            references.check_repository(name)
        except references.InvalidReferenceError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        progress = None if as_json else (lambda message: self.stderr.write(message))
        outcome = repository_delete.delete_repository(
            cli_actor(), name, dry_run=dry_run, progress=progress
        )
        failed = not dry_run and not outcome.deleted
        if as_json:
            self.stdout.write(json.dumps(outcome.as_dict(), indent=2, sort_keys=True, default=str))
        elif not failed:
            self.stdout.write(outcome.message)
        if failed:
            raise CommandError(outcome.message)
