"""/api/v1/ endpoints: thin over browse.py, image_details.py, deletes.py, the audit log's filter
form and worker.py, with the same checks and audit rows as the pages (the actor is the token's
owner)."""

import re

from django.http import StreamingHttpResponse
from django.utils.cache import patch_cache_control
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import (
    audit_export,
    browse,
    deletes,
    image_details,
    references,
    registry,
    untagged,
    worker,
)
from ..forms.audit import AuditFilterForm
from ..models import AuditEvent, JobKind, Repository, Tag
from ..models.audit import encode_cursor
from ..views.runs import ANY_RUN
from . import serializers as s
from .problems import PROBLEM_TYPE, Problem

PROBLEM = s.ProblemSerializer


def problems(*codes):
    """The problem answers an operation documents, besides the ones every operation has."""
    described = {
        400: "Malformed parameters or body.",
        401: "No token, or not a valid one.",
        403: "The token lacks the scope this needs.",
        404: "Not found.",
        409: "Conflict: nothing was changed.",
        413: "Body too large.",
        429: "Too many requests for this token (Retry-After says when to retry).",
        502: "The registry failed or refused the portal.",
        503: "The registry cannot be reached.",
    }
    return {
        (code, PROBLEM_TYPE): OpenApiResponse(PROBLEM, description=described[code])
        for code in sorted({400, 401, 403, 429, *codes})
    }


REPOSITORY = OpenApiParameter(
    "repository",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="Repository name; may contain slashes (team/app): `/-/` ends it.",
)
TAG = OpenApiParameter("tag", OpenApiTypes.STR, OpenApiParameter.PATH)


class ApiView(APIView):
    """Bearer tokens only (no session: a page's cookie does not reach the API, so no CSRF), the
    scope per method in `scopes`, never cached."""

    scopes = {"GET": "read"}
    # No OPTIONS metadata nor HEAD: each method the document does not list is a 405.
    http_method_names = ["get", "post", "delete"]

    @classmethod
    def as_view(cls, **initkwargs):
        view = super().as_view(**initkwargs)
        # Django's LoginRequiredMiddleware would send a script to the login page.
        view.login_required = False
        return view

    # Query parameters each method reads; any other is refused (400), so a misspelt
    # `expected_digest` cannot turn a checked delete into an unchecked one.
    parameters = {}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        unknown = sorted(set(request.query_params) - self.parameters.get(request.method, set()))
        if unknown:
            raise ValidationError({name[:64]: ["Unknown parameter."] for name in unknown[:20]})

    def scope_for(self, method):
        return self.scopes.get(method, "admin")

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        patch_cache_control(response, private=True, no_store=True)
        return response

    @staticmethod
    def query(serializer_class, request):
        serializer = serializer_class(data=request.query_params)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


def _repository_or_404(name):
    if not references.is_valid_repository(name):
        raise Problem(400, "bad-repository", "Not a valid repository name.")
    repository = Repository.objects.filter(name=name).first()
    if repository is None:
        raise Problem(404, "not-found", f"The index has no repository {name}.")
    return repository


def _check_tag(tag):
    if not references.is_valid_tag(tag):
        raise Problem(400, "bad-tag", "Not a valid tag.")
    return tag


class RepositoryList(ApiView):
    parameters = {"GET": set(s.RepositoryQuery().fields)}

    @extend_schema(
        operation_id="repositories_list",
        parameters=[s.RepositoryQuery],
        responses={200: s.RepositoryPageSerializer, **problems()},
    )
    def get(self, request):
        """Repositories from the index: search, sort, cursor paging (as the Repositories page)."""
        query = self.query(s.RepositoryQuery, request)
        page = browse.repository_page(
            query["q"],
            query["sort"],
            query["empty"],
            after=query["cursor"] or None,
            per_page=query["limit"],
        )
        return Response(
            s.RepositoryPageSerializer(
                {
                    "results": page.rows,
                    "next_cursor": page.next_cursor or None,
                    "matches": page.matches,
                }
            ).data
        )


class TagList(ApiView):
    parameters = {"GET": set(s.TagQuery().fields)}

    @extend_schema(
        operation_id="tags_list",
        parameters=[REPOSITORY, s.TagQuery],
        responses={200: s.TagPageSerializer, **problems(404)},
    )
    def get(self, request, repository):
        """One repository's tags from the index, filtered and sorted as on its page."""
        repo = _repository_or_404(repository)
        query = self.query(s.TagQuery, request)
        page = browse.tag_page(
            repo,
            query["sort"],
            query["q"],
            query["page"],
            query["per_page"],
            show_referrers=query["referrers"],
        )
        asked_beyond = query["page"] > page.paginator.num_pages
        rows = [] if asked_beyond else page.object_list
        return Response(
            s.TagPageSerializer(
                {
                    "results": [_tag_row(row) for row in rows],
                    "page": query["page"],
                    "pages": page.paginator.num_pages,
                    "count": page.paginator.count,
                    "next_page": page.next_page_number()
                    if page.has_next() and not asked_beyond
                    else None,
                }
            ).data
        )


