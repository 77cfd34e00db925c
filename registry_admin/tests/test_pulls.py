"""Pull counters: what counts as a real pull, the live counters against a rebuild, the unused
report and its command, and the audit log hiding the portal's own reads."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from registry_admin import notifications, pulls, unused
from registry_admin.models import (
    AuditEvent,
    Manifest,
    PullCount,
    Repository,
    RepositoryStorage,
    StorageSnapshot,
    Tag,
)

from .factories import make_envelope, make_registry_event

pytestmark = pytest.mark.django_db

PAYLOADS = Path(__file__).parent / "payloads"
INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE = "application/vnd.oci.image.manifest.v1+json"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
CHILD_A = "sha256:" + "a" * 64
CHILD_B = "sha256:" + "b" * 64
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def event(
    method="GET",
    tag="v1",
    digest=D1,
    actor="bob",
    when=T0,
    repository="team/app",
    media_type=IMAGE,
    useragent="skopeo/1.9.3",
    addr="10.0.0.5:41000",
    references=None,
    kind="manifests",
    event_id=None,
):
    item = make_registry_event(
        event_id=event_id,
        action="pull",
        repository=repository,
        tag=tag,
        digest=digest,
        mediaType=media_type,
        url=f"http://127.0.0.1:5000/v2/{repository}/{kind}/{digest}",
        **({"references": references} if references else {}),
    )
    item["timestamp"] = when.isoformat().replace("+00:00", "Z")
    item["request"].update(method=method, useragent=useragent, addr=addr)
    item["actor"] = {"name": actor}
    return item


def deliver(*items):
    return notifications.record(notifications.parse_envelope(make_envelope(*items)))


def watched_since(when):
    """A registry event the portal received at `when`: the start of its watch (the receipt,
    not the event's own time, which anyone holding the token could backdate)."""
    (first,) = deliver(event(repository="other/x", when=when))
    AuditEvent.objects.filter(pk=first.pk).update(received_at=when)


def counts(scope, ref=None):
    rows = PullCount.objects.filter(scope=scope)
    if ref is not None:
        rows = rows.filter(ref=ref)
    return sum(rows.values_list("pulls", flat=True))


def test_a_get_by_tag_counts_for_the_tag_the_digest_and_the_repository():
    deliver(event())
    assert counts("t", "v1") == 1
    assert counts("d", D1) == 1
    assert counts("r") == 1
    row = PullCount.objects.get(scope="t")
    assert (row.repository, row.actor, row.day, row.last_pulled_at) == (
        "team/app",
        "bob",
        T0.date(),
        T0,
    )


def test_head_blobs_the_service_account_and_ignored_clients_do_not_count(settings):
    settings.REGISTRY_USERNAME = "oyster"
    settings.PULL_IGNORE_USERS = ["scanner"]
    settings.PULL_IGNORE_USER_AGENTS = ["trivy"]
    deliver(
        event(method="HEAD"),
        event(kind="blobs", media_type="application/octet-stream", tag=""),
        event(actor="oyster"),
        event(actor="scanner"),
        event(useragent="Trivy/0.50.1 (linux)"),
    )
    assert PullCount.objects.count() == 0
    assert AuditEvent.objects.count() == 5


def test_real_payloads_count_get_and_not_head():
    for name in ("pull-manifest-head.json", "pull-blob.json", "pull-blob-head.json"):
        notifications.record(notifications.parse_envelope((PAYLOADS / name).read_bytes()))
    assert PullCount.objects.count() == 0
    notifications.record(
        notifications.parse_envelope((PAYLOADS / "pull-manifest.json").read_bytes())
    )
    assert counts("t") == 1 and counts("d") == 1 and counts("r") == 1


def test_a_multi_platform_pull_counts_once_for_the_tag():
    refs = [{"mediaType": IMAGE, "digest": CHILD_A}, {"mediaType": IMAGE, "digest": CHILD_B}]
    deliver(
        event(media_type=INDEX, references=refs),
        event(tag="", digest=CHILD_A, when=T0 + timedelta(seconds=1)),
        event(tag="", digest=CHILD_B, when=T0 + timedelta(seconds=1)),
    )
    assert counts("t", "v1") == 1
    assert counts("r") == 1
    assert counts("d", D1) == 1
    assert counts("d", CHILD_A) == 0


def test_an_index_without_references_uses_the_platforms_the_index_read():
    Manifest.objects.create(
        digest=D1, media_type=INDEX, is_index=True, platforms=[{"digest": CHILD_A}]
    )
    deliver(event(media_type=INDEX), event(tag="", digest=CHILD_A))
    assert counts("r") == 1


def test_a_child_pulled_by_another_client_or_much_later_counts_on_its_own():
    refs = [{"mediaType": IMAGE, "digest": CHILD_A}]
    deliver(
        event(media_type=INDEX, references=refs),
        event(tag="", digest=CHILD_A, addr="10.0.0.9:1"),
        event(tag="", digest=CHILD_A, when=T0 + timedelta(hours=1)),
    )
    assert counts("r") == 3
    assert counts("d", CHILD_A) == 2


def test_a_head_of_a_tag_then_a_get_by_digest_counts_for_the_tag():
    """containerd and docker resolve the tag with a HEAD, then GET the manifest by digest."""
    deliver(
        event(method="HEAD", tag="v1"),
        event(tag="", when=T0 + timedelta(seconds=2)),
    )
    assert counts("t", "v1") == 1
    assert counts("d", D1) == 1
    assert counts("r") == 1


def test_a_pull_by_digest_alone_counts_for_the_digest_and_repository():
    deliver(event(tag=""))
    assert counts("t") == 0 and counts("d", D1) == 1 and counts("r") == 1


def test_redeliveries_count_once_and_the_rebuild_equals_the_live_counters(settings):
    settings.REGISTRY_USERNAME = "oyster"
    refs = [{"mediaType": IMAGE, "digest": CHILD_A}]
    stream = [
        event(),
        event(method="HEAD", tag="v2", digest=D2, when=T0 + timedelta(seconds=5)),
        event(tag="", digest=D2, when=T0 + timedelta(seconds=6), actor="bob"),
        event(media_type=INDEX, references=refs, tag="multi", when=T0 + timedelta(minutes=1)),
        event(tag="", digest=CHILD_A, when=T0 + timedelta(minutes=1, seconds=1)),
        event(actor="carol", when=T0 - timedelta(days=40)),
        event(actor="oyster", tag="", digest=D2),
        event(method="HEAD"),
    ]
    for item in stream:
        item["id"] = str(uuid.uuid4())
    for item in stream:
        deliver(item)
        deliver(item)  # a redelivery: stored once, counted once
    deliver(*stream[:3])
    live = pulls.snapshot_counters()
    # GET v1, GET by digest after HEAD v2, the index (not its child), carol's.
    assert counts("r") == 4
    assert counts("t", "v2") == 1
    PullCount.objects.all().update(pulls=99)
    out = StringIO()
    call_command("rebuild_pull_stats", stdout=out)
    assert pulls.snapshot_counters() == live
    assert "pull counters" in out.getvalue()


def test_stats_per_tag_and_repository_and_the_pullers():
    now = timezone.now()
    deliver(
        event(when=now - timedelta(days=1)),
        event(when=now - timedelta(days=2), actor="carol"),
        event(when=now - timedelta(days=45), actor="dave"),
    )
    tag = pulls.stats(pulls.Scope.TAG, "team/app", ["v1"])["v1"]
    assert tag.recent_pulls == 2
    assert tag.pullers == 3
    assert abs(tag.last_pulled_at - (now - timedelta(days=1))) < timedelta(seconds=1)
    repo = pulls.stats(pulls.Scope.REPOSITORY, repositories=["team/app"])["team/app"]
    assert repo.recent_pulls == 2
    assert [p.actor for p in pulls.pullers("team/app", "v1")] == ["bob", "carol", "dave"]


def test_the_default_audit_view_hides_the_portal_reads(settings, client):
    settings.REGISTRY_USERNAME = "oyster"
    deliver(event(actor="oyster", tag="", digest=D2), event(actor="bob"))
    assert AuditEvent.objects.manifest_level().count() == 1
    assert AuditEvent.objects.count() == 2


def _index(name, tag, digest, pushed, size=1000, layers=None, manifest_size=None):
    repository, _ = Repository.objects.get_or_create(name=name, defaults={"is_empty": False})
    manifest, _ = Manifest.objects.get_or_create(
        digest=digest,
        defaults={
            "media_type": IMAGE,
            "size": size,
            "manifest_size": manifest_size,
            "config_digest": digest.replace("sha256:", "sha256:c"[:7]) + "c",
            "layers": layers or [],
        },
    )
    return Tag.objects.create(
        repository=repository, name=tag, digest=digest, manifest=manifest, pushed_at=pushed
    )


def test_unused_report_statuses_bytes_and_costs(settings):
    settings.STORAGE_PRICE_PER_GB_MONTH = 0.5
    now = timezone.now()
    watch = now - timedelta(days=100)
    watched_since(watch)
    gib = 1024**3
    layer = {"digest": "sha256:" + "e" * 64, "size": gib, "media_type": "x"}
    shared = {"digest": "sha256:" + "f" * 64, "size": 7, "media_type": "x"}
    _index(
        "team/app",
        "old",
        D1,
        now - timedelta(days=60),
        size=gib + 7 + 10,
        layers=[layer, shared],
        manifest_size=581,
    )
    _index("team/app", "fresh", D2, now - timedelta(days=1), size=17, layers=[shared])
    _index("team/app", "ancient", "sha256:" + "3" * 64, now - timedelta(days=200))
    _index("team/app", "pulled", "sha256:" + "4" * 64, now - timedelta(days=90))
    deliver(event(tag="pulled", digest="sha256:" + "4" * 64, when=now - timedelta(days=2)))
    snapshot = StorageSnapshot.objects.create(
        backend="filesystem", total_bytes=1, blob_count=1, reclaimable_bytes=0, reclaimable_count=0
    )
    RepositoryStorage.objects.create(
        snapshot=snapshot,
        name="team/app",
        referenced_bytes=5 * gib,
        unique_bytes=2 * gib,
        shared_bytes=0,
        reclaimable_bytes=0,
        blob_count=3,
        manifest_count=3,
    )

    report = unused.unused_report(30, now=now)
    by_tag = {t.tag: t for t in report.tags}
    assert set(by_tag) == {"old", "ancient"}
    assert by_tag["old"].status == "unused"
    # Its layer, config and manifest; the shared layer frees nothing.
    assert by_tag["old"].unique_bytes == gib + 10 + 581
    assert by_tag["old"].monthly_cost == pytest.approx(0.5 * (gib + 10 + 581) / gib, rel=1e-6)
    assert by_tag["ancient"].status == "no_data"
    assert report.repositories == []  # fresh and pulled are in use

    everything = unused.unused_report(0, now=now).as_json()
    rows = {(t["repository"], t["tag"]): t for t in everything["tags"]}
    assert rows[("team/app", "pulled")]["last_pulled"] is not None
    assert rows[("team/app", "fresh")]["last_pulled"] is None
    assert rows[("team/app", "ancient")]["no_data_before"] == watch.astimezone(UTC).isoformat()
    repos = {r["repository"]: r for r in everything["repositories"]}
    assert repos["team/app"]["unique_bytes"] == 2 * gib
    assert repos["team/app"]["monthly_cost"] == pytest.approx(1.0)


def test_unused_command_json_and_text_and_bad_days():
    deliver(event(repository="team/app"))
    _index("team/app", "v1", D1, T0 - timedelta(days=1))
    out = StringIO()
    call_command("unused", "--days", "0", "--json", stdout=out)
    data = json.loads(out.getvalue())
    (tag,) = data["tags"]
    assert set(tag) >= {
        "repository",
        "tag",
        "last_pulled",
        "pushed",
        "unique_bytes",
        "monthly_cost",
    }
    assert tag["last_pulled"] == T0.isoformat()
    out = StringIO()
    call_command("unused", "--days", "0", stdout=out)
    assert "team/app:v1" in out.getvalue()
    for bad in ("-1", "999999"):
        with pytest.raises(CommandError):
            call_command("unused", "--days", bad, stdout=StringIO())


@pytest.fixture
def registry_down(settings):
    from django.core.cache import cache

    from .harness import free_port

    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    settings.REGISTRY_TIMEOUT = 1
    cache.clear()


def test_pages_show_and_sort_by_pulls(
    viewer_client, registry_down, django_capture_on_commit_callbacks
):
    now = timezone.now()
    _index("team/app", "old", D1, now - timedelta(days=3))
    _index("team/app", "new", D2, now - timedelta(days=2))
    _index("quiet/app", "v1", "sha256:" + "5" * 64, now - timedelta(days=2))
    # The list's last-pull column is kept once the applying transaction commits.
    with django_capture_on_commit_callbacks(execute=True):
        deliver(
            event(tag="old", when=now - timedelta(hours=1), actor="carol"),
            event(tag="old", when=now - timedelta(hours=2)),
            event(tag="new", digest=D2, when=now - timedelta(hours=5)),
        )
    page = viewer_client.get("/repositories/?sort=pulled")
    text = page.content.decode()
    assert page.status_code == 200
    assert "Last pulled" in text and "Pulls (30 d)" in text
    assert text.index("team/app") < text.index("quiet/app")
    by_name = viewer_client.get("/repositories/?sort=name").content.decode()
    assert by_name.index("quiet/app") < by_name.index("team/app")

    detail = viewer_client.get("/repositories/team/app/?sort=pulls").content.decode()
    assert detail.index('data-tag="old"') < detail.index('data-tag="new"')
    assert "by 2 users" in detail
    by_last = viewer_client.get("/repositories/team/app/?sort=pulled").content.decode()
    assert by_last.index('data-tag="old"') < by_last.index('data-tag="new"')

    tag = viewer_client.get("/repositories/team/app/-/tags/old/").content.decode()
    assert "Who pulls it" in tag
    assert tag.index(">carol<") < tag.index(">bob<")


def test_unused_page_for_viewers_and_bad_days(viewer_client, client):
    now = timezone.now()
    watched_since(now - timedelta(days=100))
    _index("team/app", "stale", D1, now - timedelta(days=60))
    page = viewer_client.get("/unused/?days=30")
    assert page.status_code == 200
    assert b'data-tag="team/app:stale"' in page.content
    assert b'data-tag="team/app:stale"' not in viewer_client.get("/unused/?days=90").content
    for bad in ("-1", "x", "9" * 40, "<script>alert(1)</script>"):
        answer = viewer_client.get("/unused/", {"days": bad})
        assert answer.status_code == 400
        assert b"<script>alert(1)" not in answer.content
    client.logout()
    assert client.get("/unused/").status_code == 302


def test_retention_not_pulled_for_days_with_the_reason_per_tag():
    from registry_admin import index, retention
    from registry_admin.models import RetentionRule

    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    watched_since(now - timedelta(days=100))

    def tag(name, pushed, n):
        digest = f"sha256:{n:064x}"
        index.upsert_tag("team/app", name, digest, pushed)
        return digest

    tag("pulled-recent", now - timedelta(days=90), 1)
    tag("pulled-old", now - timedelta(days=90), 2)
    tag("never-new", now - timedelta(days=10), 3)
    tag("never-old", now - timedelta(days=50), 4)
    tag("before", now - timedelta(days=150), 5)  # before the portal watched
    by_digest = tag("by-digest", now - timedelta(days=90), 6)
    deliver(
        event(tag="pulled-recent", digest=f"sha256:{1:064x}", when=now - timedelta(days=5)),
        event(tag="pulled-old", digest=f"sha256:{2:064x}", when=now - timedelta(days=60)),
        event(tag="", digest=by_digest, when=now - timedelta(days=1)),
    )
    rule = RetentionRule(name="unpulled", repository_pattern="team/*", not_pulled_for_days=30)
    rule.full_clean()
    rule.save()
    plan = retention.build_plan(now=now)
    [repo] = plan.rules[0].repositories
    decided = {d.tag: (d.action, d.reason) for d in repo.decisions}
    assert decided["pulled-recent"] == (retention.KEEP, "pulled 5 days ago, within 30 days")
    assert decided["pulled-old"] == (
        retention.DELETE,
        "last pulled 60 days ago, not within 30 days",
    )
    assert decided["never-new"] == (
        retention.KEEP,
        "never pulled, pushed 10 days ago, within 30 days",
    )
    assert decided["never-old"] == (retention.DELETE, "never pulled since its push 50 days ago")
    assert decided["by-digest"][0] == retention.KEEP
    assert decided["before"][0] == retention.DELETE
    assert "not pulled since the portal started watching" in decided["before"][1]

    rule.not_pulled_for_days = 200
    rule.keep_latest = 0
    rule.save()
    decided = {
        d.tag: (d.action, d.reason)
        for d in retention.build_plan(now=now).rules[0].repositories[0].decisions
    }
    assert decided["before"][0] == retention.KEEP
    assert "no pull data before" in decided["before"][1]
    # Combined with another limit, both reasons show.
    assert decided["never-old"][0] == retention.KEEP
    assert "within 200 days" in decided["never-old"][1]
    assert "not pulled for 200 days" in retention.describe_rule(rule)


def test_a_rule_with_only_the_pull_limit_is_valid_and_hostile_days_are_refused(admin_client):
    from registry_admin.models import RetentionRule

    for bad in ("-3", "x", "99999999", "<script>"):
        page = admin_client.post(
            "/retention/new/",
            {"name": "r", "repository_pattern": "*", "not_pulled_for_days": bad, "position": 1},
        )
        assert page.status_code in (200, 400)
        assert not RetentionRule.objects.exists()
    admin_client.post(
        "/retention/new/",
        {
            "name": "r",
            "repository_pattern": "*",
            "not_pulled_for_days": "30",
            "position": 1,
            "enabled": "on",
        },
    )
    assert RetentionRule.objects.get().not_pulled_for_days == 30


def test_the_look_back_reads_only_this_clients_rows_in_the_repository():
    """A GET by digest looks back for its HEAD through audit_repo_actor_idx (migration 0013),
    not through every pull of the window (the action index), which grew with the traffic."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    event = make_registry_event(action="pull", repository="team/app", digest="sha256:" + "a" * 64)
    event["request"]["method"] = "GET"
    event["target"].pop("tag", None)
    stored = notifications.record(notifications.parse_envelope(make_envelope(event)))
    # The traffic the index is for: other clients' pulls in the same window, in this and other
    # repositories. On a near-empty table PostgreSQL's planner rates the time index and this one
    # alike and picks either (CI saw audit_time_idx), so the plan is read with statistics that
    # look like a registry in use.
    AuditEvent.objects.bulk_create(
        AuditEvent(
            source=stored[0].source,
            event_id=f"busy-{n}",
            timestamp=stored[0].timestamp - timedelta(seconds=n % 60),
            action="pull",
            kind=AuditEvent.Kind.MANIFEST,
            repository="team/app" if n % 2 else f"team/other-{n % 50}",
            actor=f"node-{n % 300}",
            digest="sha256:" + "b" * 64,
            request_method="GET",
        )
        for n in range(4000)
    )
    with CaptureQueriesContext(connection) as queries:
        pulls.classify(stored[0])
    [look_back] = [q["sql"] for q in queries if "registry_admin_auditevent" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + look_back)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        else:
            cursor.execute("EXPLAIN " + look_back)
            plan = " ".join(row[0] for row in cursor.fetchall())
    assert "audit_repo_actor_idx" in plan, plan


@pytest.mark.parametrize("rows", [pulls.LOOK_BACK_ROWS, 3])
def test_a_batch_counts_what_one_event_at_a_time_counts(monkeypatch, rows):
    """`_look_backs` reads a whole batch's look-backs in one query per repository; each event
    must still see exactly its own window: its user's rows before it (ties broken by id), at
    most CHAIN_SECONDS back and at most LOOK_BACK_ROWS of them."""
    monkeypatch.setattr(pulls, "LOOK_BACK_ROWS", rows)
    refs = [{"mediaType": IMAGE, "digest": CHILD_A}, {"mediaType": IMAGE, "digest": CHILD_B}]
    stream = []
    for node in range(6):
        actor, addr = f"node{node % 3}", f"10.0.1.{node}:4000"
        start = T0 + timedelta(seconds=node)
        stream += [
            event(method="HEAD", tag="v1", actor=actor, addr=addr, when=start),
            event(method="HEAD", tag="v2", digest=D2, actor=actor, addr=addr, when=start),
            # Same timestamp as the HEADs: the log's order (id) decides they came first.
            event(tag="", actor=actor, addr=addr, when=start),
            event(tag="", digest=D2, actor=actor, addr=addr, when=start + timedelta(seconds=1)),
            event(media_type=INDEX, references=refs, tag="multi", actor=actor, addr=addr),
            event(tag="", digest=CHILD_A, actor=actor, addr=addr, when=T0 + timedelta(seconds=9)),
        ]
    stream += [
        # Just inside and just outside the chain's window after carol's HEAD.
        event(method="HEAD", tag="edge", actor="carol", when=T0),
        event(tag="", actor="carol", when=T0 + timedelta(seconds=pulls.CHAIN_SECONDS)),
        event(
            tag="", actor="carol", when=T0 + timedelta(seconds=pulls.CHAIN_SECONDS, microseconds=1)
        ),
        # Another repository with the same users: never looked at from team/app.
        event(method="HEAD", tag="v9", actor="node0", repository="team/other"),
        event(tag="", actor="node0", repository="team/other", when=T0 + timedelta(seconds=1)),
    ]
    # In the log's time order, as the registry sends them: a live count only sees what has
    # arrived, so an event delivered late would change a rebuild's count and not the live one.
    stream.sort(key=lambda item: datetime.fromisoformat(item["timestamp"].replace("Z", "+00:00")))
    for item in stream:
        deliver(item)  # one event per delivery: each look-back from a group of one
    one_at_a_time = pulls.snapshot_counters()

    PullCount.objects.all().delete()
    pulls.rebuild()  # one batch (REBUILD_CHUNK) for every event

    assert pulls.snapshot_counters() == one_at_a_time
    assert counts("t", "edge") == 1
    assert counts("t", "v9") == 1
    if rows > 3:
        # Every node's GET by digest counted for the tag its HEAD named; no child on its own.
        assert counts("t", "v2") == 6 and counts("d", CHILD_A) == 0
    else:
        # Two nodes per user: their rows interleave, and three rows hide some HEADs.
        assert counts("t", "v2") < 6


def test_compaction_folds_old_days_and_every_figure_stays():
    """Days before the 30-day window fold into one row per image and user: the pages' figures
    (last pull, pulls in 30 days, a puller's total, distinct pullers) and retention's verdict
    are the same before and after; the window's days are untouched."""
    now = timezone.now()
    deliver(
        *(event(when=now - timedelta(days=days)) for days in (40, 41, 60, 200)),
        *(event(when=now - timedelta(days=days), actor="carol") for days in (35, 90)),
        event(when=now - timedelta(days=45), actor="dave"),
        *(event(when=now - timedelta(days=days)) for days in (1, 2)),
        event(when=now - timedelta(days=3), actor="carol"),
        event(repository="team/other", when=now - timedelta(days=50)),
        event(repository="team/other", when=now - timedelta(days=51)),
    )

    def figures():
        return (
            pulls.stats(pulls.Scope.TAG, "team/app", ["v1"]),
            pulls.stats(pulls.Scope.DIGEST, "team/app", [D1]),
            pulls.stats(pulls.Scope.REPOSITORY, repositories=["team/app", "team/other"]),
            pulls.pullers("team/app", "v1"),
            pulls.last_pull_verdict("team/app", 20, now=now)("v1", D1),
            pulls.last_pull_verdict("team/other", 20, now=now)("v1", D1),
        )

    def rows(**where):
        return PullCount.objects.filter(**where).count()

    before = figures()
    recent = rows(day__gte=pulls.recent_since(now))
    # Three scopes (repository, tag, digest) x (bob: 4 old days, carol: 2, dave: 1), other: 2.
    assert rows(day__lt=pulls.recent_since(now)) == 3 * (4 + 2 + 1 + 2)

    removed = pulls.compact(now)

    assert removed == 3 * (3 + 1 + 0 + 1)
    assert figures() == before
    assert rows(day__gte=pulls.recent_since(now)) == recent
    assert rows(day__lt=pulls.recent_since(now)) == 3 * 4  # one per scope and user
    bob = PullCount.objects.get(
        scope=pulls.Scope.TAG, repository="team/app", actor="bob", day__lt=pulls.recent_since()
    )
    assert bob.pulls == 4 and bob.day == (now - timedelta(days=40)).astimezone(UTC).date()
    assert pulls.compact(now) == 0

    # A late event for an old day makes a second old row; the next compaction folds it.
    deliver(event(when=now - timedelta(days=300), actor="dave"))
    assert pulls.compact(now) == 3
    assert [p.pulls for p in pulls.pullers("team/app", "v1") if p.actor == "dave"] == [2]


def test_the_prune_job_compacts_the_counters_even_when_retention_is_off(settings):
    from registry_admin import audit

    now = timezone.now()
    deliver(*(event(when=now - timedelta(days=days)) for days in (40, 50)))
    settings.AUDIT_RETENTION_DAYS = 0
    assert audit.prune_audit_events()["pull_rows_folded"] == 3
    out = StringIO()
    deliver(event(when=now - timedelta(days=60)))
    call_command("prune_audit", "--days", "0", stdout=out)
    assert "Folded 3 pull counter rows" in out.getvalue()
    assert "no audit event is pruned" in out.getvalue()
