"""Online collector benchmark (issue #28): the filesystem sweep against the registry's own
collector on the same tree, and the mark's peak memory at 1,000,000 blobs.

    .venv/bin/python bench/online_gc.py            # everything: 15 minutes on 2 busy cores,
                                                   # then as long again removing the copies
    .venv/bin/python bench/online_gc.py --quick    # small trees, no README update

1. Filesystem: a registry-shaped tree (the filesystem driver's layout, as StorageTree writes it:
   content-addressed blobs, layer links, revision links, tags) of 500, 1,000 and 2,000
   repositories x 10 images, each a manifest, a config, 2 of 200 shared base layers and 3
   layers of its own; every 5th image deleted as the registry deletes a manifest (its revision
   link and tag gone, its layer links left), so 5 blobs per deleted image are garbage. Every file is aged 3 hours
   (past GC_GRACE_MINUTES). The tree is copied twice (untimed); on copy A runs Debian's
   `docker-registry garbage-collect` (the offline collector, registry stopped) with the config
   Oyster's `collector_config()` writes for the filesystem driver; on copy B runs
   `online_gc.collect_online` (real run, REGISTRY_BLOB_CACHE=none, GC_SETTLE_SECONDS=0) in a
   Django subprocess on a fresh migrated SQLite. Both freed blob sets are compared (remaining
   `blobs/`, Oyster's trash, the registry's "eligible" lines, the tree's own garbage list).
   At the largest size the rounds alternate which collector goes first. Then: a later Oyster
   run on B with GC_TRASH_HOURS=0 (the purge); at the largest size, an instrumented run and
   purge on a third copy that split each phase into listing, manifest reads, deletes,
   renames and database time (the purge with 1,000 recent registry events in the audit log).
2. Synthetic listing (bench/storage_scan.py's generator, no I/O): `scan.mark()` at 100,000 and
   1,000,000 blobs in a subprocess each, against iterating the same listing (baseline) and the
   usage scan (`scan.scan()`); wall and CPU seconds, peak RSS (VmHWM).
"""

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
from storage_scan import Layout, peak_rss_mb

REPO_ROOT = common.REPO_ROOT
sys.path.insert(0, str(REPO_ROOT))
MARKER = "online_gc"
REGISTRY_BINARY = "/usr/bin/docker-registry"
V2 = "docker/registry/v2/"
TRASH = "oyster-trash/"
IMAGES_PER_REPOSITORY = 10
DELETED_EVERY = 5  # the 5th and 10th image of each repository: deleted
BASE_LAYERS = 200
OWN_LAYERS = 3
AGE_SECONDS = 3 * 3600  # older than GC_GRACE_MINUTES (60)
# Registry events (pulls of other blobs) in the audit log for the instrumented purge: an hour
# of a registry in use; the collector looks at the grace period's events before each step.
EVENTS = 1000
CONCURRENCY = int(os.environ.get("STORAGE_READ_CONCURRENCY", "8"))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# --- The tree ---------------------------------------------------------------------------------


class Tree:
    """What `build_tree` wrote: every blob's size, and which blobs are garbage."""

    def __init__(self):
        self.blobs = {}  # hex -> size
        self.garbage = set()
        self.files = 0
        self.manifests = 0


def build_tree(root, repositories, seed=28):
    rng = random.Random(seed)
    v2 = os.path.join(root, V2)
    aged = time.time() - AGE_SECONDS
    tree = Tree()
    made = set()

    def write(relative, data):
        path = v2 + relative
        directory = os.path.dirname(path)
        if directory not in made:
            os.makedirs(directory, exist_ok=True)
            made.add(directory)
        with open(path, "wb") as handle:
            handle.write(data)
        os.utime(path, (aged, aged))
        tree.files += 1

    def blob(data):
        hex_digest = hashlib.sha256(data).hexdigest()
        if hex_digest not in tree.blobs:
            write(f"blobs/sha256/{hex_digest[:2]}/{hex_digest}/data", data)
            tree.blobs[hex_digest] = len(data)
        return hex_digest

    def link(data_hex):
        return f"sha256:{data_hex}".encode()

    base = [blob(rng.randbytes(rng.randint(16_384, 65_536))) for _ in range(BASE_LAYERS)]
    for number in range(repositories):
        repository = f"repositories/team{number % 37:02d}/service-{number:05d}/"
        for image in range(IMAGES_PER_REPOSITORY):
            serial = number * IMAGES_PER_REPOSITORY + image
            shared = sorted({base[serial % BASE_LAYERS], base[serial * 7 % BASE_LAYERS]})
            own = [blob(rng.randbytes(rng.randint(1024, 8192))) for _ in range(OWN_LAYERS)]
            config_data = json.dumps(
                {"architecture": "amd64", "os": "linux", "created": serial, "rootfs": {}}
            ).encode()
            config = blob(config_data)
            layers = shared + own
            manifest_data = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": f"sha256:{config}",
                        "size": len(config_data),
                    },
                    "layers": [
                        {
                            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": f"sha256:{layer}",
                            "size": tree.blobs[layer],
                        }
                        for layer in layers
                    ],
                }
            ).encode()
            manifest = blob(manifest_data)
            tree.manifests += 1
            for layer in [config, *layers]:
                write(f"{repository}_layers/sha256/{layer}/link", link(layer))
            if image % DELETED_EVERY == DELETED_EVERY - 1:
                # Deleted through the API: revision link and tag gone, layer links left.
                tree.garbage.update([manifest, config, *own])
                continue
            write(f"{repository}_manifests/revisions/sha256/{manifest}/link", link(manifest))
            tag = f"{repository}_manifests/tags/v{image}/"
            write(f"{tag}current/link", link(manifest))
            write(f"{tag}index/sha256/{manifest}/link", link(manifest))
    return tree