def _tag_row(row):
    manifest = row.manifest
    return {
        "name": row.tag.name,
        "digest": row.tag.digest,
        "size": manifest.size if manifest else None,
        "created": manifest.created if manifest else None,
        "pushed_at": row.tag.pushed_at,
        "platforms": manifest.platform_labels if manifest else [],
        "siblings": row.siblings,
    }


class TagDetail(ApiView):
    scopes = {"GET": "read", "DELETE": "delete"}
    parameters = {"DELETE": set(s.DeleteQuery().fields)}

    @extend_schema(
        operation_id="tag_retrieve",
        parameters=[REPOSITORY, TAG],
        responses={200: s.TagDetailSerializer, **problems(404, 503)},
    )
    def get(self, request, repository, tag):
        """A tag read live from the registry; from the index when the registry cannot answer."""
        if not references.is_valid_repository(repository):
            raise Problem(400, "bad-repository", "Not a valid repository name.")
        _check_tag(tag)
        try:
            image = image_details.read_live_image(repository, tag)
            fields, digest, source, error = image.details, image.digest, "registry", ""
        except registry.RegistryNotFound:
            raise Problem(404, "not-found", f"The registry has no {repository}:{tag}.") from None
        except registry.RegistryError as exc:
            indexed = (
                Tag.objects.filter(repository__name=repository, name=tag)
                .select_related("manifest")
                .first()
            )
            if indexed is None or indexed.manifest is None:
                raise Problem(503, "registry-unavailable", str(exc)) from None
            manifest = indexed.manifest
            fields = {f: getattr(manifest, f) for f in _DETAIL_FIELDS}
            digest, source, error = indexed.digest, "index", str(exc)
        answer = {f: fields.get(f) for f in _DETAIL_FIELDS}
        answer |= {
            "repository": repository,
            "tag": tag,
            "digest": digest,
            "source": source,
            "error": error,
            "media_type": answer["media_type"] or "",
            "is_index": bool(answer["is_index"]),
            "platforms": answer["platforms"] or [],
            "layers": answer["layers"] or [],
            "labels": answer["labels"] or {},
        }
        return Response(s.TagDetailSerializer(answer).data)

    @extend_schema(
        operation_id="tag_delete",
        parameters=[REPOSITORY, TAG, s.DeleteQuery],
        responses={200: s.DeleteOutcomeSerializer, **problems(404, 409, 502, 503)},
    )
    def delete(self, request, repository, tag):
        """Delete one tag as the pages do: its siblings stay; the last tag takes its image (into
        the recycle bin). With `expected_digest`, a tag pushed again meanwhile is kept (409)."""
        if not references.is_valid_repository(repository):
            raise Problem(400, "bad-repository", "Not a valid repository name.")
        _check_tag(tag)
        query = self.query(s.DeleteQuery, request)
        target = deletes.TagToDelete(repository, tag, expected_digest=query["expected_digest"])
        outcome = deletes.delete_tags(request.user.get_username(), [target])[0]
        if outcome.state == deletes.DELETED:
            return Response(s.DeleteOutcomeSerializer(outcome).data)
        if outcome.state == deletes.ALREADY_GONE:
            raise Problem(404, "not-found", outcome.message)
        status_code, code = _FAILURES.get(outcome.error_type, (502, "registry-failed"))
        raise Problem(status_code, code, outcome.message)


_DETAIL_FIELDS = (
    "media_type",
    "size",
    "created",
    "is_index",
    "platforms",
    "layers",
    "labels",
)
# A failed delete's RegistryError class: the answer's status and problem type.
_FAILURES = {
    "RegistryTagMoved": (409, "tag-moved"),
    "RegistryDeleteUnsupported": (409, "deletes-disabled"),
    "RegistryUnreachable": (503, "registry-unavailable"),
    "RegistryTimeout": (503, "registry-unavailable"),
    "RegistryUnauthorized": (502, "registry-refused-portal"),
    "RegistryDeleteIncomplete": (502, "delete-incomplete"),
}


