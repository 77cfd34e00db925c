from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...registry_config import CONFIG_PATHS, dump_yaml, local_registry_config


class Command(BaseCommand):
    help = (
        "Write a config for a local Debian `docker-registry` (filesystem storage, deletes on, "
        "htpasswd auth on HTPASSWD_PATH, notifications to this portal). Used by `make run`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--out", required=True, help="Where to write the YAML file.")
        parser.add_argument("--listen", default="127.0.0.1:5000")
        parser.add_argument("--portal-url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--registry-version",
            type=int,
            choices=(2, 3),
            default=2,
            help="2: Debian's docker-registry 2.8; 3: distribution 3.x (`registry serve OUT`).",
        )

    def handle(self, *args, **options):
        if not settings.NOTIFICATIONS_TOKEN:
            raise CommandError("Set NOTIFICATIONS_TOKEN first (a long random string).")
        config = local_registry_config(
            listen=options["listen"],
            storage_root=settings.STORAGE_FILESYSTEM_ROOT,
            htpasswd_path=Path(settings.HTPASSWD_PATH).resolve(),
            portal_url=options["portal_url"],
            token=settings.NOTIFICATIONS_TOKEN,
            version=options["registry_version"],
        )
        out = Path(options["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(settings.STORAGE_FILESYSTEM_ROOT).mkdir(parents=True, exist_ok=True)
        out.touch(mode=0o600)
        version = options["registry_version"]
        out.write_text(
            f"# For registry {version}: `registry serve {out}` (its image's default path is "
            f"{CONFIG_PATHS[version]}).\n" + dump_yaml(config)
        )
        self.stdout.write(f"Wrote {out}")
