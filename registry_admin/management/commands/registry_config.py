from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ... import storage, tokens
from ...forms.audit import NotificationSettingsForm
from ...registry_config import (
    AZURE_CREDENTIALS_TYPES,
    TOKEN_PLACEHOLDER,
    azure_storage_section,
    config_path_note,
    registry_config_texts,
    token_auth_texts,
)


class Command(BaseCommand):
    help = (
        "Print the registry's notification config for this portal: the config.yml section and "
        "the same as REGISTRY_NOTIFICATIONS_* environment variables; with STORAGE_BACKEND=azure "
        "also the registry's storage.azure section for --registry-version 2 or 3."
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
            "--registry-version",
            type=int,
            choices=(2, 3),
            default=2,
            help="2: distribution 2.8 (registry:2); 3: distribution 3.x (registry:3), whose "
            "Azure driver needs credentials.type and whose config path is "
            "/etc/distribution/config.yml.",
        )
        parser.add_argument(
            "--azure-credentials",
            choices=AZURE_CREDENTIALS_TYPES,
            default="default_credentials",
            help="Registry 3 only: the Azure driver's credentials.type (default_credentials: the "
            "registry app's managed identity; shared_key: the account key).",
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
        version = options["registry_version"]
        storage_section = None
        if storage.backend_kind() == "azure":
            if not (settings.AZURE_STORAGE_ACCOUNT_NAME and settings.AZURE_STORAGE_CONTAINER):
                raise CommandError(
                    "STORAGE_BACKEND is azure: set AZURE_STORAGE_ACCOUNT_NAME and "
                    "AZURE_STORAGE_CONTAINER (the registry's account and container)."
                )
            if version == 2 and settings.AZURE_STORAGE_ACCOUNT_URL:
                self.stderr.write(
                    "Registry 2.8's Azure driver cannot use AZURE_STORAGE_ACCOUNT_URL: it always "
                    "connects to https://ACCOUNT.blob.core.windows.net (or another realm)."
                )
            storage_section = azure_storage_section(
                version,
                settings.AZURE_STORAGE_ACCOUNT_NAME,
                settings.AZURE_STORAGE_CONTAINER,
                root_directory=settings.AZURE_STORAGE_ROOT_DIRECTORY,
                service_url=settings.AZURE_STORAGE_ACCOUNT_URL if version == 3 else "",
                credentials_type=options["azure_credentials"],
            )
        yaml_text, env_text = registry_config_texts(
            form.cleaned_data["url"],
            token,
            ignore=form.ignore_block(),
            version=version,
            storage_section=storage_section,
        )
        self.stdout.write(config_path_note(version))
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