def blob_data(root):
    """{hex: size} of every `blobs/sha256/<xx>/<hex>/data` under root, and how many blob
    directories are left without data."""
    found, empty = {}, 0
    base = os.path.join(root, V2, "blobs", "sha256")
    for prefix in os.scandir(base):
        for directory in os.scandir(prefix.path):
            data = os.path.join(directory.path, "data")
            try:
                found[directory.name] = os.stat(data).st_size
            except FileNotFoundError:
                empty += 1
    return found, empty


def trash_data(root):
    """{hex: size} of what Oyster's trash holds (`oyster-trash/<batch>/sha256/<hex>`)."""
    found = {}
    base = os.path.join(root, TRASH)
    if not os.path.isdir(base):
        return found
    for batch in os.scandir(base):
        if batch.is_dir():
            for entry in os.scandir(os.path.join(batch.path, "sha256")):
                found[entry.name] = entry.stat().st_size
    return found


def layer_links_to(root, digests):
    """How many `_layers` links under root name one of `digests` (hex)."""
    count = 0
    for directory, _, files in os.walk(os.path.join(root, V2, "repositories")):
        if (
            "link" in files
            and "/_layers/sha256/" in directory
            and os.path.basename(directory) in digests
        ):
            count += 1
    return count


def copy_tree(source, target):
    subprocess.run(["cp", "-a", source, target], check=True)


def remove_tree(root):
    subprocess.run(["rm", "-rf", root], check=True)


def settled():
    """Write back what earlier steps left dirty (copies, the other collector's deletes), so
    that the kernel's writeback does not land in the next timed run. Untimed."""
    os.sync()


# --- Running things ---------------------------------------------------------------------------


def spawn(args, out_path, env=None, cwd=None):
    """Run `args` with output to `out_path`: (exit code, wall seconds, CPU seconds, peak RSS MB)
    of that child alone (wait4)."""
    started = time.perf_counter()
    with open(out_path, "wb") as out:
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return (
        process.returncode,
        time.perf_counter() - started,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
    )


def collector_config(root):
    """What `registry_admin.collector.collector_config()` writes for the filesystem driver."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "formatter": "text"},
        "storage": {"filesystem": {"rootdirectory": root}, "delete": {"enabled": True}},
        "http": {"addr": "127.0.0.1:0"},
    }


def run_registry_collector(root, work):
    import yaml

    config = os.path.join(work, "registry-gc.yml")
    Path(config).write_text(yaml.safe_dump(collector_config(root), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
    log = os.path.join(work, "registry-gc.log")
    load = common.load_average()
    code, seconds, cpu, rss = spawn([REGISTRY_BINARY, "garbage-collect", config], log, env=env)
    output = Path(log).read_text(errors="replace")
    if code:
        sys.exit(f"docker-registry garbage-collect exited {code}: {output[-2000:]}")
    eligible = {
        line.rsplit("sha256:", 1)[1].strip()
        for line in output.splitlines()
        if "blob eligible for deletion: sha256:" in line
    }
    return {
        "load": load,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_mb": rss,
        "eligible": eligible,
    }


def oyster_env(root, data_dir, trash_hours=24, events=0):
    return {
        "BENCH_AUDIT_EVENTS": str(events),
        **common.page_bench_env(),
        "DJANGO_SETTINGS_MODULE": "portal.settings_test",
        "DATA_DIR": data_dir,
        "STORAGE_BACKEND": "filesystem",
        "STORAGE_FILESYSTEM_ROOT": root,
        "STORAGE_READ_CONCURRENCY": str(CONCURRENCY),
        "REGISTRY_BLOB_CACHE": "none",
        "GC_SETTLE_SECONDS": "0",
        "GC_GRACE_MINUTES": "60",
        "GC_TRASH_HOURS": str(trash_hours),
    }


def run_oyster(root, work, mode, data_dir=None, trash_hours=24, events=0):
    """A child running collect_online on `root` (`mode`: collect, instrument), on the database
    in `data_dir` (a new one by default); `events` registry events (pulls of other blobs) are
    added to the audit log first, as recent as the run. Returns the child's report with its
    process's wall time and CPU time added."""
    data_dir = data_dir or tempfile.mkdtemp(prefix="data-", dir=work)
    log = tempfile.mkstemp(
        prefix=f"oyster-{mode}-{os.path.basename(root)}-", suffix=".log", dir=work
    )[1]
    code, seconds, cpu, rss = spawn(
        [common.PYTHON, __file__, "--child-oyster", mode],
        log,
        env=oyster_env(root, data_dir, trash_hours, events),
        cwd=REPO_ROOT,
    )
    output = Path(log).read_text(errors="replace")
    if code:
        sys.exit(f"the Oyster child ({mode}) exited {code}: {output[-3000:]}")
    [line] = [line for line in output.splitlines() if line.startswith("RESULT ")]
    report = json.loads(line.removeprefix("RESULT "))
    report |= {"process_seconds": seconds, "process_cpu_seconds": cpu, "data_dir": data_dir}
    return report


