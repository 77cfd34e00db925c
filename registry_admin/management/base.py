"""What the portal's management commands share: a boundary's failure becomes one line on
stderr and exit status 1 (never a traceback), and the optional --dry-run flag."""

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError


class PortalCommand(BaseCommand):
    """Subclasses implement `run(**options)` instead of `handle()`."""

    # Errors whose message is a sentence for the operator (StorageError, RegistryError, ...).
    failures = ()
    # The sentence, with an `{error}` placeholder, when the audit row cannot be written; None
    # lets a DatabaseError through as the unexpected failure it then is.
    database_failure = None
    # The help of --dry-run, for the commands that have one.
    dry_run_help = None

    def add_arguments(self, parser):
        if self.dry_run_help:
            parser.add_argument("--dry-run", action="store_true", help=self.dry_run_help)

    def handle(self, *args, **options):
        try:
            return self.run(**options)
        except self.failures as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            if self.database_failure is None:
                raise
            raise CommandError(self.database_failure.format(error=exc)) from exc

    def run(self, **options):
        raise NotImplementedError
