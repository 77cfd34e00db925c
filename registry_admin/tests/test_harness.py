"""The harness itself: real registry, real images, skopeo and Azurite work as the suite expects."""

import json
import threading
import time

import pytest
import requests
from django.core.signals import request_finished, request_started

from registry_admin.registry_config import EVENTS_PATH

from . import harness
from .harness import PUSH_PASSWORD, PUSH_USER
from .images import ALL_MANIFEST_TYPES, build_image, build_index, write_oci_layout


@pytest.mark.django_db(transaction=True)
def test_pushed_images_come_back_with_the_same_digest(registry):
    pusher = registry.pusher()
    for name, image in {
        "harness/oci": build_image(),
        "harness/docker": build_image(docker=True),
        "harness/index": build_index(),
        "harness/list": build_index(docker=True),
    }.items():
        digest = pusher.push_image(name, "v1", image)
        assert digest == image.digest
        assert pusher.head_manifest(name, "v1") == image.digest
        response = requests.get(
            f"{registry.url}/v2/{name}/manifests/v1",
            headers={"Accept": ALL_MANIFEST_TYPES},
            auth=(PUSH_USER, PUSH_PASSWORD),
            timeout=5,
        )
        assert response.headers["Content-Type"] == image.media_type
        assert json.loads(response.content) == json.loads(image.manifest)


@pytest.mark.django_db(transaction=True)
def test_skopeo_pushes_an_oci_layout_with_user_credentials(skopeo, registry, tmp_path):
    image = build_image()
    write_oci_layout(tmp_path / "layout", image, "v1")
    result = skopeo.copy_to_registry(
        tmp_path / "layout", "v1", "harness/skopeo", PUSH_USER, PUSH_PASSWORD
    )
    assert result.returncode == 0, result.stderr
    assert registry.pusher().head_manifest("harness/skopeo", "v1") == image.digest
    denied = skopeo.copy_to_registry(
        tmp_path / "layout", "v1", "harness/skopeo", PUSH_USER, "wrong"
    )
    assert denied.returncode != 0


def test_azurite_serves_the_real_sdk(azurite):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("harness")
    container.upload_blob("a/b.txt", b"hello")
    assert [b.name for b in container.list_blobs()] == ["a/b.txt"]


def _deliver(events):
    """What the live server does around a notification delivery, in this thread."""
    request_started.send(sender=None, environ={"PATH_INFO": EVENTS_PATH})
    events.append("started")
    request_finished.send(sender=None)


def test_a_flush_waits_for_deliveries_in_flight_and_holds_new_ones():
    """The flush of a transactional test and a late notification must not write at once (the
    PostgreSQL run once failed with a TRUNCATE deadlock there)."""
    events = []
    request_started.send(sender=None, environ={"PATH_INFO": EVENTS_PATH})  # one in flight
    held = threading.Event()

    def flush():
        with harness.deliveries_held(timeout=10):
            held.set()
            events.append("flush")
            time.sleep(0.3)
        events.append("flush done")

    flusher = threading.Thread(target=flush)
    flusher.start()
    time.sleep(0.2)
    assert not held.is_set(), "the flush began while a delivery was in flight"
    request_finished.send(sender=None)
    assert held.wait(5)
    late = threading.Thread(target=_deliver, args=(events,))
    late.start()
    late.join(5)
    flusher.join(5)
    assert events == ["flush", "flush done", "started"]


def test_a_flush_does_not_wait_for_a_delivery_whose_thread_died():
    thread = threading.Thread(
        target=request_started.send, kwargs={"sender": None, "environ": {"PATH_INFO": EVENTS_PATH}}
    )
    thread.start()
    thread.join()
    began = time.monotonic()
    with harness.deliveries_held(timeout=10):
        pass
    assert time.monotonic() - began < 5
