import logging
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections, connection
from django.utils import timezone

from ... import access, event_hooks, ingest, worker

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Run background jobs (reconcile, storage scan, audit prune, retention) as they are "
        "requested or fall due. Stops cleanly on SIGTERM or Ctrl-C after the current job."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument(
            "--kind", action="append", choices=sorted(worker.JOBS), help="Only these kinds."
        )

    def handle(self, *args, **options):
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        kinds = options["kind"]
        self.stdout.write(f"Worker started; jobs: {', '.join(kinds or worker.JOBS)}")
        self.started_at = timezone.now()
        self._beat()
        beating = threading.Event()
        heart = applier = sender = None
        if not options["once"]:
            # Outgoing event hooks, sent beside the jobs so a long scan does not delay them.
            sender = threading.Thread(
                target=event_hooks.run_sender, args=(beating,), name="event-hooks", daemon=True
            )
            sender.start()
            heart = threading.Thread(target=self._heartbeat, args=(beating,), daemon=True)
            heart.start()
            if settings.NOTIFICATIONS_APPLY_DELAY > 0:
                # The webhook's stored events, applied in batches (see registry_admin.ingest).
                applier = threading.Thread(
                    target=ingest.run_applier, args=(beating,), name="ingest", daemon=True
                )
                applier.start()
        try:
            self._loop(kinds, options["once"], applying=applier is not None)
        finally:
            beating.set()
            event_hooks.wake()
            for thread in (heart, applier, sender):
                if thread is not None:
                    thread.join(timeout=5)
            try:
                worker.stop_beating()
            except DatabaseError as exc:
                logger.warning("worker could not record its stop: %s", exc)
        self.stdout.write("Worker stopped.")

    def _loop(self, kinds, once, applying=False):
        while not self.stopping:
            close_old_connections()
            try:
                if not applying:
                    # Events a web process stored but did not live to apply (crash, restart);
                    # with the applier thread running, it takes them.
                    ingest.catch_up()
                for run in worker.tick(kinds):
                    logger.info(
                        "job %s #%s %s %s", run.kind, run.pk, run.state, run.error or run.result
                    )
            except DatabaseError as exc:
                # The database may be briefly locked or restarting: try again next pass.
                logger.warning("worker pass failed: %s", exc)
            if once:
                break
            self._sleep(settings.WORKER_POLL_SECONDS)

    def _beat(self):
        try:
            worker.beat(started_at=self.started_at)
            worker.renew_leases()
        except DatabaseError as exc:
            # A missed beat only makes the dashboard warn sooner; the jobs go on.
            logger.warning("worker heartbeat failed: %s", exc)
        # With the beat, not a job: a long scan must not keep an expired robot working.
        access.disable_expired_robots_or_log()

    def _heartbeat(self, stop):
        """Beats from its own thread, so a job that runs for an hour does not look like a dead
        worker (the loop only comes round between jobs)."""
        try:
            # Often enough that a lease is renewed twice before it could expire.
            every = min(worker.HEARTBEAT_SECONDS, worker.lease_seconds() / 3)
            while not stop.wait(every):
                self._beat()
        finally:
            connection.close()

    def _stop(self, signum, frame):
        self.stopping = True

    def _sleep(self, seconds):
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))
