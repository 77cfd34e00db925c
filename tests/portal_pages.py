"""A portal seeded with real data, and every one of its URL patterns with real arguments.

Shared by the fault test with the registry down and the hostile input sweep. The seed comes from
a real registry (pushed images, a reconcile, a storage scan), real captured notification
payloads posted to the webhook, and the portal's own forms; nothing is faked into the tables.

The registry's own notifications go to an `EventSink`, not to the portal: a page view that makes
the registry emit pull events must not change the portal's database behind a test's back.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from django.core.cache import cache
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from registry_admin import worker
from registry_admin.models import AuditEvent, RetentionRule
from registry_admin.tests.harness import (
    NOTIFICATIONS_TOKEN,
    REPO_ROOT,
    RunningRegistry,
    registry_settings,
    start_registry,
)
from registry_admin.tests.images import build_image, build_index

from .portal_process import EventSink

PAYLOADS = REPO_ROOT / "registry_admin" / "tests" / "payloads"
EVENTS_URL = "/api/registry/events"
REGISTRY_USER = "seed-user"
REGISTRY_USER_PASSWORD = "seed-user-password-1"


@dataclass
class Seed:
    registry: RunningRegistry
    sink: EventSink
    repository: str
    tag: str
    sibling_tag: str
    digest: str
    index_repository: str
    audit_pk: int
    rule_pk: int
    registry_user: str

    def close(self):
        self.registry.stop()
        self.sink.close()


def start_seed_registry(root):
    """A real registry of our own whose notifications go to a sink (never to the portal)."""
    sink = EventSink()
    sink_base = sink.url.rsplit("/", 1)[0]
    return start_registry(Path(root), sink_base), sink


def post_payloads(client):
    """Every captured 2.8.2 notification payload, through the webhook as the registry sends it."""
    for path in sorted(PAYLOADS.glob("*.json")):
        body = json.loads(path.read_text())
        if "events" not in body:
            continue  # request-headers.json describes headers, not a body
        response = client.post(
            EVENTS_URL,
            data=json.dumps(body),
            content_type="application/vnd.docker.distribution.events.v1+json",
            headers={"authorization": f"Bearer {NOTIFICATIONS_TOKEN}"},
        )
        assert response.status_code == 200, (path.name, response.content)


def seed_portal(root, settings, admin_client):
    """Fill the portal: images in a real registry, the index reconciled from it, a storage
    snapshot, online collector runs, audit events, a rejected delivery, a refused one, a
    registry user, a rule."""
    registry, sink = start_seed_registry(root)
    registry_settings(settings, registry)
    pusher = registry.pusher()
    repository, index_repository = "seed/app", "seed/multi"
    image = build_image(seed="seed-app-v1", labels={"org.opencontainers.image.title": "seed"})
    digest = pusher.push_image(repository, "v1", image)
    pusher.put_manifest(repository, "v1-alias", image.manifest, image.media_type)
    pusher.push_image(repository, "v2", build_image(seed="seed-app-v2"))
    pusher.push_image(index_repository, "latest", build_index())
    pusher.push_image("team/tool", "1.0", build_image(seed="team-tool"))

    for kind in ("sync", "details", "storage_scan"):
        run = worker.run_now(kind)
        assert run.state == run.State.DONE, (kind, run.error)
    # The online collector's dry run and a real run, for the Storage page's figures: everything
    # is younger than the grace period, so nothing moves.
    settings.GC_SETTLE_SECONDS = 0
    for dry_run in (True, False):
        run = worker.run_now("online_gc", options={"dry_run": dry_run})
        assert run.state == run.State.DONE, ("online_gc", run.error)

    post_payloads(admin_client)
    rejected = admin_client.post(
        EVENTS_URL,
        data=b"{not json",
        content_type="application/json",
        headers={"authorization": f"Bearer {NOTIFICATIONS_TOKEN}"},
    )
    assert rejected.status_code == 200
    refused = admin_client.post(EVENTS_URL, data=b"{}", content_type="application/json")
    assert refused.status_code == 401

    created = admin_client.post(
        reverse("registry_admin:user-create"),
        {
            "username": REGISTRY_USER,
            "mode": "typed",
            "password1": REGISTRY_USER_PASSWORD,
            "password2": REGISTRY_USER_PASSWORD,
        },
    )
    assert created.status_code == 302, created.content.decode()[-2000:]
    # Keeps one tag of seed/app and `latest`: the plan deletes the two others, so the pages
    # offer "Run the rules now" and its confirmation.
    rule = RetentionRule.objects.create(
        name="seed rule", repository_pattern="seed/*", keep_latest=1, keep_regex="latest"
    )
    cache.clear()
    return Seed(
        registry=registry,
        sink=sink,
        repository=repository,
        tag="v1",
        sibling_tag="v1-alias",
        digest=digest,
        index_repository=index_repository,
        audit_pk=AuditEvent.objects.filter(source="registry").order_by("pk").first().pk,
        rule_pk=rule.pk,
        registry_user=REGISTRY_USER,
    )


# --- URL patterns ------------------------------------------------------------------------------


def url_pattern_names():
    """Every named URL pattern of the portal (the app's and the project's), namespaced."""
    names = set()

    def walk(patterns, namespace):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if entry.namespace == "admin":
                    names.add("admin:index")  # Django's own admin: its index stands for it
                    continue
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                walk(entry.url_patterns, inner)
            elif isinstance(entry, URLPattern) and entry.name:
                names.add(namespace + entry.name)

    walk(get_resolver().url_patterns, "")
    return names


@dataclass(frozen=True)
class Request:
    """One request a page test makes: GET a page, or POST what its form (or a client) sends."""

    name: str
    method: str
    path: str
    data: dict | None = None
    talks_to_registry: bool = False

    def send(self, client):
        if self.method == "GET":
            return client.get(self.path)
        return client.post(self.path, self.data or {})


def page_requests(seed):
    """A request for every URL pattern, with arguments from the seeded index and tables.

    `talks_to_registry` marks the requests whose answer depends on a live registry call (and
    so must say so when the registry is down)."""
    app = "registry_admin:"
    repo, tag, digest = seed.repository, seed.tag, seed.digest

    def url(name, *args):
        return reverse(app + name, args=args)

    delete_back = url("repository", repo)
    requests = [
        Request("healthz", "GET", reverse("healthz")),
        # Pings the registry, but says so only as oyster_registry_up 0 (no page to explain on).
        Request("metrics", "GET", reverse("metrics")),
        Request("login", "GET", reverse("login")),
        # Off unless OIDC_ISSUER is set (a 404 page then); tests/test_browser_oidc.py sends
        # hostile callbacks to a configured portal.
        Request("oidc-start", "GET", reverse("oidc-start") + "?next=/audit/"),
        Request("oidc-callback", "GET", reverse("oidc-callback") + "?code=c&state=s"),
        Request("admin:index", "GET", reverse("admin:index")),
        Request(app + "dashboard", "GET", url("dashboard"), talks_to_registry=True),
        Request(app + "repositories", "GET", url("repositories"), talks_to_registry=True),
        Request(app + "repository", "GET", url("repository", repo), talks_to_registry=True),
        Request(app + "tag", "GET", url("tag", repo, tag), talks_to_registry=True),
        Request(app + "manifest", "GET", url("manifest", repo, digest), talks_to_registry=True),
        Request(app + "users", "GET", url("users")),
        Request(app + "user-create", "GET", url("user-create")),
        Request(app + "user-password", "GET", f"{url('user-password')}?name={seed.registry_user}"),
        Request(app + "user-delete", "GET", f"{url('user-delete')}?name={seed.registry_user}"),
        Request(app + "user-service-repair", "POST", url("user-service-repair")),
        Request(app + "storage", "GET", url("storage")),
        Request(app + "quotas", "GET", url("quotas")),
        Request(app + "quota-save", "POST", url("quota-save"), {"pattern": "team/*", "size": "x"}),
        Request(app + "quota-remove", "POST", url("quota-remove"), {"pattern": "none/*"}),
        Request(app + "recycle-bin", "GET", url("recycle-bin")),
        Request(app + "recycle-bin-restore", "POST", url("recycle-bin-restore"), {"item": "1"}),
        Request(app + "unused", "GET", url("unused")),
        Request(app + "untagged-prune", "POST", url("untagged-prune"), {"repository": "*"}),
        Request(app + "garbage-collect", "POST", url("garbage-collect"), {"mode": "dry-run"}),
        Request(app + "online-collect", "POST", url("online-collect"), {"mode": "dry-run"}),
        Request(app + "audit", "GET", url("audit")),
        Request(app + "audit-event", "GET", url("audit-event", seed.audit_pk)),
        Request(app + "audit-export", "GET", url("audit-export")),
        Request(app + "audit-rejected", "GET", url("audit-rejected")),
        Request(app + "notification-settings", "GET", url("notification-settings")),
        Request(app + "event-hooks", "GET", url("event-hooks")),
        Request(app + "event-hook-save", "POST", url("event-hook-save"), {"name": "h", "url": "x"}),
        Request(app + "event-hook-remove", "POST", url("event-hook-remove"), {"name": "none"}),
        Request(app + "event-hook-test", "POST", url("event-hook-test"), {"name": "none"}),
        Request(app + "event-hook-retry", "POST", url("event-hook-retry"), {"delivery": "1"}),
        Request(app + "registry-events", "POST", url("registry-events")),
        Request(
            app + "tag-delete",
            "POST",
            url("tag-delete"),
            {"repository": repo, "tag": seed.sibling_tag, "digest": digest, "next": delete_back},
        ),
        Request(
            app + "image-delete",
            "POST",
            url("image-delete"),
            {"repository": repo, "digest": digest, "next": delete_back},
            talks_to_registry=True,
        ),
        Request(
            app + "tags-bulk-delete",
            "POST",
            url("tags-bulk-delete"),
            {"repository": repo, "tag": [tag, "v2"], "next": delete_back},
        ),
        Request(
            app + "repository-delete",
            "POST",
            url("repository-delete"),
            {"repository": repo, "next": delete_back},
            talks_to_registry=True,
        ),
        Request(app + "repository-delete-run", "GET", f"{url('repository-delete-run')}?run=1"),
        Request(app + "retention", "GET", url("retention")),
        Request(app + "retention-rule-create", "GET", url("retention-rule-create")),
        Request(app + "retention-rule-edit", "GET", url("retention-rule-edit", seed.rule_pk)),
        Request(app + "retention-rule-delete", "GET", url("retention-rule-delete", seed.rule_pk)),
        Request(app + "retention-run", "POST", url("retention-run")),
        Request(app + "run-request", "POST", url("run-request", "sync"), {"next": delete_back}),
        Request(app + "run-status", "GET", url("run-status", "sync")),
        Request(app + "token", "GET", f"{url('token')}?service=x&scope=repository:a/b:pull"),
        Request(app + "profile", "GET", url("profile")),
        Request(app + "profile-secret-create", "POST", url("profile-secret-create"), {"name": "a"}),
        Request(
            app + "profile-secret-revoke", "POST", url("profile-secret-revoke"), {"secret": "1"}
        ),
        Request(app + "access", "GET", f"{url('access')}?user=dev&repository={repo}"),
        Request(app + "access-rule-save", "POST", url("access-rule-save"), {"subject": "dev"}),
        Request(app + "access-rule-remove", "POST", url("access-rule-remove"), {}),
        Request(app + "access-group-save", "POST", url("access-group-save"), {"name": "a:b"}),
        Request(app + "access-robot-create", "POST", url("access-robot-create"), {"days": "0"}),
        Request(app + "access-robot-remove", "POST", url("access-robot-remove"), {}),
        Request(app + "api-tokens", "GET", url("api-tokens")),
        Request(app + "api-token-revoke", "POST", url("api-token-revoke"), {"prefix": "x"}),
        # The API ignores the page's session: these answer 401 (401 is in ALLOWED), except the
        # document and its reference page, which need no token.
        Request("api:schema", "GET", reverse("api:schema")),
        Request("api:docs", "GET", reverse("api:docs")),
        Request("api:repositories", "GET", reverse("api:repositories")),
        Request("api:tags", "GET", reverse("api:tags", args=[repo])),
        Request("api:tag", "GET", reverse("api:tag", args=[repo, tag])),
        Request("api:bulk-delete", "POST", reverse("api:bulk-delete", args=[repo]), {"tags": tag}),
        Request("api:audit-events", "GET", reverse("api:audit-events")),
        Request("api:run", "GET", reverse("api:run", args=["sync"])),
        Request("api:untagged-prune", "POST", reverse("api:untagged-prune"), {"dry_run": "1"}),
        Request("api:repository-delete", "POST", reverse("api:repository-delete", args=[repo])),
        Request("api:unused", "GET", reverse("api:unused")),
        Request("api:audit-export", "GET", reverse("api:audit-export")),
        Request("api:users", "GET", reverse("api:users")),
        Request("api:user", "GET", reverse("api:user", args=[seed.registry_user])),
        Request(
            "api:user-password", "POST", reverse("api:user-password", args=[seed.registry_user])
        ),
        Request("api:quotas", "GET", reverse("api:quotas")),
        Request("api:recycle-bin", "GET", reverse("api:recycle-bin")),
        Request("api:recycle-bin-restore", "POST", reverse("api:recycle-bin-restore", args=[1])),
        Request("api:storage", "GET", reverse("api:storage")),
        Request("api:access-rules", "GET", reverse("api:access-rules")),
        Request("api:access-groups", "GET", reverse("api:access-groups")),
        Request("api:robots", "GET", reverse("api:robots")),
        Request("api:robot", "GET", reverse("api:robot", args=["robot-x"])),
        Request("api:retention-rules", "GET", reverse("api:retention-rules")),
        Request("api:retention-rule", "GET", reverse("api:retention-rule", args=[seed.rule_pk])),
        Request("api:event-hooks", "GET", reverse("api:event-hooks")),
        Request("api:event-hook", "POST", reverse("api:event-hook", args=["none"])),
        Request("logout", "POST", reverse("logout")),  # last: it ends the session
    ]
    return requests


def confirmed(request):
    """The second POST of a confirmed delete (the one that calls the registry)."""
    data = dict(request.data, confirm="yes")
    if request.name.endswith("tags-bulk-delete"):
        data["expect"] = []
    return Request(request.name + " (confirmed)", "POST", request.path, data, True)
