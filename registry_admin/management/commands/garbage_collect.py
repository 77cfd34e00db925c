"""`python manage.py garbage_collect [--dry-run] [--registry-stopped]`: run the registry's own
collector against the portal's storage settings. The real run refuses unless the registry is
read-only right now (or, with --registry-stopped, really unreachable)."""

from django.template.defaultfilters import filesizeformat

from ... import collector, registry, storage
from ...registry_users import cli_actor
from ..base import PortalCommand

STOPPED_HELP = "The registry is stopped on purpose (checked: it must refuse connections)."


class Command(PortalCommand):
    help = (
        "Free the space of deleted images with the registry's collector. --dry-run lists what "
        "would go; the real run needs the registry read-only (or stopped: --registry-stopped)."
    )

    failures = (collector.CollectorError, storage.StorageError, registry.RegistryError)
    dry_run_help = "Delete nothing; show what would go."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--registry-stopped", action="store_true", help=STOPPED_HELP)

    def run(self, *, dry_run, registry_stopped, **options):
        result = collector.collect(
            cli_actor(),
            dry_run=dry_run,
            registry_stopped=registry_stopped,
            on_progress=lambda message: self.stderr.write(message),
        )
        scan = result.scan_reclaimable_bytes
        scan_text = (
            f"the latest scan counted {scan:,} bytes reclaimable"
            if scan is not None
            else "no scan yet"
        )
        if dry_run:
            self.stdout.write(
                f"Dry run: the collector would delete {len(result.eligible):,} blobs, "
                f"{result.eligible_bytes:,} bytes ({filesizeformat(result.eligible_bytes)}); "
                f"{scan_text}. {result.marked:,} blobs stay in use."
            )
            return
        self.stdout.write(
            f"Deleted {len(result.eligible):,} blobs in {result.seconds:.1f} s; the storage "
            f"shrank by {result.freed_bytes:,} bytes ({filesizeformat(result.freed_bytes or 0)}); "
            f"{scan_text} before. A fresh scan was stored."
        )
        self.stdout.write(collector.RESTART_REMINDER)
