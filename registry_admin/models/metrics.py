from django.db import models

from .. import db


class MetricCounterManager(models.Manager):
    def add(self, amounts):
        """Add `amounts` ({name: number}) to the named counters in one statement (an upsert
        that adds), creating the rows it needs. Call it inside the transaction of what is
        counted when there is one, so a rolled-back change is not counted; database errors
        propagate."""
        # Sorted: two transactions adding to the same rows lock them in one order (PostgreSQL).
        rows = [{"name": name, "value": float(n)} for name, n in sorted(amounts.items()) if n]
        db.insert_or_add(self.model, rows, key=("name",), add=("value",))


class MetricCounter(models.Model):
    """A running total for `/metrics` (registry_admin/metrics.py), one row per name, e.g.
    `job_runs:sync:done` or `token_requests:issued`: only ever added to, so every portal
    process and instance answers a scrape with the same, never-decreasing value.

    Kept for what no other table holds for ever: the per-day tables and the audit log are
    pruned, and counting the audit log would cost a scan of a million rows per scrape.
    """

    name = models.CharField(max_length=200, primary_key=True)
    # A float: counts and summed seconds alike (exact for counts below 2**53).
    value = models.FloatField(default=0)

    objects = MetricCounterManager()

    def __str__(self):
        return f"{self.name}: {self.value:g}"
