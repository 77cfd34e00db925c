"""`python manage.py delete_tag REPO:TAG` or `REPO@DIGEST`: the delete buttons, for scripts.

REPO:TAG removes that one tag (other tags of the same image stay). REPO@DIGEST removes the image
and every tag pointing at it; the tags are listed first. Exit status 0 on success, 1 when the
registry refuses or fails (the reason, including any half-done state, on stderr), 2 for a usage
error. Every delete is recorded in the audit log as `cli:<operating-system user>`.
"""

from django.core.management.base import CommandError

from ... import deletes, recycle_bin, references, registry
from ...registry_users import cli_actor
from ..base import PortalCommand

EXPECT_HELP = "Only delete REPO:TAG if it still points at this digest."


class Command(PortalCommand):
    help = (
        "Delete one tag (REPO:TAG; its sibling tags stay) or one image with all its tags "
        "(REPO@sha256:DIGEST). The last tag on an image deletes the image; space comes back "
        "after the registry's garbage collection (manage.py garbage_collect)."
    )

    failures = (registry.RegistryError,)
    database_failure = "The registry deleted it, but the audit log could not record it ({error})."

    def add_arguments(self, parser):
        parser.add_argument("reference", metavar="REPO:TAG|REPO@DIGEST")
        parser.add_argument("--expect-digest", metavar="DIGEST", default="", help=EXPECT_HELP)

    def run(self, *, reference, expect_digest, **options):
        try:
            repository, tag, digest = references.parse_reference(reference)
            if expect_digest:
                references.check_digest(expect_digest)
        except references.InvalidReferenceError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        if tag:
            self.delete_tag(repository, tag, expect_digest)
        else:
            self.delete_image(repository, digest)
        self.stdout.write(deletes.GC_ADVICE)

    def delete_tag(self, repository, tag, expect_digest):
        plan = deletes.delete_tag(cli_actor(), repository, tag, expect_digest or None)
        if plan.method == deletes.BY_DIGEST:
            self.stdout.write(
                f"Deleted {repository}:{tag} and its image {plan.digest} (it was the last tag "
                f"on it): {plan.reclaimable_bytes} bytes (estimate from the latest storage "
                f"scan) become reclaimable{recycle_bin.held_note()}."
                + (f" Deleted {plan.referrers_text}." if plan.referrers else "")
            )
        else:
            self.stdout.write(
                f"Deleted {repository}:{tag} (it pointed at {plan.digest}); the image stays "
                f"for {', '.join(plan.siblings) or 'its other tags'}: no space is freed."
            )

    def delete_image(self, repository, digest):
        tags = deletes.tags_pointing_at(repository, digest)
        self.stdout.write(
            f"Deleting {repository}@{digest} and its tags: {', '.join(tags) or '(none)'}"
        )
        gone = deletes.delete_image(cli_actor(), repository, digest, confirmed_tags=tags)
        self.stdout.write(
            f"Deleted {repository}@{digest}; tags removed: {', '.join(gone) or '(none)'}"
        )
