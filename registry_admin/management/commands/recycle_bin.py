"""`python manage.py recycle_bin list [--json] | restore REF ... | purge [--older-than DAYS]`: the
recycle bin from a shell (README "Recently deleted"). REF is REPOSITORY:TAG or
REPOSITORY@DIGEST; each restore is reported on its own line; exit status 1 when one failed."""

import json

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat

from ... import recycle_bin, registry
from ...models import BinItem
from ...registry_users import cli_actor
from ..base import PortalCommand


def _days(value):
    try:
        days = int(value)
    except ValueError:
        raise CommandError(
            f"--older-than wants whole days, not {value[:40]!r}.", returncode=2
        ) from None
    if not 0 <= days <= 3650:
        raise CommandError("--older-than must be 0 to 3650 days.", returncode=2)
    return days


class Command(PortalCommand):
    help = "List, restore or purge what Oyster's deletes put in the recycle bin."
    failures = (registry.RegistryError, recycle_bin.BinError)

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        listing = actions.add_parser("list", help="What the bin holds, newest first.")
        listing.add_argument(
            "--json", dest="as_json", action="store_true", help="One JSON document."
        )
        listing.add_argument(
            "--all", dest="show_all", action="store_true", help="Restored and purged items too."
        )
        restore = actions.add_parser("restore", help="Put items back (manifests, then tags).")
        restore.add_argument("references", nargs="+", metavar="REPOSITORY:TAG|REPOSITORY@DIGEST")
        purge = actions.add_parser("purge", help="Release expired items (RECYCLE_BIN_DAYS).")
        purge.add_argument("--older-than", metavar="DAYS", default=None)

    def run(self, *, action, **options):
        return getattr(self, f"do_{action}")(**options)

    def do_list(self, *, as_json=False, show_all=False, **options):
        rows = BinItem.objects.all() if show_all else BinItem.objects.holding()
        rows = list(rows[: recycle_bin.MAX_ITEMS])
        if as_json:
            self.stdout.write(_json([_as_dict(row) for row in rows]))
            return
        if not rows:
            self.stdout.write("The recycle bin is empty.")
        for row in rows:
            tags = ", ".join(row.tags) or "(untagged)"
            self.stdout.write(
                f"{row.reference} [{row.state}] tags: {tags}; {row.kind}, "
                f"{filesizeformat(row.size_bytes)}, deleted {row.deleted_at:%Y-%m-%d %H:%M} UTC "
                f"by {row.actor or '?'} ({row.reason}); expires {row.expires_at:%Y-%m-%d %H:%M}"
            )

    def do_restore(self, *, references, **options):
        if len(references) > recycle_bin.MAX_ITEMS:
            raise CommandError(f"At most {recycle_bin.MAX_ITEMS} references at once.", returncode=2)
        failed = 0
        for reference in references:
            try:
                outcome = recycle_bin.restore(cli_actor(), recycle_bin.find(reference))
            except recycle_bin.BinError as exc:
                failed += 1
                self.stderr.write(f"{str(reference)[:200]}: {exc}")
                continue
            self.stdout.write(outcome.message)
        if failed:
            raise CommandError(f"{failed} of {len(references)} could not be restored.")

    def do_purge(self, *, older_than=None, **options):
        days = None if older_than is None else _days(older_than)
        purged = recycle_bin.purge(cli_actor(), older_than_days=days)
        freed = sum(item.unique_bytes for item in purged)
        self.stdout.write(
            f"{len(purged)} items purged; about {filesizeformat(freed)} ({freed:,} bytes) come "
            "back at the next garbage collection."
        )


def _as_dict(row):
    return {
        "id": row.pk,
        "repository": row.repository,
        "digest": row.digest,
        "kind": row.kind,
        "tags": row.tags,
        "state": row.state,
        "reason": row.reason,
        "actor": row.actor,
        "deleted_at": row.deleted_at.isoformat(),
        "expires_at": row.expires_at.isoformat(),
        "size_bytes": row.size_bytes,
        "unique_bytes": row.unique_bytes,
        "note": row.note,
    }


def _json(value):
    return json.dumps(value, indent=2, sort_keys=True)
