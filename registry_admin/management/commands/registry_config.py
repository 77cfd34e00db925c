from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ... import tokens
from ...audit_forms import NotificationSettingsForm
from ...registry_config import TOKEN_PLACEHOLDER, notification_config_texts, token_auth_texts


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

        parser.add_argument(
            "--auth",
            choices=["htpasswd", "token"],
            default="htpasswd",
            help="token: also print the registry's auth block for the portal's token endpoint "
            "(and write the certificate bundle it names).",
        )
        parser.add_argument(
            "--cert-out",
            help="With --auth token: where to write the certificate bundle "
            "(default TOKEN_KEY_DIR/rootcertbundle.pem).",
        )
        parser.add_argument(
            "--cert-path",
            help="With --auth token: the bundle's path as the registry sees it, when it mounts "
            "the file elsewhere (default: the --cert-out path).",
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
        if options["auth"] == "token":
            print_token_auth(self, form.cleaned_data["url"], options)


def print_token_auth(command, portal_url, options):
    """Write the certificate bundle and print the registry's token auth block, both ways."""
    cert_out = Path(options["cert_out"] or Path(settings.TOKEN_KEY_DIR) / "rootcertbundle.pem")
    try:
        written = tokens.write_bundle(cert_out.expanduser().resolve())
    except OSError as exc:
        raise CommandError(f"Cannot write the certificate bundle to {cert_out}: {exc}") from None
    yaml_text, env_text = token_auth_texts(
        portal_url,
        settings.TOKEN_SERVICE,
        settings.TOKEN_ISSUER,
        options["cert_path"] or written,
    )
    command.stdout.write(
        "# Token auth (replaces the registry's htpasswd block; set REGISTRY_AUTH_MODE=token "
        "on the portal):"
    )
    command.stdout.write(yaml_text)
    command.stdout.write("# Or as the registry's environment variables:")
    command.stdout.write(env_text, ending="")
    command.stderr.write(f"Wrote the certificate bundle to {written}.")
