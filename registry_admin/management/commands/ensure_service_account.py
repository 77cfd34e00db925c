from django.conf import settings
from django.core.management.base import CommandError

from ... import htpasswd
from ...models import AuditEvent, PortalAction
from ...registry_users import cli_actor
from ..base import PortalCommand


class Command(PortalCommand):
    help = (
        "Make sure the portal's service account (REGISTRY_USERNAME / REGISTRY_PASSWORD) is in the "
        "htpasswd file, hashed at HTPASSWD_SERVICE_BCRYPT_ROUNDS."
    )

    failures = (htpasswd.CredentialsError,)

    def run(self, **options):
        name = settings.REGISTRY_USERNAME
        if not settings.REGISTRY_PASSWORD:
            raise CommandError("Set REGISTRY_PASSWORD first (a long random string).")
        changed = htpasswd.ensure_service_account(name, settings.REGISTRY_PASSWORD)
        if not changed:
            self.stdout.write(f"The service account {name!r} is up to date.")
            return
        # Recorded after the change: only the file can tell whether anything had to change.
        AuditEvent.objects.log_portal_action(
            cli_actor(),
            PortalAction.USER_PASSWORD_CHANGED,
            detail={"registry_user": name, "service_account": True, "source": "REGISTRY_PASSWORD"},
        )
        self.stdout.write(f"Wrote the service account {name!r}.")
