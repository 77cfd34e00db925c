"""Storage quotas on repository patterns (registry_admin.quotas keeps their usage)."""

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from .access import PATTERN_MAX_LENGTH, validate_access_pattern

# 2**63 - 1 fits every database's BIGINT; nobody stores an exabyte-sized registry.
MAX_QUOTA_BYTES = 2**62


class Quota(models.Model):
    """A byte limit on the repositories whose most specific quota pattern this is.

    Usage = `scanned_bytes` (every blob the covered repositories link, from the latest scan)
    + `pushed_bytes` (blob pushes and mounts notified since that scan started) - `freed_bytes`
    (blobs Oyster's collector took from them since). `scanned_bytes` is None before the first
    scan that knew this quota: the usage is then the pushes seen so far, shown as partial.
    """

    class Level(models.TextChoices):
        OK = "ok", "Under the warning threshold"
        WARNING = "warning", "Over the warning threshold"
        EXCEEDED = "exceeded", "At or over the limit"

    pattern = models.CharField(
        max_length=PATTERN_MAX_LENGTH, unique=True, validators=[validate_access_pattern]
    )
    limit_bytes = models.BigIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(MAX_QUOTA_BYTES)]
    )
    warn_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    scanned_bytes = models.BigIntegerField(null=True, blank=True)
    # When the scan behind `scanned_bytes` started listing (pushes from then on are added).
    scanned_since = models.DateTimeField(null=True, blank=True)
    pushed_bytes = models.BigIntegerField(default=0)
    freed_bytes = models.BigIntegerField(default=0)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.OK)
    level_changed_at = models.DateTimeField(null=True, blank=True)
    # The last audit row for a refused push: one per refusal window, not one per token request.
    refusal_logged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pattern"]

    def __str__(self):
        return f"quota {self.pattern} ({self.limit_bytes} bytes)"

    @property
    def usage_bytes(self):
        return max(0, (self.scanned_bytes or 0) + self.pushed_bytes - self.freed_bytes)

    @property
    def is_partial(self):
        return self.scanned_bytes is None

    @property
    def warn_bytes(self):
        return self.limit_bytes * self.warn_percent // 100

    @property
    def percent(self):
        return min(999, self.usage_bytes * 100 // self.limit_bytes)

    def level_for_usage(self):
        usage = self.usage_bytes
        if usage >= self.limit_bytes:
            return self.Level.EXCEEDED
        if usage >= self.warn_bytes:
            return self.Level.WARNING
        return self.Level.OK


class QuotaSample(models.Model):
    """A quota's usage as one storage scan found it: the Quotas page's usage over time."""

    quota = models.ForeignKey(Quota, on_delete=models.CASCADE, related_name="samples")
    taken_at = models.DateTimeField()
    usage_bytes = models.BigIntegerField()
    limit_bytes = models.BigIntegerField()

    class Meta:
        ordering = ["quota", "-taken_at"]
        indexes = [models.Index(fields=["quota", "-taken_at"], name="quota_sample_idx")]

    def __str__(self):
        return f"{self.quota_id} at {self.taken_at:%Y-%m-%d %H:%M}: {self.usage_bytes}"
