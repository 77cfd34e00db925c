"""Issue #14's smaller holes, each tried with the request that showed it."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from registry_admin.models import Run

from .factories import make_user


@pytest.mark.django_db
def test_the_generic_run_endpoint_never_starts_a_real_retention_run(admin_client):
    """Item 7: `POST /runs/retention/request` used to queue a real (deleting) run, unconfirmed."""
    response = admin_client.post("/runs/retention/request", {"next": "/retention/"})
    assert response.status_code == 302
    (run,) = Run.objects.filter(kind="retention")
    assert run.options == {"dry_run": True}
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("dry run, deletes nothing" in m for m in messages)


@pytest.mark.django_db
def test_the_run_jobs_permission_alone_cannot_start_retention():
    """Item 7: retention needs the delete permission, not just run-jobs."""
    user = make_user("runner")
    user.user_permissions.add(
        Permission.objects.get(codename="view_portal"),
        Permission.objects.get(codename="run_jobs"),
    )
    client = Client()
    client.force_login(user)
    assert client.post("/runs/noop/request").status_code == 302
    assert client.post("/runs/retention/request").status_code == 403
    assert not Run.objects.filter(kind="retention").exists()


@pytest.mark.django_db
def test_the_confirmed_real_run_still_works_from_the_retention_page(admin_client):
    admin_client.post(reverse("registry_admin:retention-run"), {"confirm": "yes"})
    (run,) = Run.objects.filter(kind="retention")
    assert run.options == {"dry_run": False}
