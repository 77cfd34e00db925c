import json

from django.core.management.base import CommandError
from django.db.models import Count, Sum
from django.template.defaultfilters import filesizeformat

from ... import usage, worker
from ...models import JobKind, StorageSnapshot
from ..base import PortalCommand


def _bytes(value):
    return f"{value:,} bytes ({filesizeformat(value)})"


class Command(PortalCommand):
    help = (
        "Scan the registry's storage now (the worker also does it every STORAGE_SCAN_INTERVAL "
        "seconds) and store a snapshot: totals, per-repository usage, what garbage collection "
        "would reclaim, unfinished uploads."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", help="Print the snapshot as JSON (for scripts)."
        )
        parser.add_argument(
            "--top",
            type=int,
            default=20,
            help="Repositories listed in the text summary, largest first (0: all).",
        )

    failures = (worker.JobBusy,)

    def run(self, **options):
        if options["top"] < 0:
            raise CommandError("--top must be 0 (all) or a positive number.")
        run = worker.run_now(JobKind.STORAGE_SCAN, user="manage.py scan_storage")
        if run.state == run.State.FAILED:
            raise CommandError(f"The storage scan failed: {run.error}")
        snapshot = StorageSnapshot.objects.get(pk=run.result["snapshot_id"])
        if options["json"]:
            self.stdout.write(json.dumps(usage.snapshot_as_dict(snapshot), indent=2))
            return
        self._summary(snapshot, options["top"])

    def _summary(self, snapshot, top):
        write = self.stdout.write
        write(f"Storage scan of {snapshot.backend} {snapshot.location}")
        write(f"  total:        {_bytes(snapshot.total_bytes)} in {snapshot.blob_count:,} blobs")
        write(f"  linked:       {_bytes(snapshot.linked_bytes)}")
        write(f"  saved by sharing between repositories: {_bytes(snapshot.dedup_saved_bytes)}")
        write(
            f"  reclaimable:  {_bytes(snapshot.reclaimable_bytes)} in "
            f"{snapshot.reclaimable_count:,} blobs (run the registry's garbage-collect)"
        )
        write(
            f"  uploads:      {snapshot.upload_count:,} unfinished, {_bytes(snapshot.upload_bytes)}"
        )
        untagged = snapshot.untagged.aggregate(count=Count("id"), size=Sum("reclaimable_bytes"))
        write(
            f"  untagged:     {untagged['count']:,} manifests no tag reaches, "
            f"{_bytes(untagged['size'] or 0)} more after `manage.py prune_untagged`"
        )
        if snapshot.unreadable_manifests:
            write(
                f"  warning: {snapshot.unreadable_manifests:,} linked manifests could not be "
                "parsed; reclaimable may be overstated."
            )
        rows = snapshot.repositories.order_by("-referenced_bytes", "name")
        if top:
            rows = rows[:top]
        write(f"  {snapshot.repository_count:,} repositories (referenced / unique / shared bytes):")
        for row in rows:
            write(
                f"    {row.name}: {row.referenced_bytes:,} / {row.unique_bytes:,} / "
                f"{row.shared_bytes:,}"
            )
        write(f"Snapshot #{snapshot.pk} stored in {snapshot.duration_seconds:.1f} s.")