# --- The Oyster child -------------------------------------------------------------------------


def rss_now_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


class PhaseClock:
    """The process's CPU seconds (every thread) at the start of each phase, from the
    collector's progress reports (a phase starts with a report without counts)."""

    def __init__(self):
        self.started = time.process_time()
        self.at = {}

    def progress(self, message, done=None, total=None):
        if done is None and total is None and message not in self.at:
            self.at[message] = time.process_time() - self.started


class Instruments:
    """Where the time goes, by phase: the backend's calls and the database's queries."""

    def __init__(self, clock):
        self.clock = clock
        self.phase = "start"
        self.lock = threading.Lock()
        self.stats = {}
        self.phase_started = {}
        self.references_at = {}

    def add(self, kind, seconds, count=1):
        with self.lock:
            entry = self.stats.setdefault(self.phase, {}).setdefault(kind, [0, 0.0])
            entry[0] += count
            entry[1] += seconds

    def progress(self, message, done=None, total=None):
        self.clock.progress(message, done, total)
        if done is None and total is None and message != self.phase:
            from registry_admin.models import ManifestReferences

            self.phase = message
            self.phase_started[message] = time.perf_counter()
            # Untimed: the scan's manifest-reference cache as each phase starts.
            self.references_at[message] = ManifestReferences.objects.count()

    def time_bulk_writes(self):
        """Time QuerySet.bulk_create and bulk_update whole (Python and queries): the
        checkpoint rows' writes."""
        from django.db.models.query import QuerySet

        for method in ("bulk_create", "bulk_update"):
            original = getattr(QuerySet, method)

            def timed(queryset, *args, original=original, method=method, **kwargs):
                started = time.perf_counter()
                try:
                    return original(queryset, *args, **kwargs)
                finally:
                    self.add(method, time.perf_counter() - started, len(args[0]))

            setattr(QuerySet, method, timed)

    def time_event_lookups(self, run_class):
        """Time the collector's look-ups of new registry events whole (query and rows)."""
        original = run_class._events_since_watch

        def timed(run):
            started = time.perf_counter()
            try:
                return original(run)
            finally:
                self.add("event look-ups", time.perf_counter() - started)

        run_class._events_since_watch = timed

    def database(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.add("database", time.perf_counter() - started)


class TimedBackend:
    """The filesystem backend, timing each call on behalf of `Instruments`."""

    def __init__(self, inner, instruments):
        self.inner, self.instruments = inner, instruments
        self.kind = inner.kind

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def list_entries(self, prefix, prune=None):
        entries, spent, count = self.inner.list_entries(prefix, prune), 0.0, 0
        clock = time.perf_counter
        try:
            while True:
                started = clock()
                try:
                    entry = next(entries)
                except StopIteration:
                    spent += clock() - started
                    return
                spent += clock() - started
                count += 1
                yield entry
        finally:
            self.instruments.add(f"listing {prefix.rstrip('/').rsplit('/', 1)[-1]}/", spent, count)

    def _timed(self, kind, call, *args, count=1):
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.instruments.add(kind, time.perf_counter() - started, count)

    def read(self, path, max_bytes):
        return self._timed("reads (thread-seconds)", self.inner.read, path, max_bytes)

    def delete_objects(self, paths, progress=None):
        paths = list(paths)
        self.instruments.add("delete calls", 0.0)
        return self._timed("deletes", self.inner.delete_objects, paths, count=len(paths))

    def move_objects(self, moves, progress=None):
        moves = list(moves)
        return self._timed("renames", self.inner.move_objects, moves, count=len(moves))

    def write_object(self, path, data):
        return self._timed("writes", self.inner.write_object, path, data)

    def object_exists(self, path):
        return self._timed("exists", self.inner.object_exists, path)


def seed_registry_events(count):
    """`count` registry pull events of blobs not in the tree, timestamped now: a registry in
    use (the collector reads the grace period's events before each step)."""
    import uuid

    from django.utils import timezone

    from registry_admin.models import AuditEvent

    now = timezone.now()
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                source=AuditEvent.Source.REGISTRY,
                event_id=str(uuid.uuid4()),
                timestamp=now,
                action="pull",
                kind=AuditEvent.Kind.BLOB,
                repository="bench/pulled",
                digest="sha256:" + hashlib.sha256(str(number).encode()).hexdigest(),
                size=1000,
            )
            for number in range(count)
        ],
        batch_size=500,
    )