class BulkDelete(ApiView):
    scopes = {"POST": "delete"}

    @extend_schema(
        operation_id="tags_bulk_delete",
        parameters=[REPOSITORY],
        request=s.BulkDeleteRequest,
        responses={200: s.BulkDeleteResultSerializer, **problems(413)},
    )
    def post(self, request, repository):
        """Delete several tags of one repository, each alone, with one result per tag (as the
        repository page's bulk delete). A failed tag does not stop the others, except when the
        registry cannot be reached or refuses deletes: the rest are `not attempted`."""
        if not references.is_valid_repository(repository):
            raise Problem(400, "bad-repository", "Not a valid repository name.")
        body = s.BulkDeleteRequest(data=request.data)
        body.is_valid(raise_exception=True)
        targets = [
            deletes.TagToDelete(repository, item["tag"], item["expected_digest"], bin_reason="bulk")
            for item in body.validated_data["tags"]
        ]
        outcomes = deletes.delete_tags(request.user.get_username(), targets)
        return Response(
            s.BulkDeleteResultSerializer(
                {
                    "results": outcomes,
                    "deleted": sum(1 for o in outcomes if o.ok),
                    "failed": sum(1 for o in outcomes if not o.ok),
                }
            ).data
        )


AUDIT_PAGE_SIZE = 50
# Printable text: the filters refuse control characters, as the page's do.
PRINTABLE = r"^[^\u0000-\u001f\u007f]*$"


def _text_parameter(name, description, max_length=255):
    schema = {"type": "string", "maxLength": max_length, "pattern": PRINTABLE}
    return OpenApiParameter(name, schema, description=description)


_AUDIT_PARAMETERS = [
    _text_parameter("q", "Text in names, digests, ids, addresses.", 200),
    _text_parameter("action", "Exact action (push, pull, tag.deleted, api.refused, ...).", 64),
    OpenApiParameter("kind", OpenApiTypes.STR, enum=AuditEvent.Kind.values),
    OpenApiParameter("source", OpenApiTypes.STR, enum=AuditEvent.Source.values),
    _text_parameter("repository", "Repository name prefix."),
    _text_parameter("tag", "Exact tag."),
    _text_parameter("actor", "Exact user."),
    _text_parameter("addr", "Client address."),
    _text_parameter("request", "Request id."),
    OpenApiParameter("since", OpenApiTypes.DATE, description="First day."),
    OpenApiParameter("until", OpenApiTypes.DATE, description="Last day."),
    _text_parameter("cursor", "`next_cursor` of the previous page.", 40),
    OpenApiParameter("all", OpenApiTypes.BOOL, description="Blob-level and HEAD events too."),
]


class AuditEventList(ApiView):
    parameters = {"GET": {p.name for p in _AUDIT_PARAMETERS}}

    @extend_schema(
        operation_id="audit_events_list",
        parameters=_AUDIT_PARAMETERS,
        responses={200: s.AuditPageSerializer, **problems()},
    )
    def get(self, request):
        """The audit log, newest first, with the page's filters; 50 events a page."""
        form = _audit_form(request)
        events = form.filtered().defer("raw")
        if form.cleaned_data.get("after"):
            events = events.older_than(form.cleaned_data["after"])
        rows = list(events.newest_first()[: AUDIT_PAGE_SIZE + 1])
        more = len(rows) > AUDIT_PAGE_SIZE
        rows = rows[:AUDIT_PAGE_SIZE]
        return Response(
            s.AuditPageSerializer(
                {"results": rows, "next_cursor": encode_cursor(rows[-1]) if more else None}
            ).data
        )


