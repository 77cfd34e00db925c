"""The repository delete from the pages, on the real registry: the button only for admins, a
confirmation stating tags, images and bytes, the name typed to confirm (a wrong one refused),
viewers, anonymous users and posts without the CSRF token refused, hostile names answered with
a sentence, and the result: the catalog no longer lists it."""

import pytest
from django.test import Client
from django.urls import reverse

from registry_admin import registry, repository_delete, worker
from registry_admin.models import AuditEvent, BinItem, JobKind, Repository, Run
from registry_admin.repository_delete import list_contents

from . import harness
from .images import build_image
from .test_repository_delete import emptied, name

URL = reverse("registry_admin:repository-delete")
RUN = reverse("registry_admin:repository-delete-run")

pytestmark = pytest.mark.django_db(transaction=True)


@harness.live_fixture(scope="module")
def pages_registry(live_server, tmp_path_factory):
    started = harness.start_registry(tmp_path_factory.mktemp("repo-delete-pages"), live_server.url)
    yield started
    started.stop()


@pytest.fixture
def reg(pages_registry, settings):
    yield emptied(pages_registry, settings)
    harness.wait_for_quiet_notifications()


def pushed(reg, prefix="page"):
    repository = name(prefix)
    pusher = reg.pusher()
    pusher.push_image(repository, "v1", build_image())
    pusher.push_image(repository, "v2", build_image())
    Repository.objects.get_or_create(name=repository)
    return repository


def catalog():
    return set(registry.get_client().list_repositories())


def test_only_admins_see_the_button(reg, admin_user, viewer_user):
    repository = pushed(reg)
    page = reverse("registry_admin:repository", args=[repository])
    admin, viewer = Client(), Client()
    admin.force_login(admin_user)
    viewer.force_login(viewer_user)
    assert 'data-action="delete-repository"' in admin.get(page).content.decode()
    assert 'data-action="delete-repository"' not in viewer.get(page).content.decode()


def test_the_confirmation_states_what_goes_and_a_wrong_name_deletes_nothing(reg, admin_client):
    repository = pushed(reg)
    response = admin_client.post(URL, {"repository": repository})
    body = response.content.decode()
    assert response.status_code == 200
    assert '<strong data-count="tags">2</strong>' in body
    assert '<strong data-count="images">2</strong>' in body
    assert 'name="typed_name"' in body and "csrfmiddlewaretoken" in body
    for typed in ("", repository.upper(), repository + " ", repository[:-1], "x" * 5000):
        refused = admin_client.post(
            URL, {"repository": repository, "confirm": "yes", "typed_name": typed}
        )
        assert refused.status_code == 400
        assert "Nothing was deleted" in refused.content.decode()
    assert repository in catalog() and not BinItem.objects.exists()

    done = admin_client.post(
        URL, {"repository": repository, "confirm": "yes", "typed_name": repository}
    )
    assert done.status_code == 302
    following = admin_client.get(done["Location"]).content.decode()
    assert 'id="repository-delete-run"' in following
    assert repository in catalog()  # the worker deletes it
    (run,) = worker.tick(kinds=[JobKind.DELETE_REPOSITORY])
    assert run.state == Run.State.DONE and run.result["deleted"] is True, run.error
    assert 'data-state="deleted"' in admin_client.get(done["Location"]).content.decode()
    assert repository not in catalog()
    assert not Repository.objects.filter(name=repository).exists()
    assert AuditEvent.objects.get(action="repository.deleted").actor == "alice"
    assert BinItem.objects.filter(repository=repository).count() == 2


def test_viewers_anonymous_users_gets_and_posts_without_csrf_are_refused(
    reg, viewer_client, admin_user
):
    repository = pushed(reg)
    form = {"repository": repository, "confirm": "yes", "typed_name": repository}
    assert viewer_client.post(URL, form).status_code == 403
    anonymous = Client()
    assert anonymous.post(URL, form).status_code in (302, 403)
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(admin_user)
    assert csrf_client.post(URL, form).status_code == 403
    assert csrf_client.get(URL).status_code == 405
    assert repository in catalog() and not BinItem.objects.exists()


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "../../etc",
        "a/../../b",
        "UPPER",
        "<script>alert(1)</script>",
        "x" * 10000,
        "a\x00b",
        "team/app\nSet-Cookie: x=1",
        "team//app",
    ],
)
def test_hostile_names_get_a_sentence_and_change_nothing(reg, admin_client, hostile):
    repository = pushed(reg)
    response = admin_client.post(
        URL, {"repository": hostile, "confirm": "yes", "typed_name": hostile}
    )
    assert response.status_code == 400
    body = response.content.decode()
    assert "Nothing deleted" in body and "<script>alert" not in body
    assert repository in catalog() and not BinItem.objects.exists()


