"""Deleting tags and images from the pages: POST only, admins only, always confirmed.

Each URL answers a first POST (from a Delete button) with a confirmation page and does the
delete only on a second POST carrying `confirm=yes`. A GET is refused (405) and changes nothing.
"""

import functools
import logging

from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from .. import deletes, recycle_bin, references, registry, repository_delete, usage, worker
from ..models import JobKind, Run, Tag
from ..roles import DELETE_IMAGES, require
from ..storage import StorageError

logger = logging.getLogger(__name__)

MAX_BULK_TAGS = 1000
CONFIRM = "yes"


def _delete_view(view):
    """POST only, admins only, never cached; `view(request, repository)` gets the posted
    repository checked, and any name that fails the grammar answers the refusal page (400)."""

    @require_POST
    @require(DELETE_IMAGES)
    @never_cache
    @functools.wraps(view)
    def checked(request):
        try:
            return view(request, references.check_repository(request.POST.get("repository", "")))
        except references.InvalidReferenceError as exc:
            return _refused(request, exc)

    return checked


@_delete_view
def tag_delete(request, repository):
    """Delete one tag; its image and the image's other tags stay."""
    tag = references.check_tag(request.POST.get("tag", ""))
    digest = request.POST.get("digest", "")
    if digest:
        references.check_digest(digest)
    context = {"repository": repository, "tag": tag, "digest": digest, "back": _back(request)}
    if request.POST.get("confirm") != CONFIRM:
        context["held_note"] = recycle_bin.held_note()
        plans, context["live_error"] = _live_plans(repository, [tag])
        plan = plans.get(tag)
        context["plan"] = plan
        context["siblings"] = (
            list(plan.siblings) if plan else _indexed_siblings(repository, tag, digest)
        )
        return render(request, "registry_admin/deletes/confirm_tag.html", context)
    target = deletes.TagToDelete(repository, tag, expected_digest=digest)
    outcomes = deletes.delete_tags(request.user.get_username(), [target])
    return _results(request, context, outcomes, title=f"Delete {repository}:{tag}")


@_delete_view
def image_delete(request, repository):
    """Delete an image by digest: every tag on it goes too, and the confirmation lists them."""
    digest = references.check_digest(request.POST.get("digest", ""))
    context = {"repository": repository, "digest": digest, "back": _back(request)}
    try:
        tags = deletes.tags_pointing_at(repository, digest)
        context["referrers"] = deletes.referrers_pointing_at(repository, digest)
    except registry.RegistryError as exc:
        return _failed(request, context, exc, "registry_admin/deletes/confirm_image.html")
    context["tags"] = tags
    confirmed = sorted(set(request.POST.getlist("confirmed_tag")))
    if request.POST.get("confirm") != CONFIRM or confirmed != tags:
        context["changed"] = request.POST.get("confirm") == CONFIRM
        return render(request, "registry_admin/deletes/confirm_image.html", context)
    try:
        deletes.delete_image(request.user.get_username(), repository, digest, confirmed_tags=tags)
    except registry.RegistryError as exc:
        return _failed(request, context, exc, "registry_admin/deletes/confirm_image.html")
    outcomes = [
        deletes.TagOutcome(repository, tag, deletes.DELETED, "Deleted with the image.", digest)
        for tag in tags
    ]
    return _results(request, context, outcomes, title=f"Delete image {repository}@{digest}")


@_delete_view
def tags_bulk_delete(request, repository):
    """Delete the tags selected on the repository page, each alone, with one result per tag."""
    tags = _selected_tags(request)
    context = {"repository": repository, "tags": tags, "back": _back(request)}
    if request.POST.get("confirm") != CONFIRM:
        context["held_note"] = recycle_bin.held_note()
        known = dict(
            Tag.objects.filter(repository__name=repository, name__in=tags).values_list(
                "name", "digest"
            )
        )
        plans, context["live_error"] = _live_plans(repository, tags)
        context["rows"] = [(tag, known.get(tag, ""), plans.get(tag)) for tag in tags]
        context["reclaimable_bytes"] = sum(p.reclaimable_bytes for p in plans.values())
        return render(request, "registry_admin/deletes/confirm_bulk.html", context)
    expected = _expected_digests(request)
    targets = [
        deletes.TagToDelete(repository, tag, expected.get(tag, ""), bin_reason="bulk")
        for tag in tags
    ]
    outcomes = deletes.delete_tags(request.user.get_username(), targets)
    return _results(request, context, outcomes, title=f"Delete {len(tags)} tags of {repository}")


def _selected_tags(request):
    tags = list(dict.fromkeys(request.POST.getlist("tag")))
    if not tags:
        raise references.InvalidReferenceError("Select at least one tag to delete.")
    if len(tags) > MAX_BULK_TAGS:
        raise references.InvalidReferenceError(
            f"Select at most {MAX_BULK_TAGS} tags at once ({len(tags)} selected)."
        )
    for tag in tags:
        references.check_tag(tag)
    return tags


