"""Issue 5's acceptance on the real registry: the four manifest kinds on the pages, the live tag
page and its fallback, a stopped registry, hostile labels."""

import html
import uuid

import pytest
import requests
from django.core.cache import cache
from django.template.defaultfilters import filesizeformat

from registry_admin import reconcile, worker
from registry_admin.models import Repository, Tag

from .harness import (
    PUSH_PASSWORD,
    PUSH_USER,
    registry_settings,
    start_registry,
    wait_for_quiet_notifications,
)
from .images import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, build_image, build_index

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = '<script>alert("x")</script>\'"&'


def _text(response):
    return html.unescape(response.content.decode())


def test_the_four_manifest_kinds_show_the_registrys_digests_sizes_dates_and_platforms(
    registry, admin_client
):
    cache.clear()
    base = f"accept-{uuid.uuid4().hex[:8]}"
    pusher = registry.pusher()
    oci = build_image(
        created="2024-02-03T04:05:06Z",
        labels={"org.opencontainers.image.title": HOSTILE, HOSTILE: "key"},
        cmd=["/bin/echo", HOSTILE],
    )
    docker = build_image(docker=True, created="2023-07-08T09:10:11Z")
    oci_index = build_index()
    docker_list = build_index(
        docker=True, platforms=(("linux", "amd64", None), ("linux", "arm", "v7"))
    )
    images = {
        "oci": (oci, OCI_MANIFEST),
        "docker": (docker, DOCKER_MANIFEST),
        "index": (oci_index, OCI_INDEX),
        "list": (docker_list, DOCKER_LIST),
    }
    for kind, (image, _) in images.items():
        pusher.push_image(f"{base}/{kind}", "1.0.0-rc.1", image)
    wait_for_quiet_notifications()
    worker.tick(["details"])

    for kind, (image, media_type) in images.items():
        name = f"{base}/{kind}"
        registry_digest = pusher.head_manifest(name, "1.0.0-rc.1")
        assert registry_digest == image.digest
        size = image.size if kind in ("oci", "docker") else sum(c.size for c in image.children)

        repository_page = _text(admin_client.get(f"/repositories/{name}/"))
        assert registry_digest[:19] in repository_page
        assert filesizeformat(size).replace("\xa0", " ") in repository_page.replace("\xa0", " ")

        tag_page = admin_client.get(f"/repositories/{name}/-/tags/1.0.0-rc.1/")
        assert tag_page.status_code == 200
        body = _text(tag_page)
        assert registry_digest in body
        assert media_type in body
        assert f"{size:,} bytes" in body
        assert f"docker pull {registry.url.split('://')[1]}/{name}:1.0.0-rc.1" in body
        assert f"docker pull {registry.url.split('://')[1]}/{name}@{registry_digest}" in body
        assert 'data-source="index"' not in body  # read live
        assert "Raw manifest" in body

    oci_page = admin_client.get(f"/repositories/{base}/oci/-/tags/1.0.0-rc.1/")
    raw = oci_page.content.decode()
    assert "<script>alert" not in raw
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in raw
    body = _text(oci_page)
    assert "2024-02-03 04:05:06 UTC" in body
    assert "linux/amd64" in body
    assert "/srv" in body and "8080/tcp" in body and "oyster tests" in body
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in body
    assert "/bin/sh -c #(nop) ADD layer0" in body
    assert (
        oci.layers and f"{oci.layers[0] and len(oci.layers[0])} bytes" not in body
    )  # sizes are formatted
    assert filesizeformat(len(oci.layers[0])) in raw.replace("&nbsp;", "\xa0")
    docker_body = _text(admin_client.get(f"/repositories/{base}/docker/-/tags/1.0.0-rc.1/"))
    assert "2023-07-08 09:10:11 UTC" in docker_body

    for kind, expected in (
        ("index", ["linux/amd64", "linux/arm64/v8"]),
        ("list", ["linux/amd64", "linux/arm/v7"]),
    ):
        image = images[kind][0]
        repository_page = _text(admin_client.get(f"/repositories/{base}/{kind}/"))
        for label in expected:
            assert label in repository_page
        body = _text(admin_client.get(f"/repositories/{base}/{kind}/-/tags/1.0.0-rc.1/"))
        for label, child in zip(expected, image.children, strict=True):
            assert label in body
            assert f"/repositories/{base}/{kind}/-/manifests/{child.digest}/" in body
        child = image.children[-1]
        child_page = admin_client.get(f"/repositories/{base}/{kind}/-/manifests/{child.digest}/")
        assert child_page.status_code == 200
        child_body = _text(child_page)
        assert f"{child.size:,} bytes" in child_body
        assert expected[-1] in child_body
        assert f"{registry.url.split('://')[1]}/{base}/{kind}@{child.digest}" in child_body


