"""Outgoing event hooks: endpoints admins configure, and the deliveries queued for them
(registry_admin.event_hooks sends them)."""

from django.db import models

from .access import PATTERN_MAX_LENGTH, validate_access_pattern


class EventKind(models.TextChoices):
    """What a hook can ask for; each delivery is one of these."""

    PUSH = "push", "Image pushed"
    DELETE = "delete", "Image or tag deleted"
    PULL = "pull", "Image pulled"
    USER = "user", "Registry user changed"
    ACCESS = "access", "Access rule, group or robot changed"
    RETENTION = "retention", "Retention run"
    COLLECTION = "collection", "Garbage collection"
    QUOTA = "quota", "Quota level crossed"
    TEST = "test", "Test delivery"


class EventHook(models.Model):
    class Format(models.TextChoices):
        GENERIC = "generic", "JSON signed with HMAC-SHA256"
        CLOUDEVENTS = "cloudevents", "CloudEvents 1.0 (structured JSON)"
        SLACK = "slack", "Slack incoming webhook"
        TEAMS = "teams", "Microsoft Teams incoming webhook"

    name = models.CharField(max_length=64, unique=True)
    url = models.URLField(max_length=2000)
    format = models.CharField(max_length=12, choices=Format.choices)
    # Comma-separated EventKind values; empty: every kind.
    events = models.CharField(max_length=200, blank=True)
    # Only events about repositories this glob matches (events without one always pass); empty:
    # every repository.
    repository_pattern = models.CharField(
        max_length=PATTERN_MAX_LENGTH, blank=True, validators=[validate_access_pattern]
    )
    # The generic format's HMAC key: the receiver needs it, so it is kept (never shown again).
    secret = models.CharField(max_length=128, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"hook {self.name} ({self.format})"

    def kinds(self):
        return [k for k in self.events.split(",") if k]


class HookDelivery(models.Model):
    """One event for one hook: queued in the transaction that recorded the event, sent by the
    worker in queue order per hook, retried with backoff until it is delivered or gives up."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        DELIVERED = "delivered", "Delivered"
        FAILED = "failed", "Gave up"

    hook = models.ForeignKey(EventHook, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=12, choices=EventKind.choices)
    # The event as Oyster describes it (see event_hooks.describe): the formats render from it.
    event = models.JSONField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # A sender working on it until then (another worker leaves it alone).
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["hook", "id"]
        indexes = [models.Index(fields=["state", "hook", "id"], name="hook_delivery_queue_idx")]

    def __str__(self):
        return f"delivery #{self.pk} of {self.kind} to hook {self.hook_id} ({self.state})"
