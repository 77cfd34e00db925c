"""`python manage.py garbage_collect [--dry-run] [--registry-stopped]`: run the registry's own
collector against the portal's storage settings. The real run refuses unless the registry is
read-only right now (or, with --registry-stopped, really unreachable).

`python manage.py garbage_collect --online [--dry-run]`: Oyster's own collector, while the
registry keeps serving pushes and pulls (docs/online-collector.md), as the worker would run it
(one at a time across processes)."""

from django.core.management.base import CommandError
from django.template.defaultfilters import filesizeformat

from ... import collector, online_gc, recycle_bin, registry, storage, worker
from ...models import JobKind, Run
from ...registry_users import cli_actor
from ..base import PortalCommand

STOPPED_HELP = "The registry is stopped on purpose (checked: it must refuse connections)."


class Command(PortalCommand):
    help = (
        "Free the space of deleted images with the registry's collector. --dry-run lists what "
        "would go; the real run needs the registry read-only (or stopped: --registry-stopped)."
    )

    failures = (
        collector.CollectorError,
        online_gc.OnlineGcError,
        storage.StorageError,
        registry.RegistryError,
        worker.JobBusy,
    )
    dry_run_help = "Delete nothing; show what would go."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--registry-stopped", action="store_true", help=STOPPED_HELP)
        parser.add_argument(
            "--online",
            action="store_true",
            help="Oyster's online collector: the registry keeps serving while it runs.",
        )

    def run(self, *, dry_run, registry_stopped, online, **options):
        if online:
            self.run_online(dry_run)
            return
        warning = recycle_bin.offline_gc_warning()
        if warning:
            # Said before it runs: afterwards those items are lost.
            self.stderr.write(warning)
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

    def run_online(self, dry_run):
        run = worker.run_now(JobKind.ONLINE_GC, cli_actor(), options={"dry_run": dry_run})
        if run.state != Run.State.DONE:
            raise CommandError(run.error)
        result = run.result
        young = (
            f" {result['young_count']:,} younger than GC_GRACE_MINUTES wait for a later run."
            if result["young_count"]
            else ""
        )
        if result.get("held_count"):
            young += (
                f" {result['held_count']:,} ({result['held_bytes']:,} bytes) are held by the "
                "recycle bin until they expire."
            )
        if dry_run:
            self.stdout.write(
                f"Dry run: {result['unreferenced_count']:,} blobs "
                f"({filesizeformat(result['unreferenced_bytes'])}, "
                f"{result['unreferenced_bytes']:,} bytes) are referenced by no manifest; "
                f"{result['candidate_count']:,} ({result['candidate_bytes']:,} bytes) would go "
                f"now.{young}"
            )
            return
        self.stdout.write(
            f"Moved {result['trashed_count']:,} blobs ({result['trashed_bytes']:,} bytes, "
            f"{filesizeformat(result['trashed_bytes'])}) into the trash in "
            f"{result['seconds']:.1f} s; {result['kept_count']:,} were needed again and kept, "
            f"{result['restored_count']:,} restored, {result['purged_count']:,} purged from "
            f"earlier runs.{young} The trash holds {result['trash_count']:,} blobs "
            f"({filesizeformat(result['trash_bytes'])}) until a run after GC_TRASH_HOURS."
        )
