"""Garbage collection with the registry's own collector (`registry garbage-collect`).

Oyster writes the collector a configuration from its own storage settings (the filesystem root,
or the Azure account and container), so the collector sees exactly what the scan sees. A real
run deletes blobs, which is only safe while nothing is pushed: it refuses unless the registry
answers as read-only at that moment (2.8.2's `maintenance.readonly` answer to starting an upload:
405, `Allow: GET, HEAD`, a plain-text body) or the operator says it is stopped and it really
refuses connections. Never `--delete-untagged`: on 2.8 it deletes the per-platform children of
multi-platform images (untagged.py is the safe version).
"""

import logging
import os
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from django.conf import settings

from . import registry, storage, usage, worker
from .models import AuditEvent, JobKind, PortalAction, Repository
from .registry_config import dump_yaml

logger = logging.getLogger(__name__)

ELIGIBLE = re.compile(r"blob eligible for deletion: (sha256:[0-9a-f]{64})")
SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")
PROBE_REPOSITORY = "oyster/read-only-probe"
RESTART_REMINDER = (
    "Restart the registry now: until it restarts, its blob cache still answers for deleted "
    "blobs (HTTP 200 with an empty body)."
)
READ_ONLY_HOWTO = (
    "Switch the registry to read-only first: `make run` — REGISTRY_READ_ONLY=1 make run; "
    "docker compose — set REGISTRY_STORAGE_MAINTENANCE_READONLY='{\"enabled\":true}' on the "
    "registry service and `docker compose up -d registry`; App Service — add the app setting "
    'REGISTRY_STORAGE_MAINTENANCE_READONLY={"enabled":true} (the app restarts). Remove it '
    "the same way afterwards."
)


class CollectorError(Exception):
    """The collector cannot run or failed; str() says why and what to do."""


@dataclass
class CollectionResult:
    dry_run: bool
    eligible: list = field(default_factory=list)  # blob digests the collector named
    eligible_bytes: int = 0
    marked: int = 0
    scan_reclaimable_bytes: int | None = None
    freed_bytes: int | None = None
    seconds: float = 0.0
    registry_state: str = ""
    output_tail: str = ""

    def as_dict(self):
        return {
            "dry_run": self.dry_run,
            "eligible_blobs": len(self.eligible),
            "eligible_bytes": self.eligible_bytes,
            "marked_blobs": self.marked,
            "scan_reclaimable_bytes": self.scan_reclaimable_bytes,
            "freed_bytes": self.freed_bytes,
            "seconds": round(self.seconds, 2),
            "registry_state": self.registry_state,
        }


def collector_config():
    """The collector's configuration (a dict) from the portal's storage settings."""
    problem = storage.configuration_problem()
    if problem:
        raise CollectorError(problem)
    kind = storage.backend_kind()
    if kind == "filesystem":
        driver = {"filesystem": {"rootdirectory": settings.STORAGE_FILESYSTEM_ROOT}}
    else:
        name, key = settings.AZURE_STORAGE_ACCOUNT_NAME, settings.AZURE_STORAGE_ACCOUNT_KEY
        if settings.AZURE_STORAGE_CONNECTION_STRING and not (name and key):
            parts = dict(
                item.split("=", 1)
                for item in settings.AZURE_STORAGE_CONNECTION_STRING.split(";")
                if "=" in item
            )
            name, key = parts.get("AccountName", ""), parts.get("AccountKey", "")
        if not (name and key):
            raise CollectorError(
                "The collector needs the Azure account name and key: set "
                "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY."
            )
        azure = {
            "accountname": name,
            "accountkey": key,
            "container": settings.AZURE_STORAGE_CONTAINER,
        }
        if settings.AZURE_STORAGE_ROOT_DIRECTORY:
            azure["rootdirectory"] = settings.AZURE_STORAGE_ROOT_DIRECTORY
        driver = {"azure": azure}
    return {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "text"},
        "storage": {**driver, "delete": {"enabled": True}},
        # Required by the parser, never served: the collector does not listen.
        "http": {"addr": "127.0.0.1:0"},
    }


def registry_state():
    """(state, detail) from registry.RegistryClient.read_only_state on a real repository."""
    name = (
        Repository.objects.filter(is_empty=False)
        .order_by("name")
        .values_list("name", flat=True)
        .first()
        or PROBE_REPOSITORY
    )
    return registry.get_client().read_only_state(name)


