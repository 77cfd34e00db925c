"""`python manage.py prune_untagged [--dry-run] [--repository GLOB]`: remove the manifests no
tag reaches (from the latest storage scan), each re-checked live right before; the registry's
garbage collection then frees their blobs. Exit status 1 when a delete failed."""

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat

from ... import untagged
from ...registry_users import cli_actor
from ..base import PortalCommand

REPOSITORY_HELP = "Only repositories matching this shell pattern (e.g. 'team/*')."


class Command(PortalCommand):
    help = (
        "Remove untagged manifests found by the latest storage scan (never one a tag or a "
        "tagged index still reaches, never one linked within UNTAGGED_GRACE_MINUTES)."
    )

    dry_run_help = "Check and list; delete nothing."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--repository", metavar="GLOB", default="", help=REPOSITORY_HELP)

    def run(self, *, dry_run, repository, **options):
        if len(repository) > 300 or any(not c.isprintable() for c in repository):
            raise CommandError(
                "--repository must be a printable pattern of at most 300 characters.", returncode=2
            )
        if not untagged.latest_rows() and not untagged.StorageSnapshot.objects.exists():
            raise CommandError("No storage scan yet: run `python manage.py scan_storage` first.")
        result = untagged.prune(cli_actor(), repository, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        for item in result.items:
            self.stdout.write(
                f"{item['repository']}@{item['digest']}: {item['state']} — {item['message']}"
                + (f" ({item['bytes']:,} bytes)" if item["bytes"] else "")
            )
        self.stdout.write(
            f"{len(result.removed)} untagged manifests {verb}; "
            f"{filesizeformat(result.reclaimable_bytes)} ({result.reclaimable_bytes:,} bytes) "
            "reclaimable by the registry's garbage collection (manage.py garbage_collect)."
        )
        if any(item["state"] == untagged.FAILED for item in result.items):
            raise CommandError("Some untagged manifests could not be removed (see above).")