def _expected_digests(request):
    """`expect` fields are `TAG@DIGEST` pairs from the confirmation page; bad ones are dropped."""
    expected = {}
    for pair in request.POST.getlist("expect"):
        tag, _, digest = pair.partition("@")
        if references.is_valid_tag(tag) and references.is_valid_digest(digest):
            expected[tag] = digest
    return expected


def _live_plans(repository, tags):
    """({tag: deletes.TagPlan}, error text): how each tag would go, asked of the registry now."""
    try:
        live = deletes.LiveRepository.resolve(repository)
        return {plan.tag: plan for plan in deletes.plan_tags(live, tags)}, ""
    except registry.RegistryError as exc:
        return {}, str(exc)


def _indexed_siblings(repository, tag, digest):
    """Other tags the index has on the same digest: shown as staying."""
    if not digest:
        return []
    return list(
        Tag.objects.filter(repository__name=repository, digest=digest)
        .exclude(name=tag)
        .order_by("name")
        .values_list("name", flat=True)
    )


def _back(request):
    """Where "Back" goes: the page the Delete button was on, if it is one of ours."""
    back = request.POST.get("next", "")
    if back and url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        return back
    return reverse("registry_admin:repositories")


def _refused(request, exc):
    return render(
        request,
        "registry_admin/deletes/refused.html",
        {"error": str(exc), "back": _back(request)},
        status=400,
    )


def _failed(request, context, exc, template):
    logger.warning("delete in %s failed: %s", context.get("repository"), exc)
    context["error"] = str(exc)
    context["deletes_disabled"] = isinstance(exc, registry.RegistryDeleteUnsupported)
    return render(request, template, context)


def _results(request, context, outcomes, title):
    """The per-tag results, and what it takes to get the space back (the storage feature's
    guidance, with the bytes its last scan found reclaimable)."""
    context.update(
        title=title,
        outcomes=outcomes,
        deleted_count=sum(1 for o in outcomes if o.ok),
        failed_count=sum(1 for o in outcomes if not o.ok),
        deletes_disabled=any(o.error_type == "RegistryDeleteUnsupported" for o in outcomes),
        deletes_disabled_message=registry.RegistryClient.DELETES_DISABLED_MESSAGE,
        scan_kind=JobKind.STORAGE_SCAN,
        scan_run=worker.latest_run(JobKind.STORAGE_SCAN),
        **usage.gc_guidance_context(),
    )
    return render(request, "registry_admin/deletes/results.html", context)


@_delete_view
def repository_delete_view(request, repository):
    """Delete a whole repository: the first POST shows what goes (tags, images, bytes, asked of
    the registry and its storage now); the second needs `confirm=yes` and the name typed in
    `typed_name`, and asks the worker for the delete (job `delete_repository`: the worker is
    what may write to the registry's storage), whose progress the result page follows."""
    context = {
        "repository": repository,
        "back": _back(request),
        "held_note": recycle_bin.held_note(),
    }
    template = "registry_admin/deletes/confirm_repository.html"
    try:
        context["plan"] = repository_delete.plan(repository)
    except (repository_delete.RepositoryDeleteError, registry.RegistryError, StorageError) as exc:
        return _failed(request, context, exc, template)
    if request.POST.get("confirm") != CONFIRM:
        return render(request, template, context)
    if request.POST.get("typed_name", "") != repository:
        context["typed_error"] = (
            "Type the repository's name exactly as shown to confirm. Nothing was deleted."
        )
        return render(request, template, context, status=400)
    run = worker.request_run(
        JobKind.DELETE_REPOSITORY, user=request.user, options={"repository": repository}
    )
    # Redirected, so the progress widget's reload when the run ends repeats no POST.
    return redirect(f"{reverse('registry_admin:repository-delete-run')}?run={run.pk}")


@require_GET
@require(DELETE_IMAGES)
@never_cache
def repository_delete_run(request):
    """One repository delete run: following it while it runs, its outcome once finished."""
    run = None
    if request.GET.get("run", "").isdigit() and len(request.GET["run"]) < 19:
        run = Run.objects.filter(pk=int(request.GET["run"]), kind=JobKind.DELETE_REPOSITORY).first()
    if run is None:
        return _refused(request, "No such repository delete.")
    context = {
        "run": run,
        "kind": JobKind.DELETE_REPOSITORY,
        "repository": str((run.options or {}).get("repository", "")),
        "result": run.result or {},
        **usage.gc_guidance_context(),
    }
    return render(request, "registry_admin/deletes/repository_result.html", context)
