from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ... import htpasswd


class Command(BaseCommand):
    help = (
        "Make sure the portal's service account (REGISTRY_USERNAME / REGISTRY_PASSWORD) is in the "
        "htpasswd file, hashed at HTPASSWD_SERVICE_BCRYPT_ROUNDS."
    )

    def handle(self, *args, **options):
        if not settings.REGISTRY_PASSWORD:
            raise CommandError("Set REGISTRY_PASSWORD first (a long random string).")
        try:
            changed = htpasswd.ensure_service_account(
                settings.REGISTRY_USERNAME, settings.REGISTRY_PASSWORD
            )
        except htpasswd.CredentialsError as exc:
            raise CommandError(str(exc)) from exc
        if changed:
            self.stdout.write(f"Wrote the service account {settings.REGISTRY_USERNAME!r}.")
        else:
            self.stdout.write(f"The service account {settings.REGISTRY_USERNAME!r} is up to date.")