def child_oyster(mode):
    """Runs in a subprocess (environment from `oyster_env`): one online collection; prints
    RESULT and JSON."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django.db import connection
    from django.db.models import Count

    from registry_admin import online_gc, storage
    from registry_admin.models import CollectedBlob, ManifestReferences

    events = int(os.environ.get("BENCH_AUDIT_EVENTS", "0"))
    if events:
        seed_registry_events(events)
    backend = storage.get_backend()
    clock = PhaseClock()
    instruments = Instruments(clock) if mode == "instrument" else None
    if instruments:
        backend = TimedBackend(backend, instruments)
        instruments.time_bulk_writes()
        instruments.time_event_lookups(online_gc._Run)
    rss_before = rss_now_mb()
    reset_peak_rss()
    load = common.load_average()
    started, cpu = time.perf_counter(), time.process_time()
    clock.started = cpu
    if instruments:
        with connection.execute_wrapper(instruments.database):
            result = online_gc.collect_online(
                "bench", dry_run=False, progress=instruments.progress, backend=backend
            )
        instruments.progress("end")
    else:
        result = online_gc.collect_online(
            "bench", dry_run=False, progress=clock.progress, backend=backend
        )
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    report = {
        "events": events,
        "load": load,
        "seconds": seconds,
        "phase_cpu": clock.at,
        "cpu_seconds": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "result": result.as_dict(),
        "rows": dict(CollectedBlob.objects.order_by().values_list("state").annotate(n=Count("pk"))),
        "manifest_references_after": ManifestReferences.objects.count(),
    }
    if instruments:
        report["stats"] = instruments.stats
        report["references_at"] = instruments.references_at
    print("RESULT " + json.dumps(report), flush=True)


# --- The filesystem comparison ----------------------------------------------------------------


def phase_durations(result):
    """[(phase name, seconds)] from OnlineGcResult.phases (elapsed at each phase's start)."""
    items = list(result["phases"].items())
    ends = [start for _, start in items[1:]] + [result["seconds"]]
    return [(name, end - start) for (name, start), end in zip(items, ends, strict=True)]


def phase_cpu(report):
    """{phase name: CPU seconds} of a child's report (every thread of the process)."""
    items = list(report["phase_cpu"].items())
    ends = [start for _, start in items[1:]] + [report["cpu_seconds"]]
    return {name: end - start for (name, start), end in zip(items, ends, strict=True)}


def short_phase(name):
    for prefix, short in (
        ("Recovering", "0 recover + purge"),
        ("Marking", "1 mark (listing + manifest reads)"),
        ("Unlinking", "2 unlink"),
        ("Waiting for pushes", "3 settle (0 s) + re-mark"),
        ("Moving", "4 sweep (renames into the trash)"),
        ("Waiting, then", "5 re-check"),
        ("end", "end"),
    ):
        if name.startswith(prefix):
            return short
    return name


def check_same(tree, registry, a_root, b_root):
    """Both collectors freed exactly the tree's garbage: the figures that say so."""
    original = tree.blobs
    left_a, empty_a = blob_data(a_root)
    left_b, empty_b = blob_data(b_root)
    trash = trash_data(b_root)
    deleted_a = set(original) - set(left_a)
    deleted_b = set(original) - set(left_b)
    checks = {
        "registry deleted = tree's garbage": deleted_a == tree.garbage,
        "registry's eligible lines = what it deleted": registry["eligible"] == deleted_a,
        "Oyster took = registry deleted": deleted_b == deleted_a,
        "Oyster's trash = what it took": set(trash) == deleted_b,
        "trash sizes = original sizes": all(trash[h] == original[h] for h in trash),
        "remaining blobs identical": left_a == left_b,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        sys.exit(f"the collectors disagree: {failed}")
    return {
        "deleted_count": len(deleted_a),
        "deleted_bytes": sum(original[h] for h in deleted_a),
        "trash_count": len(trash),
        "trash_bytes": sum(trash.values()),
        "empty_blob_dirs_a": empty_a,
        "empty_blob_dirs_b": empty_b,
        "dangling_layer_links_a": layer_links_to(a_root, deleted_a),
        "dangling_layer_links_b": layer_links_to(b_root, deleted_b),
        "checks": list(checks),
    }


BEGAN = time.perf_counter()


def say(text):
    print(f"[{time.perf_counter() - BEGAN:6.0f} s] {text}", flush=True)


def bench_tree(repositories, rounds, work, extras):
    """Build one tree; `rounds` comparisons on fresh copies, alternating which goes first;
    after the last, a later run on the same copy that purges the trash; with `extras`, an
    instrumented run and purge on a third copy (the purge with EVENTS registry events in the
    audit log)."""
    source = os.path.join(work, f"tree-{repositories}")
    started = time.perf_counter()
    tree = build_tree(source, repositories)
    built = time.perf_counter() - started
    say(
        f"tree {repositories:,} repositories: {len(tree.blobs):,} blobs, {tree.files:,} files, "
        f"{len(tree.garbage):,} garbage; built in {built:.0f} s"
    )
    outcome = {
        "repositories": repositories,
        "blobs": len(tree.blobs),
        "files": tree.files,
        "manifests": tree.manifests,
        "garbage": len(tree.garbage),
        "garbage_bytes": sum(tree.blobs[h] for h in tree.garbage),
        "total_bytes": sum(tree.blobs.values()),
        "rounds": [],
    }
    for number in range(rounds):
        a_root = os.path.join(work, f"a-{repositories}-{number}")
        b_root = os.path.join(work, f"b-{repositories}-{number}")
        copy_tree(source, a_root)
        copy_tree(source, b_root)
        oyster_first = number % 2 == 1
        load = common.load_average()
        settled()
        if oyster_first:
            oyster = run_oyster(b_root, work, "collect")
            settled()
            registry = run_registry_collector(a_root, work)
        else:
            registry = run_registry_collector(a_root, work)
            settled()
            oyster = run_oyster(b_root, work, "collect")
        same = check_same(tree, registry, a_root, b_root)
        entry = {
            "first": "Oyster" if oyster_first else "registry",
            "load": load,
            "registry": {k: v for k, v in registry.items() if k != "eligible"},
            "oyster": oyster,
            "same": same,
            "ratio": oyster["seconds"] / registry["seconds"],
        }
        say(
            f"  round {number + 1} ({entry['first']} first, load {load:.1f}): registry "
            f"{registry['seconds']:.1f} s, Oyster {oyster['seconds']:.1f} s "
            f"(ratio {entry['ratio']:.2f}); both freed {same['deleted_count']:,} blobs, "
            f"{same['deleted_bytes']:,} bytes"
        )
        if number == rounds - 1:
            # A later run after GC_TRASH_HOURS (0 here): recover, purge, mark again.
            settled()
            purge = run_oyster(b_root, work, "collect", oyster["data_dir"], trash_hours=0)
            left = trash_data(b_root)
            entry["purge"] = purge | {"trash_left": len(left)}
            say(
                f"  later run (purge): {purge['seconds']:.1f} s, purged "
                f"{purge['result']['purged_count']:,}; trash left {len(left)}"
            )
        outcome["rounds"].append(entry)
    if extras:
        c_root = os.path.join(work, f"c-{repositories}")
        copy_tree(source, c_root)
        settled()
        collected = run_oyster(c_root, work, "instrument")
        settled()
        purged = run_oyster(
            c_root, work, "instrument", collected["data_dir"], trash_hours=0, events=EVENTS
        )
        outcome["instrumented"] = {"collect": collected, "purge": purged}
        say(
            f"  instrumented: run {collected['seconds']:.1f} s, later run (purge, {EVENTS:,} "
            f"registry events in the grace period) {purged['seconds']:.1f} s"
        )
    return outcome


# --- The mark's memory ------------------------------------------------------------------------


def child_synthetic(mode, blob_count):
    """Runs in a subprocess: iterate (baseline), mark or scan the synthetic listing."""
    # The same imports in every mode, for a fair RSS.
    from registry_admin.storage.scan import mark, scan

    layout = Layout(blob_count)
    started, cpu = time.perf_counter(), time.process_time()
    if mode == "iterate":
        outcome = {"entries": sum(1 for _ in layout.entries())}
    elif mode == "mark":
        marked = mark(layout.entries(), layout.read, read_concurrency=1)
        outcome = {
            "entries": marked.entry_count,
            "blobs": marked.blob_count,
            "unreferenced": len(marked.unreferenced),
            "manifests_read": marked.manifests_read,
        }
    else:
        result = scan(layout.entries(), layout.read, read_concurrency=1)
        outcome = {
            "entries": result.entry_count,
            "blobs": result.blob_count,
            "unreferenced": result.reclaimable_count,
            "manifests_read": result.manifests_read,
        }
    outcome["seconds"] = time.perf_counter() - started
    outcome["cpu_seconds"] = time.process_time() - cpu
    outcome["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(outcome), flush=True)


def bench_mark(sizes, work):
    rows = []
    for blob_count in sizes:
        row = {"blob_count": blob_count}
        for mode in ("iterate", "mark", "scan"):
            log = os.path.join(work, f"synthetic-{mode}-{blob_count}.log")
            code, _, _, _ = spawn(
                [common.PYTHON, __file__, "--child-synthetic", mode, str(blob_count)],
                log,
                cwd=REPO_ROOT,
            )
            output = Path(log).read_text(errors="replace")
            if code:
                sys.exit(f"synthetic {mode} {blob_count} exited {code}: {output[-2000:]}")
            [line] = [line for line in output.splitlines() if line.startswith("RESULT ")]
            row[mode] = json.loads(line.removeprefix("RESULT "))
        assert row["mark"]["unreferenced"] == row["scan"]["unreferenced"]
        rows.append(row)
        say(
            f"synthetic {blob_count:,} blobs: mark {row['mark']['seconds']:.1f} s "
            f"{row['mark']['peak_rss_mb']:.0f} MB; scan {row['scan']['seconds']:.1f} s "
            f"{row['scan']['peak_rss_mb']:.0f} MB; bare {row['iterate']['seconds']:.1f} s "
            f"{row['iterate']['peak_rss_mb']:.0f} MB"
        )
    return rows


# --- The README section -----------------------------------------------------------------------


def phase_stats(report, prefix):
    """(wall seconds, {kind: [count, seconds]}) of the phase whose name starts with `prefix`."""
    durations = dict(phase_durations(report["result"]))
    for name, stats in report["stats"].items():
        if name.startswith(prefix) and name in durations:
            return durations[name], stats
    return 0.0, {}


def relisting_name(phase):
    for start, short in (("Waiting for pushes", "re-mark"), ("Waiting, then", "re-check")):
        if phase.startswith(start):
            return short
    return phase.split(",")[0].lower()


def time_notes(instrumented):
    """What the instrumented runs say, in sentences."""
    collect, purge = instrumented["collect"], instrumented["purge"]
    notes = []
    wall, stats = phase_stats(collect, "Moving")
    renames, database = stats.get("renames", [0, 0.0]), stats.get("database", [0, 0.0])
    unlink_wall, unlink_stats = phase_stats(collect, "Unlinking")
    create = unlink_stats.get("bulk_create", [0, 0.0])
    if renames[0]:
        notes.append(
            f"- Sweep: the {renames[0]:,} renames took {renames[1]:.2f} s of the phase's "
            f"{wall:.2f} s and its {database[0]:,} queries {database[1]:.2f} s to execute (the "
            "checkpoint is one UPDATE per batch of 500). Unlink: the link deletions took "
            f"{unlink_stats.get('deletes', [0, 0.0])[1]:.2f} s and the checkpoint's "
            f"`bulk_create` of {create[0]:,} rows {create[1]:.2f} s of the phase's "
            f"{unlink_wall:.2f} s."
        )
    relisted = [
        (name, stats.get("listing repositories/", [0, 0.0]))
        for name, stats in collect["stats"].items()
        if "listing repositories/" in stats
    ]
    if relisted:
        notes.append(
            "- Re-listings (re-mark, re-check) walk only into the layer links of the candidates "
            "and the revisions the mark did not know: "
            + "; ".join(
                f"{relisting_name(name)}: {seconds:.2f} s, {count:,} objects"
                for name, (count, seconds) in relisted
            )
            + "."
        )
    wall, stats = phase_stats(purge, "Recovering")
    deleted, calls = stats.get("deletes", [0, 0.0]), stats.get("delete calls", [0, 0.0])
    database = stats.get("database", [0, 0.0])
    events = stats.get("event look-ups", [0, 0.0])
    if deleted[0]:
        notes.append(
            f"- Purge: {wall:.2f} s for {deleted[0]:,} trash files "
            f"({1000 * wall / deleted[0]:.2f} ms each, the recovery's re-listing included): "
            f"{calls[0]:,} storage delete calls taking {deleted[1]:.2f} s, {database[0]:,} "
            f"queries taking {database[1]:.2f} s, {events[0]:,} look-ups of new registry events "
            f"({events[1]:.2f} s with {EVENTS:,} recent events in the audit log), all a batch "
            "of 500 at a time."
        )
    refs = collect["references_at"]
    at_unlink = next((v for k, v in refs.items() if k.startswith("Unlinking")), 0)
    if at_unlink and not collect["manifest_references_after"]:
        notes.append(
            f"- The usage scan's manifest-reference cache held {at_unlink:,} rows after the "
            "mark and none after the run: the re-mark's `relist()` passes a "
            "`ManifestReferenceCache` whose `prune()` keeps only the manifests that listing "
            "read (the new revisions: none), so the next usage scan reads every manifest again."
        )
    return notes


def markdown(report):
    trees, synthetic = report["trees"], report["synthetic"]
    big = trees[-1]
    lines = [
        f"<!-- {MARKER} -->",
        "## Online collector (`bench/online_gc.py`)",
        "",
        f"Machine: {report['machine']}. Date: {report['date']}. Load average at the start: "
        f"{report['load']:.1f} (1 min; the 2 cores are shared with other work, so every "
        f"figure is a pessimistic one); whole run {report['elapsed']:.0f} s. "
        f"`{report['registry_version']}`.",
        "",
        "**Filesystem sweep against the registry's own collector, same tree, same run.** A "
        "registry-shaped tree (the filesystem driver's layout: content-addressed blobs, layer "
        f"links, revision links, tags) of N repositories x {IMAGES_PER_REPOSITORY} images; each "
        f"image a manifest, a config, 2 of {BASE_LAYERS} shared base layers (16-64 KB) and "
        f"{OWN_LAYERS} layers of its own (1-8 KB); every {DELETED_EVERY}th image deleted as the "
        "registry deletes a manifest (revision link and tag gone, layer links left), so 5 blobs "
        "per deleted image are garbage. Every file aged 3 hours (past GC_GRACE_MINUTES=60). The "
        "tree is copied twice (`cp -a`, untimed, so both copies are equally warm in the page "
        "cache). Copy A: `docker-registry garbage-collect` (the offline collector, as with the "
        "registry stopped) with the config `collector_config()` writes for the filesystem "
        "driver. Copy B: `online_gc.collect_online` (real run) in a Django subprocess on a "
        "fresh, migrated SQLite, with `REGISTRY_BLOB_CACHE=none` (no registry API call), "
        "**`GC_SETTLE_SECONDS=0`** (a real run waits twice that long for pushes in flight: "
        f"20 s more at the default 10) and `STORAGE_READ_CONCURRENCY={CONCURRENCY}`. "
        "Oyster's time is the `collect_online` call (Django start-up and migrations excluded: "
        "shown separately); the registry's is its whole process. CPU and peak RSS per process "
        "(wait4); load: the 1-minute load average as each started. Goal: Oyster / registry "
        "<= 1.0. Wall minus CPU is waiting, for the disk or for a core: the registry's "
        "collector waits for the disk more, Oyster's run is CPU-bound Python (its manifest "
        "reads overlap in 8 threads under the GIL). With other work on the same two cores, "
        "a round's wall times can double from one round to the next; CPU seconds move less.",
        "",
        "| repositories | blobs | files | garbage blobs (bytes) | round (first) | load "
        "registry, Oyster | registry s (CPU s, peak RSS) | Oyster s (CPU s, peak RSS) | "
        "Oyster / registry: wall | CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tree in trees:
        for number, entry in enumerate(tree["rounds"]):
            registry, oyster = entry["registry"], entry["oyster"]
            lines.append(
                f"| {tree['repositories']:,} | {tree['blobs']:,} | {tree['files']:,} | "
                f"{tree['garbage']:,} ({tree['garbage_bytes'] / 1e6:.0f} MB) | {number + 1} "
                f"({entry['first']}) | {registry['load']:.1f}, {oyster['load']:.1f} | "
                f"{registry['seconds']:.1f} ({registry['cpu_seconds']:.1f}, "
                f"{registry['peak_rss_mb']:.0f} MB) | {oyster['seconds']:.1f} "
                f"({oyster['cpu_seconds']:.1f}, {oyster['peak_rss_mb']:.0f} MB) | "
                f"**{entry['ratio']:.2f}** | "
                f"{oyster['cpu_seconds'] / registry['cpu_seconds']:.2f} |"
            )
    ratios = [entry["ratio"] for entry in big["rounds"]]
    cpu_ratios = [
        entry["oyster"]["cpu_seconds"] / entry["registry"]["cpu_seconds"] for entry in big["rounds"]
    ]
    same = big["rounds"][-1]["same"]
    oyster = big["rounds"][-1]["oyster"]
    lines += [
        "",
        f"At {big['repositories']:,} repositories: median ratio {statistics.median(ratios):.2f} "
        f"(wall), {statistics.median(cpu_ratios):.2f} (CPU). "
        f"Oyster's process, start to end, took {oyster['process_seconds']:.1f} s (Django "
        f"start-up and migrating a fresh SQLite included); it held {oyster['rss_before_mb']:.0f} "
        "MB before the run. Every round checked that both freed exactly the same blobs: "
        f"{same['deleted_count']:,} blobs, {same['deleted_bytes']:,} bytes, equal to the tree's "
        "own garbage list and to the registry's \"blob eligible for deletion\" lines; Oyster's "
        f"trash holds {same['trash_count']:,} files, {same['trash_bytes']:,} bytes (each at "
        "its original size), and the remaining `blobs/` trees are identical.",
        "",
        "What each leaves: the registry's collector deletes each blob's directory "
        "(`blobs/sha256/<xx>/<hex>/`, the bytes are free at once) and, on 2.8, leaves the "
        f"layer links to what it deleted ({same['dangling_layer_links_a']:,} dangling "
        "`_layers/.../link` files here: a HEAD of such a layer answers 404, as the data is "
        "gone, so a client uploads it again; harmless, but they never go). "
        "Oyster removes those links first "
        f"({same['dangling_layer_links_b']} left), then moves each blob's `data` into "
        "`oyster-trash/<run>/sha256/<hex>` (a rename: no bytes freed yet) and leaves the "
        f"emptied `blobs/sha256/<xx>/<hex>/` directories ({same['empty_blob_dirs_b']:,}; the "
        "registry treats them as absent blobs). The bytes are freed by a later run's purge, "
        "once the trash is older than GC_TRASH_HOURS (default 24): measured below as a second "
        "run on copy B (a new process on the same database) with `GC_TRASH_HOURS=0`, which "
        "recovers (re-lists `repositories/`), purges, and marks again (finding nothing).",
        "",
        "**Oyster's phases**: wall seconds (from `OnlineGcResult.phases`) and, in brackets, "
        "the process's CPU seconds (all threads), the last round of each size. The last "
        "column divides the CPU seconds per blob at the largest size by those at the "
        "smallest (CPU, as the wall time moves with the machine's other work): about 1 is "
        "linear, above 1 grows faster than the tree.",
        "",
        "| run: phase | "
        + " | ".join(f"{t['repositories']:,} repositories" for t in trees)
        + " | per blob, largest / smallest |",
        "|---|" + "---|" * len(trees) + "---|",
    ]
    scale = trees[-1]["blobs"] / trees[0]["blobs"]

    def growth(small, large):
        return f"{large / small / scale:.2f}" if small > 0.05 and len(trees) > 1 else "-"

    for run, label in (("oyster", "run"), ("purge", "later run (purge)")):
        reports = [t["rounds"][-1][run] for t in trees]
        walls = [{short_phase(n): s for n, s in phase_durations(r["result"])} for r in reports]
        cpus = [{short_phase(n): s for n, s in phase_cpu(r).items()} for r in reports]
        for name in dict.fromkeys(n for d in walls for n in d):
            if all(d.get(name, 0) < 0.005 for d in walls):
                continue  # a phase with nothing to do (a purge run's unlink, sweep...)
            lines.append(
                f"| {label}: {name} | "
                + " | ".join(
                    f"{wall.get(name, 0):.2f} ({cpu.get(name, 0):.2f})"
                    for wall, cpu in zip(walls, cpus, strict=True)
                )
                + f" | {growth(cpus[0].get(name, 0), cpus[-1].get(name, 0))} |"
            )
        lines.append(
            f"| **{label}: total** | "
            + " | ".join(f"**{r['seconds']:.2f}** ({r['cpu_seconds']:.2f})" for r in reports)
            + f" | {growth(reports[0]['cpu_seconds'], reports[-1]['cpu_seconds'])} |"
        )
    purged = [t["rounds"][-1]["purge"] for t in trees]
    lines += [
        "",
        "Purged: "
        + "; ".join(
            f"{p['result']['purged_count']:,} blobs ({p['result']['purged_bytes']:,} bytes), "
            f"{p['trash_left']} left in the trash"
            for p in purged
        )
        + ".",
    ]
    instrumented = big.get("instrumented")
    if instrumented:
        lines += [
            "",
            f"**Where the time goes** ({big['repositories']:,} repositories, a third copy, "
            "the backend and the database wrapped with timers). Run, then a later run (purge) "
            f"with **{EVENTS:,} registry events** (pulls of other blobs) in the audit log "
            "within the grace period, as a registry in use has. Listing: time spent in the "
            "sorted walk's generator (objects listed); reads: summed over the read pool's "
            "threads (they overlap); deletes: link files, or trash files in a purge; renames: "
            "data into the trash; database: every query (count). Reference cache: the rows of "
            "`ManifestReferences` (the usage scan's manifest-reference cache) as each phase "
            "starts.",
            "",
            "| run: phase | wall s | listing s (objects) | reads thread-s (count) | "
            "deletes s (files) | renames s (files) | writes + exists s | database s (queries) "
            "| reference cache rows |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for run, label in (("collect", "run"), ("purge", "later run (purge)")):
            report = instrumented[run]
            durations = dict(phase_durations(report["result"]))
            for name, stats in report["stats"].items():
                if name not in durations or durations[name] < 0.005:
                    continue

                def cell(kind, stats=stats):
                    count, seconds = stats.get(kind, (0, 0.0))
                    return f"{seconds:.2f} ({count:,})" if count else "-"

                listed = "; ".join(
                    f"{k.removeprefix('listing ')} {v[1]:.2f} ({v[0]:,})"
                    for k, v in stats.items()
                    if k.startswith("listing ")
                )
                small_calls = sum(stats.get(k, (0, 0.0))[1] for k in ("writes", "exists"))
                lines.append(
                    f"| {label}: {short_phase(name)} | {durations[name]:.2f} | {listed or '-'} "
                    f"| {cell('reads (thread-seconds)')} | {cell('deletes')} | "
                    f"{cell('renames')} | {small_calls:.2f} | {cell('database')} | "
                    f"{report['references_at'].get(name, 0):,} |"
                )
            lines.append(
                f"| {label}: **total** | **{report['seconds']:.2f}** | | | | | | | "
                f"{report['manifest_references_after']:,} after |"
            )
        lines += ["", *time_notes(instrumented)]
    lines += [
        "",
        "**The mark's peak memory** (bench/storage_scan.py's synthetic listing, no I/O: 50 base "
        "layers, 7 blobs per image, 100 images per repository, every 10th image deleted; "
        "manifests synthesised on read, sequential reads; one subprocess per run, peak RSS from "
        "VmHWM). Baseline: iterating the same generator alone. `scan.mark()` is the online "
        "collector's mark (blob and layer-link times kept, the unreferenced blobs as objects); "
        "`scan.scan()` the usage scan, for comparison.",
        "",
        "| blobs | objects listed | unreferenced | run | seconds (CPU s) | peak RSS | "
        "RSS above the bare listing |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in synthetic:
        bare = row["iterate"]["peak_rss_mb"]
        for mode, label in (
            ("iterate", "bare listing (baseline)"),
            ("mark", "`scan.mark()`"),
            ("scan", "`scan.scan()`"),
        ):
            r = row[mode]
            lines.append(
                f"| {row['blob_count']:,} | {r['entries']:,} | "
                f"{r.get('unreferenced', 0):,} | {label} | {r['seconds']:.1f} "
                f"({r['cpu_seconds']:.1f}) | {r['peak_rss_mb']:.0f} MB | "
                f"{r['peak_rss_mb'] - bare:.0f} MB |"
            )
    lines += [f"<!-- /{MARKER} -->", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small trees (smoke run)")
    parser.add_argument("--child-oyster", help=argparse.SUPPRESS)
    parser.add_argument("--child-synthetic", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--work", help="scratch directory (default: a new one under /tmp)")
    args = parser.parse_args()
    if args.child_oyster:
        child_oyster(args.child_oyster)
        return
    if args.child_synthetic:
        child_synthetic(args.child_synthetic[0], int(args.child_synthetic[1]))
        return
    os.environ.pop("DATABASE_URL", None)
    started = time.perf_counter()
    version = subprocess.run(
        [REGISTRY_BINARY, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    report = {
        "machine": common.machine(sqlite=True),
        "date": common.today(),
        "load": common.load_average(),
        "registry_version": version,
    }
    print(f"{report['machine']}; {report['date']}; load {report['load']:.1f}; {version}")
    sizes, rounds = ((50, 200), 1) if args.quick else ((500, 1000, 2000), 2)
    marks = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    work = args.work or tempfile.mkdtemp(prefix="oyster-bench-online-gc-")
    os.makedirs(work, exist_ok=True)
    try:
        # Every copy stays until the end: removing 500,000 files takes minutes of disk
        # writes, which would land in the next timed run.
        report["trees"] = [bench_tree(size, 1, work, extras=False) for size in sizes[:-1]]
        report["trees"].append(bench_tree(sizes[-1], rounds, work, extras=True))
        report["synthetic"] = bench_mark(marks, work)
        report["elapsed"] = time.perf_counter() - started
        print(json.dumps(report, default=sorted), flush=True)  # enough to render it again
        section = markdown(report)
        print(section)
        if not args.quick:
            common.write_section(section, marker=MARKER)
            print("bench/README.md updated.", flush=True)
    finally:
        for entry in os.scandir(work):
            if entry.is_dir() and entry.name.split("-")[0] in ("a", "b", "c", "tree"):
                remove_tree(entry.path)
        if not args.work:
            remove_tree(work)


if __name__ == "__main__":
    main()
