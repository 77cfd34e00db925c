import json

from django.core.management.base import BaseCommand, CommandError

from ...upgrade import BREAKS, UpgradeCheckError, run_checks


class Command(BaseCommand):
    help = (
        "List what breaks when the registry moves from distribution 2.8 to 3.x: Azure "
        "credentials.type, the config path, token kid, and on Azure the 2.8 block blobs 3.x "
        "fails to overwrite (counted from a listing of the storage). Exit status 1 when "
        "something breaks."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--config",
            help="The registry's config.yml. Without it: what `registry_config` generates from "
            "the portal's settings. REGISTRY_STORAGE_* / REGISTRY_AUTH_* in the environment "
            "apply on top, as in the registry.",
        )
        parser.add_argument("--skip-storage", action="store_true", help="Do not list the storage.")
        parser.add_argument("--json", action="store_true", help="One JSON list of findings.")

    def handle(self, *args, **options):
        try:
            findings = run_checks(
                config_path=options["config"], include_storage=not options["skip_storage"]
            )
        except UpgradeCheckError as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps([finding.__dict__ for finding in findings], indent=2))
        else:
            for finding in findings:
                self.stdout.write(f"{finding.level.upper():7} {finding.topic}: {finding.message}")
        broken = sum(finding.level == BREAKS for finding in findings)
        if broken:
            raise CommandError(f"{broken} thing(s) break on registry 3.x; see above.", returncode=1)