class AuditExport(ApiView):
    parameters = {"GET": {p.name for p in _AUDIT_PARAMETERS} - {"cursor"}}

    @extend_schema(
        operation_id="audit_events_export",
        parameters=[p for p in _AUDIT_PARAMETERS if p.name != "cursor"],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The CSV file."),
            **problems(),
        },
    )
    def get(self, request):
        """Every event the filters match as CSV (the Audit log page's export: same columns,
        cells a spreadsheet would run as formulas quoted, at most AUDIT_EXPORT_MAX_ROWS)."""
        form = _audit_form(request)
        events = form.filtered(whole=True)
        too_many = audit_export.too_many(events)
        if too_many:
            raise Problem(400, "export-too-large", too_many)
        response = StreamingHttpResponse(
            audit_export.csv_lines(audit_export.every_event(events)),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = f'attachment; filename="{audit_export.file_name()}"'
        return response


def _audit_form(request):
    """The page's filter form over the API's parameters (checked as the API documents them)."""
    params = request.query_params.copy()
    # The form strips surrounding whitespace first, so "x\n" would pass it as "x".
    bad = [k for k, v in params.items() if any(ord(c) < 32 or ord(c) == 127 for c in v)]
    if bad:
        raise ValidationError({k: ["Remove the control characters."] for k in bad[:20]})
    # The form also takes the page's other date spellings; the API documents one.
    for name in ("since", "until"):
        if name in params and not _ISO_DATE.fullmatch(params[name]):
            raise ValidationError({name: ["Write the day as YYYY-MM-DD."]})
    # The page's checkbox reads any text as "on"; the API documents a boolean.
    if "all" in params and params["all"].lower() not in _BOOLEANS:
        raise ValidationError({"all": ["Write true or false."]})
    if "all" in params and params["all"].lower() in ("false", "0"):
        params.pop("all")
    params.pop("before", None)
    if "cursor" in params:
        params["after"] = params.pop("cursor")[-1]
    form = AuditFilterForm(params)
    if not form.is_valid():
        raise _form_errors(form)
    return form


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_BOOLEANS = ("true", "false", "1", "0")


def _form_errors(form):
    errors = {("cursor" if k in ("after", "__all__") else k): v for k, v in form.errors.items()}
    return ValidationError(errors)


class UntaggedPrune(ApiView):
    scopes = {"POST": "delete"}

    @extend_schema(
        operation_id="untagged_prune",
        request=s.PruneRequest,
        responses={200: s.PrunePlanSerializer, 202: s.PrunePlanSerializer, **problems(413)},
    )
    def post(self, request):
        """Untagged manifests (the Storage page's cleanup): the dry run lists what the latest
        scan found; the real run asks the worker for the prune job (202), which re-checks each
        manifest against the registry right before removing it."""
        body = s.PruneRequest(data=request.data)
        body.is_valid(raise_exception=True)
        pattern = body.validated_data["repository"]
        rows = untagged.latest_rows(pattern)
        answer = {
            "dry_run": body.validated_data["dry_run"],
            "results": rows[:1000] if body.validated_data["dry_run"] else [],
            "total": len(rows),
            "reclaimable_bytes": sum(row.reclaimable_bytes for row in rows),
            "run": None,
        }
        if body.validated_data["dry_run"]:
            return Response(s.PrunePlanSerializer(answer).data)
        answer["run"] = worker.request_run(
            JobKind.PRUNE_UNTAGGED, user=request.user, options={"repository": pattern}
        )
        return Response(s.PrunePlanSerializer(answer).data, status=status.HTTP_202_ACCEPTED)


KIND = OpenApiParameter("kind", OpenApiTypes.STR, OpenApiParameter.PATH, enum=JobKind.values)


class RunStatus(ApiView):
    scopes = {"GET": "read", "POST": "admin"}

    @extend_schema(
        operation_id="run_retrieve",
        parameters=[KIND],
        responses={200: s.LatestRunSerializer, **problems(404)},
    )
    def get(self, request, kind):
        """The latest run of a job kind, with its progress (as the pages' progress widget)."""
        _kind_or_404(kind)
        return Response(s.LatestRunSerializer({"run": worker.latest_run(kind)}).data)

    @extend_schema(
        operation_id="run_request",
        parameters=[KIND],
        request=s.RunRequest,
        responses={202: s.LatestRunSerializer, **problems(404, 409, 413)},
    )
    def post(self, request, kind):
        """Ask the worker for a run (the pages' *Refresh now* / *Scan now*); a pending or
        running run with the same options is answered instead of a new one. Kinds that delete
        start only as dry runs here."""
        _kind_or_404(kind)
        body = s.RunRequest(data=request.data)
        body.is_valid(raise_exception=True)
        if kind == JobKind.DELETE_REPOSITORY:
            # Its run needs a repository and a typed confirmation: the repository's page.
            raise Problem(
                409,
                "not-startable-here",
                "A repository delete starts from the repository's page or manage.py "
                "delete_repository (its dry run too).",
            )
        options = None
        if kind not in ANY_RUN:
            if not body.validated_data["dry_run"]:
                raise Problem(
                    409,
                    "dry-run-only",
                    f"{kind} deletes images: start its real run from its page; here only a dry "
                    "run.",
                )
            options = {"dry_run": True}
        run = worker.request_run(kind, user=request.user, options=options)
        return Response(s.LatestRunSerializer({"run": run}).data, status=status.HTTP_202_ACCEPTED)


def _kind_or_404(kind):
    if kind not in worker.JOBS:
        raise Problem(404, "not-found", "No such job kind.")
