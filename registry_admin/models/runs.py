from django.db import models


class JobKind(models.TextChoices):
    """Every background job kind, with its label; worker.JOBS maps each to its function.

    SYNC is the reconcile: its value stays "sync" because operators' scripts and saved runs
    use it (as does `manage.py sync_registry`).
    """

    NOOP = "noop", "No-op (for checks)"
    AUDIT_PRUNE = "audit_prune", "Audit log prune"
    SYNC = "sync", "Registry reconcile"
    DETAILS = "details", "Image details fetch"
    STORAGE_SCAN = "storage_scan", "Storage scan"
    PRUNE_UNTAGGED = "prune_untagged", "Untagged image cleanup"
    GARBAGE_COLLECT = "garbage_collect", "Garbage collection"
    ONLINE_GC = "online_gc", "Online garbage collection"
    GC_RESTORE = "gc_restore", "Restore from the collector's trash"
    RETENTION = "retention", "Retention rules"
    BIN_PURGE = "bin_purge", "Recycle bin purge"
    DELETE_REPOSITORY = "delete_repository", "Repository delete"


class Run(models.Model):
    """One execution of a background job (reconcile, storage scan, audit prune, retention...).

    Requested runs are claimed by the worker (`python manage.py run_worker`); scheduled ones are
    created by it. At most one run of a kind executes at a time, across processes, guarded by
    the kind's `JobLease` row.
    """

    class State(models.TextChoices):
        REQUESTED = "requested", "Requested"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    Kind = JobKind

    kind = models.CharField(max_length=40, choices=JobKind.choices)
    state = models.CharField(max_length=12, choices=State.choices, default=State.REQUESTED)
    options = models.JSONField(default=dict, blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(null=True, blank=True)
    message = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "state", "requested_at"])]
        ordering = ["-requested_at"]

    def __str__(self):
        return f"{self.kind} #{self.pk} ({self.state})"

    @property
    def is_active(self):
        return self.state in (self.State.REQUESTED, self.State.RUNNING)

    @property
    def percent(self):
        if not self.total:
            return None
        return min(100, round(100 * self.done / self.total))

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class JobLease(models.Model):
    """One row per job kind: who holds it until when, and when it last ran.

    Claimed with one conditional UPDATE, which is atomic on SQLite and PostgreSQL alike, so two
    workers (or a worker and a management command) never run the same kind at once.
    """

    kind = models.CharField(max_length=40, unique=True, choices=JobKind.choices)
    owner = models.CharField(max_length=200, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.kind


class WorkerHeartbeat(models.Model):
    """One row per worker process (`run_worker`), stamped while it lives.

    A run's own heartbeat only moves while a job runs; this one tells the dashboard whether
    any worker is there at all, including between jobs. A worker that exits cleanly stamps
    `stopped_at`; one that is killed simply stops beating.
    """

    owner = models.CharField(max_length=200, unique=True)
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.owner
