from django.db import models
from django.db.models import OuterRef, Subquery


class PullCount(models.Model):
    """Real pulls of one repository, tag or digest by one registry user on one day (UTC).

    Kept by `registry_admin.pulls` as counters bumped as stored events are applied (`ingest`) and
    rebuilt from the audit log by `manage.py rebuild_pull_stats`. One row per puller and day
    answers every question the pages ask: the last pull (max), pulls in 30 days (sum over the
    days) and distinct pullers (count of actors), without reading the audit log.
    """

    class Scope(models.TextChoices):
        REPOSITORY = "r", "Repository"
        TAG = "t", "Tag"
        DIGEST = "d", "Digest"

    scope = models.CharField(max_length=1, choices=Scope.choices)
    repository = models.CharField(max_length=255)
    # The tag name or the digest; empty for the repository's own row.
    ref = models.CharField(max_length=200, blank=True)
    actor = models.CharField(max_length=255, blank=True)
    day = models.DateField()
    pulls = models.BigIntegerField(default=0)
    last_pulled_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "repository", "ref", "actor", "day"], name="pull_count_unique"
            )
        ]
        indexes = [
            # The newest pull of one repository, tag or digest is one seek (lists sort by it).
            models.Index(
                fields=["scope", "repository", "ref", "-last_pulled_at"], name="pull_last_idx"
            ),
        ]

    def __str__(self):
        ref = f" {self.ref}" if self.ref else ""
        return f"{self.repository}{ref}: {self.pulls} by {self.actor or '?'} on {self.day}"


def last_pull_subquery(scope=PullCount.Scope.REPOSITORY, repository_ref="name"):
    """The newest pull of each repository (its counters' own row, ref ""), for annotating or
    updating Repository rows: `Repository.last_pulled_at` is kept from it."""
    return Subquery(
        PullCount.objects.filter(scope=scope, repository=OuterRef(repository_ref), ref="")
        .order_by("-last_pulled_at")
        .values("last_pulled_at")[:1]
    )
