from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...audit_forms import NotificationSettingsForm
from ...registry_config import TOKEN_PLACEHOLDER, notification_config_texts


class Command(BaseCommand):
    help = (
        "Print the registry's notification config for this portal: the config.yml section and "
        "the same as REGISTRY_NOTIFICATIONS_* environment variables."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--url",
            required=True,
            help="The portal's base URL as the registry reaches it, e.g. http://portal:8000",
        )
        parser.add_argument(
            "--ignore-blobs",
            action="store_true",
            help="Add an ignore block dropping blob events (media type application/octet-stream).",
        )
        parser.add_argument(
            "--ignore-pulls",
            action="store_true",
            help="Add an ignore block dropping every pull event.",
        )
        parser.add_argument(
            "--hide-token",
            action="store_true",
            help=f"Print {TOKEN_PLACEHOLDER} instead of NOTIFICATIONS_TOKEN.",
        )

    def handle(self, *args, **options):
        form = NotificationSettingsForm(
            {
                "url": options["url"],
                "ignore_blobs": options["ignore_blobs"],
                "ignore_pulls": options["ignore_pulls"],
            }
        )
        if not form.is_valid():
            raise CommandError(" ".join(form.errors.get("url", ["Invalid options."])))
        token = TOKEN_PLACEHOLDER if options["hide_token"] else settings.NOTIFICATIONS_TOKEN
        if not token:
            raise CommandError(
                "NOTIFICATIONS_TOKEN is not set: set it (the portal refuses deliveries without "
                "it) or pass --hide-token."
            )
        yaml_text, env_text = notification_config_texts(
            form.cleaned_data["url"], token, ignore=form.ignore_block()
        )
        self.stdout.write("# In the registry's config.yml:")
        self.stdout.write(yaml_text)
        self.stdout.write("# Or as the registry's environment variables:")
        self.stdout.write(env_text, ending="")
