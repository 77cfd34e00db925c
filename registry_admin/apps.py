from django.apps import AppConfig
from django.contrib.auth.signals import user_login_failed
from django.db.models.signals import post_migrate


class RegistryAdminConfig(AppConfig):
    name = "registry_admin"
    verbose_name = "Oyster registry admin"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, Django's idiom: these modules use the models, loaded by now.
        from . import (
            access,
            activity,
            checks,  # noqa: F401  (registers the system checks)
            event_hooks,
            index,
            metrics,
            online_gc,
            pulls,
            quotas,
        )
        from .roles import ensure_groups
        from .signals import events_recorded

        post_migrate.connect(ensure_groups, sender=self)
        # The repository index follows the pushes and deletes the webhook stores.
        events_recorded.connect(index.on_events_recorded, dispatch_uid="index")
        # Real pulls bump their counters in the same transaction.
        events_recorded.connect(pulls.on_events_recorded, dispatch_uid="pulls")
        # The dashboard's per-day figures, likewise.
        events_recorded.connect(activity.on_events_recorded, dispatch_uid="activity")
        # A robot used after its expiry loses its htpasswd line (when no worker does it first).
        events_recorded.connect(access.on_events_recorded, dispatch_uid="robots")
        # A push naming a blob in the online collector's trash brings it back at once.
        events_recorded.connect(online_gc.on_events_recorded, dispatch_uid="online_gc")
        # Pushed blobs add to their quota's usage until the next storage scan.
        events_recorded.connect(quotas.on_events_recorded, dispatch_uid="quotas")
        # Outgoing event hooks: registry events and portal actions queued for their endpoints.
        events_recorded.connect(event_hooks.on_events_recorded, dispatch_uid="event_hooks")
        event_hooks.connect()
        # /metrics' running totals: events applied, and failed portal logins.
        events_recorded.connect(metrics.on_events_recorded, dispatch_uid="metrics")
        user_login_failed.connect(metrics.on_login_failed, dispatch_uid="metrics_login")