def test_a_tag_deleted_behind_the_portals_back_shows_a_notice_then_goes_with_a_reconcile(
    registry, admin_client, index_updates_off
):
    cache.clear()
    name = f"behind-{uuid.uuid4().hex[:8]}/app"
    image = build_image()
    registry.pusher().push_image(name, "v1", image)
    wait_for_quiet_notifications()
    reconcile.reconcile()
    deleted = requests.delete(
        f"{registry.url}/v2/{name}/manifests/{image.digest}",
        auth=(PUSH_USER, PUSH_PASSWORD),
        timeout=5,
    )
    assert deleted.status_code == 202
    page = admin_client.get(f"/repositories/{name}/-/tags/v1/")
    assert page.status_code == 200
    assert b"The registry no longer has this tag" in page.content
    reconcile.reconcile()
    assert not Tag.objects.filter(repository__name=name).exists()
    assert Repository.objects.get(name=name).is_empty
    link = f'class="mono">{name}</a>'.encode()
    assert link not in admin_client.get("/repositories/?q=" + name).content
    assert link in admin_client.get("/repositories/?empty=on&q=" + name).content
    gone = admin_client.get(f"/repositories/{name}/-/tags/never/")
    assert gone.status_code == 404
    assert b"The registry has no such tag" in gone.content


def test_a_stopped_registry_leaves_the_pages_working_from_the_index(
    tmp_path, live_server, settings, admin_client
):
    """Our own registry (the shared one stays up for other tests), stopped mid-test."""
    reg = registry_settings(settings, start_registry(tmp_path / "registry", live_server.url))
    try:
        cache.clear()
        image, multi = build_image(labels={"note": HOSTILE}), build_index()
        reg.pusher().push_image("down/app", "v1", image)
        reg.pusher().push_image("down/app", "multi", multi)
        wait_for_quiet_notifications()
        reconcile.reconcile()
        reg.stop()
        cache.clear()

        listing = admin_client.get("/repositories/")
        assert listing.status_code == 200
        assert b"The registry is unreachable" in listing.content
        assert b"down/app" in listing.content
        assert b"the last reconcile" in listing.content

        repository = admin_client.get("/repositories/down/app/")
        assert repository.status_code == 200
        assert b"The registry is unreachable" in repository.content
        assert image.digest[:19].encode() in repository.content

        tag = admin_client.get("/repositories/down/app/-/tags/v1/")
        assert tag.status_code == 200
        body = _text(tag)
        assert "Could not read this tag from the registry" in body
        assert "unreachable" in body
        assert image.digest in body
        assert f"{image.size:,} bytes" in body
        assert "&lt;script&gt;" in tag.content.decode()
        assert "<script>alert" not in tag.content.decode()

        index_page = _text(admin_client.get("/repositories/down/app/-/tags/multi/"))
        assert "linux/arm64/v8" in index_page

        unknown = admin_client.get("/repositories/down/app/-/tags/never-indexed/")
        assert unknown.status_code == 503
        assert b"could not be asked" in unknown.content

        run = worker.run_now("sync")
        assert run.state == "failed" and "unreachable" in run.error
        assert admin_client.get("/repositories/down/app/").status_code == 200
    finally:
        reg.stop()
