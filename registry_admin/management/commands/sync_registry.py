from django.core.management.base import CommandError

from ... import worker
from ...models import JobKind
from ..base import PortalCommand


class Command(PortalCommand):
    help = (
        "Reconcile the repository index with the registry now (the worker also does it every "
        "SYNC_INTERVAL seconds). Refuses to start while another reconcile runs."
    )

    failures = (worker.JobBusy,)

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency",
            type=int,
            help="Parallel registry requests (default: SYNC_CONCURRENCY).",
        )

    def run(self, **options):
        concurrency = options.get("concurrency")
        if concurrency is not None and not 1 <= concurrency <= 64:
            raise CommandError("--concurrency must be between 1 and 64.")
        run_options = {"concurrency": concurrency} if concurrency else {}
        run = worker.run_now(JobKind.SYNC, user="manage.py sync_registry", options=run_options)
        if run.state == run.State.FAILED:
            raise CommandError(f"The reconcile failed: {run.error}")
        result = run.result
        self.stdout.write(
            f"Reconciled {result['repositories']} repositories, {result['tags']} tags in "
            f"{run.duration.total_seconds():.1f} s: {result['tags_added']} tags added, "
            f"{result['tags_changed']} moved, {result['tags_removed']} removed, "
            f"{result['repositories_removed']} repositories removed, "
            f"{result['details_fetched']} images read."
        )
        for error in result.get("errors") or []:
            self.stderr.write(f"incomplete: {error}")