def test_an_unknown_repository_and_unwritable_storage_are_sentences(reg, admin_client, settings):
    response = admin_client.post(URL, {"repository": name("never")})
    assert response.status_code == 200
    assert "The registry has no repository" in response.content.decode()
    repository = pushed(reg)
    settings.STORAGE_BACKEND = "nothing"
    response = admin_client.post(
        URL, {"repository": repository, "confirm": "yes", "typed_name": repository}
    )
    assert "Deleting a repository needs write access to the registry" in response.content.decode()
    assert repository in catalog()
    assert not Run.objects.filter(kind=JobKind.DELETE_REPOSITORY).exists()


def test_the_registry_down_is_a_sentence(reg, admin_client, settings):
    repository = pushed(reg)
    settings.REGISTRY_URL = "http://127.0.0.1:9"
    response = admin_client.post(URL, {"repository": repository})
    assert response.status_code == 200
    assert 'id="repository-delete-error"' in response.content.decode()


def test_the_job_without_a_name_fails_with_a_sentence(reg, admin_client):
    admin_client.post(
        reverse("registry_admin:run-request", args=[JobKind.DELETE_REPOSITORY]), {"next": "/"}
    )
    (run,) = worker.tick(kinds=[JobKind.DELETE_REPOSITORY])
    assert run.state == Run.State.FAILED and run.options == {"dry_run": True}
    assert "needs the repository's name" in run.error


def test_a_push_that_stops_the_job_fails_the_run_with_its_reason(reg, admin_client, monkeypatch):
    repository = pushed(reg)
    real = repository_delete._Delete.pushed_meanwhile

    def pushed_then_check(self, contents):
        reg.pusher().push_image(repository, "new", build_image())
        return real(self, list_contents(self.backend, self.repository))

    monkeypatch.setattr(repository_delete._Delete, "pushed_meanwhile", pushed_then_check)
    admin_client.post(URL, {"repository": repository, "confirm": "yes", "typed_name": repository})
    (run,) = worker.tick(kinds=[JobKind.DELETE_REPOSITORY])
    assert run.state == Run.State.FAILED and "a client pushed to it meanwhile" in run.error
    shown = admin_client.get(RUN, {"run": run.pk}).content.decode()
    assert 'data-state="kept"' in shown and "a client pushed to it meanwhile" in shown
    assert repository in catalog() and reg.pusher().head_manifest(repository, "new")


@pytest.mark.parametrize("hostile", ["", "abc", "-1", "9" * 40, "1 OR 1=1", "<b>"])
def test_the_run_page_refuses_what_is_not_a_delete_run(reg, admin_client, hostile):
    response = admin_client.get(RUN, {"run": hostile})
    assert response.status_code == 400 and "No such repository delete" in response.content.decode()


def test_viewers_do_not_see_delete_runs(reg, viewer_client):
    assert viewer_client.get(RUN, {"run": "1"}).status_code == 403


def test_the_api_plans_then_asks_the_worker_with_the_name_confirmed(reg):
    from registry_admin import api_tokens

    from .factories import make_admin

    owner = make_admin("api-owner")
    _, text = api_tokens.create(owner.username, owner, "ci", "read,delete")
    repository = pushed(reg, "api")
    url = f"/api/v1/repositories/{repository}/-/delete"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {text}"}
    plan = Client().post(url, {"dry_run": True}, content_type="application/json", **auth)
    assert plan.status_code == 200 and plan.json()["plan"]["images"] == 2
    assert plan.json()["run"] is None and repository in catalog()
    for confirm in ("", repository.upper(), "x" * 400):
        refused = Client().post(
            url, {"dry_run": False, "confirm": confirm}, content_type="application/json", **auth
        )
        assert refused.status_code == 400, refused.content
    assert not Run.objects.filter(kind=JobKind.DELETE_REPOSITORY).exists()
    done = Client().post(
        url, {"dry_run": False, "confirm": repository}, content_type="application/json", **auth
    )
    assert done.status_code == 202 and done.json()["run"]["kind"] == "delete_repository"
    (run,) = worker.tick(kinds=[JobKind.DELETE_REPOSITORY])
    assert run.state == Run.State.DONE and run.result["deleted"] is True, run.error
    assert repository not in catalog()
    assert AuditEvent.objects.get(action="repository.deleted").actor == "api-owner"
    read_only = api_tokens.create(owner.username, owner, "ro", "read")[1]
    forbidden = Client().post(
        url,
        {"dry_run": True},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {read_only}",
    )
    assert forbidden.status_code == 403
    bad = Client().post(
        "/api/v1/repositories/Bad..Name/-/delete", {}, content_type="application/json", **auth
    )
    assert bad.status_code == 400