def check_safe(registry_stopped):
    """Raise CollectorError unless a real run is safe now; returns the state it saw."""
    state, detail = registry_state()
    if state == "read-only":
        return state
    if registry_stopped:
        if state == "unreachable":
            return state
        raise CollectorError(
            f"--registry-stopped was given, but the registry still answers ({detail}). "
            "Stop it (or make it read-only) and try again; nothing was deleted."
        )
    if state == "unreachable":
        raise CollectorError(
            f"The registry does not answer ({detail}). If you stopped it on purpose, run again "
            "with --registry-stopped (Storage page: 'The registry is stopped'). Nothing was deleted."
        )
    raise CollectorError(f"{detail} {READ_ONLY_HOWTO} Nothing was deleted.")


def run_collector(dry_run):
    """Run `REGISTRY_GC_COMMAND garbage-collect CONFIG [--dry-run]`; (returncode, output)."""
    command = shlex.split(settings.REGISTRY_GC_COMMAND)
    if not command:
        raise CollectorError("REGISTRY_GC_COMMAND is empty: name the registry binary.")
    # The config may hold the Azure key: a private file, removed right after.
    with tempfile.TemporaryDirectory(prefix="oyster-gc-") as directory:
        config_path = os.path.join(directory, "config.yml")
        with open(os.open(config_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(dump_yaml(collector_config()))
        args = [*command, "garbage-collect", config_path]
        if dry_run:
            args.append("--dry-run")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
        try:
            done = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=settings.REGISTRY_GC_TIMEOUT,
                env=env,
                check=False,
            )
        except FileNotFoundError:
            raise CollectorError(
                f"The collector {command[0]!r} is not installed here: set REGISTRY_GC_COMMAND to "
                "the registry binary (`registry` in the official image, `docker-registry` on "
                "Debian)."
            ) from None
        except subprocess.TimeoutExpired:
            raise CollectorError(
                f"The collector ran longer than REGISTRY_GC_TIMEOUT ({settings.REGISTRY_GC_TIMEOUT} s) "
                "and was stopped; run it again (it starts over safely)."
            ) from None
    return done.returncode, (done.stdout or "") + (done.stderr or "")


def collect(actor, dry_run=True, registry_stopped=False, on_progress=None):
    """A dry run (what would go, in blobs and bytes, against the scan's figure) or a real run
    (checked safe first; then a fresh scan, the freed bytes in the audit log). Returns a
    CollectionResult; raises CollectorError with the reason."""

    def progress(message):
        if on_progress:
            on_progress(message)

    result = CollectionResult(dry_run=dry_run)
    if not dry_run:
        result.registry_state = check_safe(registry_stopped)
    snapshot = usage.latest_snapshot()
    before = snapshot.total_bytes if snapshot else None
    if not dry_run:
        progress("Scanning storage before collecting")
        before = usage.run_scan().total_bytes
    result.scan_reclaimable_bytes = snapshot.reclaimable_bytes if snapshot else None
    progress("Running the registry's collector")
    started = time.monotonic()
    if dry_run:
        code, output = run_collector(dry_run=True)
    else:
        code, output = run_collector(dry_run=True)
        eligible_before = ELIGIBLE.findall(output)
        backend = storage.get_backend()
        sizes_before = {d: backend.blob_size(d) or 0 for d in eligible_before}
        code, output = run_collector(dry_run=False)
    result.seconds = time.monotonic() - started
    result.output_tail = output[-4000:]
    if code != 0:
        raise CollectorError(
            f"The collector exited with status {code}: {output.strip()[-600:] or 'no output'}"
        )
    result.eligible = sorted(set(ELIGIBLE.findall(output)))
    summary = SUMMARY.search(output)
    result.marked = int(summary.group(1)) if summary else 0
    if dry_run:
        backend = storage.get_backend()
        result.eligible_bytes = sum(backend.blob_size(d) or 0 for d in result.eligible)
        return result
    result.eligible_bytes = sum(sizes_before.get(d, 0) for d in result.eligible)
    progress("Scanning storage after collecting")
    after = usage.run_scan()
    result.freed_bytes = (before - after.total_bytes) if before is not None else None
    AuditEvent.objects.log_portal_action(
        actor, PortalAction.GARBAGE_COLLECTED, detail=result.as_dict()
    )
    logger.info(
        "garbage collection by %s freed %s bytes in %.1f s",
        actor,
        result.freed_bytes,
        result.seconds,
    )
    return result


def garbage_collect_job(run):
    """Worker job "garbage_collect": options {"dry_run": bool, "registry_stopped": bool}."""

    options = run.options or {}

    def progress(message):
        worker.report_progress(run, message=message)

    result = collect(
        run.requested_by or JobKind.GARBAGE_COLLECT,
        dry_run=bool(options.get("dry_run", True)),
        registry_stopped=bool(options.get("registry_stopped")),
        on_progress=progress,
    )
    return result.as_dict()
