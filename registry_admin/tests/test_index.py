"""The index write functions: upsert, forget by tag and by digest, repository counters."""

from datetime import timedelta

import pytest
from django.utils import timezone

from registry_admin import index
from registry_admin.models import Manifest, Repository, Tag

pytestmark = pytest.mark.django_db

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def _seed():
    now = timezone.now()
    index.upsert_tag("team/app", "v1", DIGEST_A, now - timedelta(hours=2))
    index.upsert_tag("team/app", "latest", DIGEST_A, now - timedelta(hours=1))
    index.upsert_tag("team/app", "v2", DIGEST_B, now)
    Manifest.objects.filter(digest=DIGEST_A).update(size=100)
    Manifest.objects.filter(digest=DIGEST_B).update(size=50)
    index.refresh_repository_stats(Repository.objects.get(name="team/app"))
    return now


def test_upsert_creates_repository_tag_and_bare_manifest():
    now = _seed()
    repo = Repository.objects.get(name="team/app")
    assert (repo.tag_count, repo.is_empty, repo.last_push_at) == (3, False, now)
    # Two tags share DIGEST_A: its size counts once.
    assert repo.total_size == 150
    tag = Tag.objects.get(repository=repo, name="latest")
    assert tag.manifest.digest == DIGEST_A
    assert tag.manifest.details_fetched_at is None


def test_upsert_moves_a_tag_to_a_new_digest_and_keeps_the_newest_push_time():
    now = _seed()
    index.upsert_tag("team/app", "v1", DIGEST_B, now + timedelta(minutes=1))
    tag = Tag.objects.get(repository__name="team/app", name="v1")
    assert (tag.digest, tag.manifest.digest) == (DIGEST_B, DIGEST_B)
    # A late duplicate delivery of an older push does not move the time back.
    index.upsert_tag("team/app", "v1", DIGEST_B, now - timedelta(days=1))
    tag.refresh_from_db()
    assert tag.pushed_at == now + timedelta(minutes=1)


def test_forget_digest_removes_every_tag_of_that_digest_in_that_repository_only():
    _seed()
    index.upsert_tag("other/app", "v1", DIGEST_A, timezone.now())
    assert index.forget_digest("team/app", DIGEST_A) == ["latest", "v1"]
    assert list(Tag.objects.filter(repository__name="team/app").values_list("name", flat=True)) == [
        "v2"
    ]
    assert Tag.objects.filter(repository__name="other/app", digest=DIGEST_A).exists()
    repo = Repository.objects.get(name="team/app")
    assert (repo.tag_count, repo.total_size, repo.is_empty) == (1, 50, False)


def test_forget_tags_marks_repository_empty_when_last_tag_goes():
    _seed()
    assert index.forget_tags("team/app", ["v1", "nope", "latest"]) == ["latest", "v1"]
    assert index.forget_tags("team/app", ["v2"]) == ["v2"]
    repo = Repository.objects.get(name="team/app")
    assert (repo.tag_count, repo.is_empty, repo.total_size, repo.last_push_at) == (
        0,
        True,
        0,
        None,
    )


@pytest.mark.parametrize("name", ["missing/repo", "../etc", "<script>", "a" * 300, ""])
def test_forget_on_unknown_repository_is_a_no_op(name):
    assert index.forget_tags(name, ["v1"]) == []
    assert index.forget_digest(name, DIGEST_A) == []


def test_forget_digest_with_unknown_digest_removes_nothing():
    _seed()
    assert index.forget_digest("team/app", "sha256:" + "c" * 64) == []
    assert Tag.objects.filter(repository__name="team/app").count() == 3


def test_bulk_counter_refresh_matches_the_single_one():
    now = _seed()
    index.upsert_tag("other/app", "v1", DIGEST_B, now)
    index.upsert_tag("empty/app", "v1", DIGEST_B, now)
    index.forget_tags("empty/app", ["v1"])
    expected = {
        r.name: (r.tag_count, r.is_empty, r.last_push_at, r.total_size)
        for r in Repository.objects.all()
    }
    Repository.objects.update(tag_count=99, is_empty=False, last_push_at=None, total_size=-1)
    index.refresh_stats_of(Repository.objects.values_list("pk", flat=True))
    actual = {
        r.name: (r.tag_count, r.is_empty, r.last_push_at, r.total_size)
        for r in Repository.objects.all()
    }
    assert actual == expected
    assert expected["empty/app"] == (0, True, None, 0)
    assert expected["team/app"][3] == 150
