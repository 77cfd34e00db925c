"""A storage scan that cannot read the storage: a sentence on the page, a failed run, and the
previous snapshot still shown. Against Azurite (real SDK) and the filesystem."""

import datetime
import signal

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from django.urls import reverse
from django.utils.html import escape

from registry_admin import storage, worker
from registry_admin.models import Run, StorageSnapshot
from registry_admin.tests import harness
from registry_admin.tests.storage_trees import (
    StorageTree,
    azure_settings,
    azurite_container,
    upload_tree,
)

pytestmark = pytest.mark.django_db

WRONG_KEY = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ=="


@pytest.fixture
def stocked_container(tmp_path, azurite):
    """A container holding a small registry tree: one image in one repository."""
    tree = StorageTree(tmp_path / "tree")
    tree.image("team/app", [b"layer" * 100], tag="v1")
    container = azurite_container(azurite)
    upload_tree(container, tree.root)
    return container


def scan_and_page(client):
    run = worker.run_now(Run.Kind.STORAGE_SCAN)
    page = client.get(reverse("registry_admin:storage"))
    assert page.status_code == 200
    return run, page.content.decode()


def assert_failed_with_previous_snapshot(client, message):
    previous = StorageSnapshot.objects.latest_snapshot()
    run, html = scan_and_page(client)
    assert run.state == Run.State.FAILED
    assert message in run.error
    assert StorageSnapshot.objects.latest_snapshot() == previous
    assert 'data-problem="scan-failed"' in html
    assert escape(message) in html
    assert "The figures below are from the previous scan." in html
    assert f'data-bytes="{previous.total_bytes}"' in html
    return run, html


def test_a_wrong_key_a_missing_container_and_denied_listing(
    admin_client, settings, azurite, stocked_container
):
    azure_settings(settings, azurite, stocked_container.container_name)
    good, _ = scan_and_page(admin_client)
    assert good.state == Run.State.DONE, good.error

    settings.AZURE_STORAGE_ACCOUNT_KEY = WRONG_KEY
    run, html = assert_failed_with_previous_snapshot(admin_client, "Azure rejected the credentials")
    assert "check AZURE_STORAGE_ACCOUNT_KEY" in run.error
    assert WRONG_KEY not in html and WRONG_KEY not in run.error

    settings.AZURE_STORAGE_ACCOUNT_KEY = azurite.account_key
    settings.AZURE_STORAGE_CONTAINER = "no-such-container"
    run, _ = assert_failed_with_previous_snapshot(admin_client, "does not exist")
    assert "'no-such-container'" in run.error

    # A SAS that may read blobs but not list them: permission denied, in so many words.
    sas = generate_container_sas(
        azurite.account_name,
        stocked_container.container_name,
        account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    settings.AZURE_STORAGE_CONTAINER = stocked_container.container_name
    settings.AZURE_STORAGE_CONNECTION_STRING = (
        f"BlobEndpoint={azurite.account_url};SharedAccessSignature={sas}"
    )
    run, html = assert_failed_with_previous_snapshot(admin_client, "Permission denied")
    assert "AuthorizationPermissionMismatch" in run.error
    assert sas not in html and sas not in run.error


@pytest.mark.live
@pytest.mark.slow
def test_a_hung_then_stopped_account_is_a_sentence_not_a_500(admin_client, settings, tmp_path):
    (tmp_path / "azurite").mkdir()
    second = harness.start_azurite(tmp_path / "azurite")
    try:
        container = azurite_container(second)
        tree = StorageTree(tmp_path / "tree")
        tree.image("team/app", [b"x" * 10])
        upload_tree(container, tree.root)
        azure_settings(settings, second, container.container_name, STORAGE_TIMEOUT=1)
        good, _ = scan_and_page(admin_client)
        assert good.state == Run.State.DONE, good.error

        # Frozen: connections are accepted by the kernel, nothing answers.
        second.process.send_signal(signal.SIGSTOP)
        try:
            run, _ = assert_failed_with_previous_snapshot(
                admin_client, "did not answer within 1 seconds"
            )
        finally:
            second.process.send_signal(signal.SIGCONT)
    finally:
        second.stop()

    run, _ = assert_failed_with_previous_snapshot(
        admin_client, "Could not connect to the storage account"
    )
    assert second.account_url in run.error


def test_malformed_connection_string_and_unknown_backend_fail_cleanly(admin_client, settings):
    settings.STORAGE_BACKEND = "azure"
    settings.AZURE_STORAGE_CONTAINER = "registry"
    settings.AZURE_STORAGE_CONNECTION_STRING = "this is; not=a connection string"
    run, html = scan_and_page(admin_client)
    assert run.state == Run.State.FAILED
    assert "connection string or account URL is malformed" in run.error
    assert "No storage scan has completed yet." in html

    settings.STORAGE_BACKEND = "<script>alert(1)</script>"
    run, html = scan_and_page(admin_client)
    assert "is not supported" in run.error
    assert "<script>alert(1)</script>" not in html
    assert 'data-problem="configuration"' in html


def test_a_missing_filesystem_root_fails_cleanly(admin_client, settings, tmp_path):
    settings.STORAGE_BACKEND = "filesystem"
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "gone")
    run, html = scan_and_page(admin_client)
    assert run.state == Run.State.FAILED
    assert "does not exist: set STORAGE_FILESYSTEM_ROOT" in run.error
    assert 'data-problem="configuration"' in html
    assert escape(storage.configuration_problem()) in html


def test_a_sas_token_stays_out_of_errors_and_logs(admin_client, settings, azurite, caplog):
    """The SDK's connection errors quote the request URL, SAS token and all."""
    sas = generate_container_sas(
        azurite.account_name,
        "registry",
        account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
    )
    closed_port = harness.free_port()
    settings.STORAGE_BACKEND = "azure"
    settings.STORAGE_TIMEOUT = 1
    settings.AZURE_STORAGE_CONTAINER = "registry"
    settings.AZURE_STORAGE_CONNECTION_STRING = (
        f"BlobEndpoint=http://127.0.0.1:{closed_port}/{azurite.account_name};"
        f"SharedAccessSignature={sas}"
    )
    signature = dict(part.split("=", 1) for part in sas.split("&"))["sig"]

    run, html = scan_and_page(admin_client)

    assert run.state == Run.State.FAILED
    assert "Could not connect to the storage account" in run.error
    assert f"127.0.0.1:{closed_port}" in run.error
    for text in (run.error, html, caplog.text):
        assert signature not in text and sas not in text
