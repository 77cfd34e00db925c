"""Storage scan benchmark: Azurite rate vs a bare listing, and time + peak RSS at 100k / 1M blobs.

    .venv/bin/python bench/storage_scan.py            # everything (a few minutes on 2 cores)
    .venv/bin/python bench/storage_scan.py --quick    # smaller sizes, for a smoke run

1. Azurite: a registry-like tree of a few thousand blobs is uploaded to a fresh Azurite; each
   round times a bare `list_blobs` iteration over the same prefix (pages of 5,000, the baseline)
   and full scans through `AzureStorage` (listing + manifest and tag-link reads): cold at
   STORAGE_READ_CONCURRENCY (default 8), cold sequential (1), warm. Goal: cold scan rate /
   listing rate >= 0.8. Then the same tree on the filesystem backend: the bare walk vs scans.
2. Synthetic: an in-memory listing generator laid out like a registry (blobs in digest order,
   then each repository's layer links, revisions, tag links and uploads) feeds `storage.scan`,
   with manifests synthesised on read. Each size runs in its own subprocess, once iterating the
   generator only (the baseline) and once scanning, and reports wall time and peak RSS
   (VmHWM). Goal: 1M blobs within 300 MB RSS.
"""

import argparse
import contextlib
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
from common import machine

REPO_ROOT = common.REPO_ROOT
sys.path.insert(0, str(REPO_ROOT))

BASE_LAYERS = 50
UNIQUE_LAYERS = 5
BLOBS_PER_IMAGE = 2 + UNIQUE_LAYERS  # manifest + config + unique layers (bases are shared)
IMAGES_PER_REPOSITORY = 100
DELETED_EVERY = 10  # every 10th image's manifest is deleted: its blobs become reclaimable
MOVED_EVERY = 10  # every 10th tag was moved: its index also names the revision before
UNTAGGED_EVERY = 20  # every 20th revision lost its tag (still linked: an untagged revision)
V2 = "docker/registry/v2/"
CONCURRENCY = int(os.environ.get("STORAGE_READ_CONCURRENCY", "8"))


class Layout:
    """A registry of `blob_count` blobs whose digests sort in blob-number order.

    Digest of blob i: 8 hex digits of i * step (so ascending i is ascending digest, spread
    evenly over the 2-byte buckets) followed by 56 hex digits of sha256(i).
    """

    def __init__(self, blob_count, small_blobs=False):
        self.images = max(1, (blob_count - BASE_LAYERS) // BLOBS_PER_IMAGE)
        self.blob_count = BASE_LAYERS + self.images * BLOBS_PER_IMAGE
        self.step = (1 << 32) // self.blob_count
        self.repositories = max(1, self.images // IMAGES_PER_REPOSITORY)
        self.small_blobs = small_blobs

    def digest(self, blob):
        return f"{blob * self.step:08x}" + hashlib.sha256(str(blob).encode()).hexdigest()[8:]

    def blob_of(self, hex_digest):
        return int(hex_digest[:8], 16) // self.step

    def size(self, blob):
        if self.small_blobs:
            return 64 + blob % 900
        if blob < BASE_LAYERS:
            return 30_000_000 + blob * 1000
        return 1000 + (blob * 7919) % 20_000_000

    def image_blobs(self, image):
        first = BASE_LAYERS + image * BLOBS_PER_IMAGE
        manifest, config = first, first + 1
        layers = [image % BASE_LAYERS, (image * 7) % BASE_LAYERS] + list(
            range(first + 2, first + BLOBS_PER_IMAGE)
        )
        return manifest, config, sorted(set(layers))

    def manifest(self, image):
        _, config, layers = self.image_blobs(image)
        document = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"digest": "sha256:" + self.digest(config), "size": self.size(config)},
            "layers": [
                {"digest": "sha256:" + self.digest(layer), "size": self.size(layer)}
                for layer in layers
            ],
        }
        return json.dumps(document).encode()

    def repository_name(self, repository):
        return f"team{repository % 37}/service-{repository:06d}"

    def entries(self):
        """(path, size, last_modified) in the order a sorted listing gives them."""
        for blob in range(self.blob_count):
            hex_digest = self.digest(blob)
            size = self.size(blob)
            if self.small_blobs and self.is_manifest(blob):
                size = len(self.manifest((blob - BASE_LAYERS) // BLOBS_PER_IMAGE))
            yield f"{V2}blobs/sha256/{hex_digest[:2]}/{hex_digest}/data", size, 1.7e9
        names = sorted(
            (self.repository_name(r), r) for r in range(self.repositories)
        )  # listing order
        for name, repository in names:
            yield from self.repository_entries(name, repository)

    def is_manifest(self, blob):
        return blob >= BASE_LAYERS and (blob - BASE_LAYERS) % BLOBS_PER_IMAGE == 0

    def repository_entries(self, name, repository):
        base = f"{V2}repositories/{name}/"
        images = range(repository, self.images, self.repositories)
        layer_blobs, revisions = set(), []
        for image in images:
            manifest, config, layers = self.image_blobs(image)
            layer_blobs.add(config)
            layer_blobs.update(layers)
            if image % DELETED_EVERY:
                revisions.append(manifest)
        for hex_digest in sorted(self.digest(b) for b in layer_blobs):
            yield f"{base}_layers/sha256/{hex_digest}/link", 71, 1.7e9
        for hex_digest in sorted(self.digest(b) for b in revisions):
            yield f"{base}_manifests/revisions/sha256/{hex_digest}/link", 71, 1.7e9
        for number, blob in enumerate(revisions):
            if number % UNTAGGED_EVERY == UNTAGGED_EVERY - 1:
                continue  # untagged
            # Zero-padded: tags come in the listing's (sorted) order.
            tag = f"{base}_manifests/tags/v{number:05d}"
            yield f"{tag}/current/link", 71, 1.7e9
            indexed = {blob, revisions[number - 1]} if self.moved(number) else {blob}
            for hex_digest in sorted(self.digest(b) for b in indexed):
                yield f"{tag}/index/sha256/{hex_digest}/link", 71, 1.7e9
        if repository % 50 == 0:
            yield f"{base}_uploads/0f8d2c1e-{repository:04d}/data", 1234, 1.6e9
            yield f"{base}_uploads/0f8d2c1e-{repository:04d}/startedat", 20, 1.6e9

    @staticmethod
    def moved(number):
        return number > 0 and number % MOVED_EVERY == 0

    def tag_link(self, path):
        """The content of `.../<repository>/_manifests/tags/v<n>/current/link`: the digest of
        that repository's n-th revision (as `repository_entries` numbers them)."""
        name, tag = path[len(V2) + len("repositories/") :].split("/_manifests/tags/")
        repository, number = int(name[-6:]), int(tag.split("/", 1)[0][1:])
        images = range(repository, self.images, self.repositories)
        revisions = [self.image_blobs(image)[0] for image in images if image % DELETED_EVERY]
        return b"sha256:" + self.digest(revisions[number]).encode()

    def read(self, path, max_bytes):
        if path.endswith("/current/link"):
            return self.tag_link(path)
        hex_digest = path.rsplit("/", 2)[-2]
        blob = self.blob_of(hex_digest)
        if not self.is_manifest(blob):
            return b"\0" * 16
        return self.manifest((blob - BASE_LAYERS) // BLOBS_PER_IMAGE)

    def content(self, path, size):
        """Bytes to upload for an entry (Azurite run): manifests are real JSON."""
        if "/blobs/" in path:
            blob = self.blob_of(path.rsplit("/", 2)[-2])
            if self.is_manifest(blob):
                return self.manifest((blob - BASE_LAYERS) // BLOBS_PER_IMAGE)
            return os.urandom(size)
        if path.endswith("/current/link"):
            return self.tag_link(path)
        if path.endswith("/link"):
            return b"sha256:" + path.rsplit("/", 2)[-2].encode()
        return b"x" * size


def peak_rss_mb():
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    child would report its parent's peak; VmHWM belongs to the new address space."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_synthetic(blob_count, mode):
    """Runs in a subprocess: iterate (baseline) or scan the synthetic listing; print JSON."""
    from registry_admin import storage  # the same imports in both modes, for a fair RSS

    layout = Layout(blob_count)
    started, cpu_started = time.perf_counter(), time.process_time()
    if mode == "iterate":
        count = sum(1 for _ in layout.entries())
        outcome = {"entries": count}
    else:
        result = storage.scan(layout.entries(), layout.read, read_concurrency=1)
        outcome = {
            "entries": result.entry_count,
            "blobs": result.blob_count,
            "manifests": result.manifest_count,
            "repositories": len(result.repositories),
            "total_bytes": result.total_bytes,
            "reclaimable_bytes": result.reclaimable_bytes,
        }
    outcome["seconds"] = round(time.perf_counter() - started, 2)
    outcome["cpu_seconds"] = round(time.process_time() - cpu_started, 2)
    outcome["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(outcome))


def run_child(blob_count, mode):
    output = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(blob_count)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_synthetic(sizes):
    rows = []
    for blob_count in sizes:
        baseline = run_child(blob_count, "iterate")
        scanned = run_child(blob_count, "scan")
        rows.append({"blob_count": blob_count, "baseline": baseline, "scan": scanned})
        print(
            f"synthetic {blob_count:>9,} blobs: {scanned['entries']:,} entries, "
            f"{scanned['manifests']:,} manifests read; scan {scanned['seconds']} s, "
            f"{scanned['cpu_seconds']} s CPU (bare generator {baseline['seconds']} s), "
            f"peak RSS {scanned['peak_rss_mb']} MB "
            f"(bare generator {baseline['peak_rss_mb']} MB)",
            flush=True,
        )
    return rows


def upload_tree(container, layout):
    entries = list(layout.entries())

    def upload(entry):
        path, size, _ = entry
        container.upload_blob(path, layout.content(path, size), overwrite=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(upload, entries))
    return len(entries)


class DictCache:
    """The scan's manifest-reference cache in memory (the portal keeps it in the database)."""

    def __init__(self):
        self.known = {}

    def lookup(self, digests):
        return {d: self.known[d] for d in digests if d in self.known}

    def store(self, fresh):
        self.known.update(fresh)

    def prune(self, live):
        self.known = {d: refs for d, refs in self.known.items() if d in live}


def time_listing(backend, storage):
    """The baseline: the same client as the scan's, iterating the same listing, nothing else."""
    started = time.perf_counter()
    listed = sum(
        1
        for _ in backend.client.list_blobs(
            name_starts_with=storage.V2_PREFIX, results_per_page=storage.AZURE_PAGE_SIZE
        )
    )
    return listed, time.perf_counter() - started


def time_walk(backend, storage):
    started = time.perf_counter()
    listed = sum(1 for _ in backend.list_entries(storage.V2_PREFIX))
    return listed, time.perf_counter() - started


class CountingRead:
    """The backend's `read`, counting tag-link reads (the scan's result does not say)."""

    def __init__(self, read):
        self.inner, self.tag_links = read, 0

    def __call__(self, path, max_bytes):
        if path.endswith("/current/link"):
            self.tag_links += 1
        return self.inner(path, max_bytes)


def time_names(backend, storage):
    """The scan's own listing alone (Azure: repositories by name, blobs with sizes)."""
    started = time.perf_counter()
    listed = sum(1 for _ in backend.scan_entries())
    return listed, time.perf_counter() - started


def time_scan(backend, storage, cache, concurrency=CONCURRENCY):
    """A scan as `storage.scan_storage` runs it: the backend's scan listing, details on demand."""
    read = CountingRead(backend.read)
    started = time.perf_counter()
    result = storage.scan(
        backend.scan_entries(),
        read,
        read_concurrency=concurrency,
        cache=cache,
        details=backend.list_entries,
    )
    seconds = time.perf_counter() - started
    return (result, read.tag_links), seconds


def comparable(outcome):
    result, tag_links = outcome
    return result.as_dict() | {"duration_seconds": 0, "manifests_read": 0}, tag_links


def rounds_of(runners, rounds):
    """{kind: [seconds]} and the last outcome of each, the kinds in a rotating order each
    round: the machine's speed drifts during a run."""
    times, outcomes, kinds = {kind: [] for kind in runners}, {}, list(runners)
    for number in range(rounds):
        shift = number % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            outcomes[kind], seconds = runners[kind]()
            times[kind].append(seconds)
    return times, outcomes


def summary(times, baseline):
    """Medians, bests and ratios to `baseline` (to `<baseline>_pinned` for pinned runs)."""

    def base(kind):
        return times[baseline + "_pinned" if kind.endswith("_pinned") else baseline]

    return {
        "median": {kind: statistics.median(values) for kind, values in times.items()},
        "best": {kind: min(values) for kind, values in times.items()},
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "ratio": {
            kind: round(statistics.median(base(kind)) / statistics.median(values), 2)
            for kind, values in times.items()
        },
        "ratio_best": {
            kind: round(min(base(kind)) / min(values), 2) for kind, values in times.items()
        },
    }


@contextlib.contextmanager
def own_core(pid):
    """Azurite's threads on one core and this process on the others (as the Azure service
    runs on machines of its own), for the rounds inside; then both back on every core."""
    cores = sorted(os.sched_getaffinity(0))
    tasks = [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    for task in tasks:
        os.sched_setaffinity(task, {cores[-1]})
    os.sched_setaffinity(0, set(cores[:-1]))  # the scan's pool threads inherit it
    try:
        yield
    finally:
        os.sched_setaffinity(0, set(cores))
        for task in tasks:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(task, set(cores))


def bench_azurite(blob_count, rounds):
    """Cold: every manifest read from Azurite (first scan, or no cache), at the default
    concurrency and sequentially. Warm: the reference cache filled by an earlier scan, as for
    every scheduled scan after the first."""
    from azure.storage.blob import ContainerClient

    from registry_admin import storage
    from registry_admin.tests.harness import start_azurite

    layout = Layout(blob_count, small_blobs=True)
    with tempfile.TemporaryDirectory(prefix="oyster-bench-azurite-") as location:
        azurite = start_azurite(location)
        try:
            container = ContainerClient.from_connection_string(
                azurite.connection_string, "registry", connection_timeout=10, read_timeout=30
            )
            container.create_container()
            started = time.perf_counter()
            uploaded = upload_tree(container, layout)
            print(
                f"azurite: uploaded {uploaded:,} objects in {time.perf_counter() - started:.1f} s"
            )
            backend = storage.AzureStorage(
                container="registry", connection_string=azurite.connection_string, timeout=30
            )
            time_listing(backend, storage)  # warm Azurite and the connection pool
            warm_cache = DictCache()
            time_scan(backend, storage, warm_cache)
            times, outcomes = rounds_of(
                {
                    "list": lambda: time_listing(backend, storage),
                    "names": lambda: time_names(backend, storage),
                    "cold": lambda: time_scan(backend, storage, None),
                    "sequential": lambda: time_scan(backend, storage, None, 1),
                    "warm": lambda: time_scan(backend, storage, warm_cache),
                },
                rounds,
            )
            if len(os.sched_getaffinity(0)) >= 2:
                with own_core(azurite.process.pid):
                    pinned, _ = rounds_of(
                        {
                            "list_pinned": lambda: time_listing(backend, storage),
                            "cold_pinned": lambda: time_scan(backend, storage, None),
                        },
                        rounds,
                    )
                times |= pinned
        finally:
            azurite.stop()
    listed, (cold, tag_links), (warm, _) = outcomes["list"], outcomes["cold"], outcomes["warm"]
    assert cold.entry_count == warm.entry_count == listed == uploaded == outcomes["names"]
    assert all(revision.linked_at for revision in cold.untagged)  # link times listed on demand
    # The concurrent scan's figures are the sequential scan's, to the byte.
    assert comparable(outcomes["cold"]) == comparable(outcomes["sequential"])
    assert comparable(outcomes["cold"])[0] == comparable(outcomes["warm"])[0]
    report = summary(times, "list") | {
        "objects": listed,
        "blobs": cold.blob_count,
        "manifests": cold.manifest_count,
        "tags": sum(1 for path, _, _ in layout.entries() if path.endswith("/current/link")),
        "tag_links_read": tag_links,
        "untagged": len(cold.untagged),
        "manifests_read_cold": cold.manifests_read,
        "manifests_read_warm": warm.manifests_read,
    }
    for kind in ("cold", "sequential", "warm"):
        print(
            f"azurite ({kind}): {listed:,} objects; bare list_blobs "
            f"{report['median']['list']:.2f} s, scan {report['median'][kind]:.2f} s; ratio "
            f"{report['ratio'][kind]} (best of rounds: {report['ratio_best'][kind]}; goal >= 0.8)",
            flush=True,
        )
    return report


def bench_filesystem(blob_count, rounds):
    """The same tree on the filesystem backend: the bare walk vs a cold scan at the default
    concurrency and sequentially."""
    from registry_admin import storage

    layout = Layout(blob_count, small_blobs=True)
    with tempfile.TemporaryDirectory(prefix="oyster-bench-fs-") as root:
        for path, size, _ in layout.entries():
            target = Path(root, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(layout.content(path, size))
        backend = storage.FilesystemStorage(root)
        time_walk(backend, storage)  # warm the page cache
        times, outcomes = rounds_of(
            {
                "walk": lambda: time_walk(backend, storage),
                "cold": lambda: time_scan(backend, storage, None),
                "sequential": lambda: time_scan(backend, storage, None, 1),
            },
            rounds,
        )
    assert comparable(outcomes["cold"]) == comparable(outcomes["sequential"])
    report = summary(times, "walk") | {"objects": outcomes["walk"]}
    for kind in ("cold", "sequential"):
        print(
            f"filesystem ({kind}): walk {report['median']['walk']:.3f} s, scan "
            f"{report['median'][kind]:.3f} s; ratio {report['ratio'][kind]}",
            flush=True,
        )
    return report


def markdown(report, started):
    """The section this script keeps in bench/README.md."""
    azurite, synthetic, filesystem = report["azurite"], report["synthetic"], report["filesystem"]

    def rows(section, runs):
        return [
            f"| {label} | {section['median'][kind]:.2f} | {section['best'][kind]:.2f} | "
            f"{section['objects'] / section['best'][kind]:,.0f} | {section['ratio'][kind]:.2f} | "
            f"{section['ratio_best'][kind]:.2f} |"
            for kind, label in runs
        ]

    header = [
        "| run | median s | best s | objects/s (best) | ratio to baseline: median | best |",
        "|---|---|---|---|---|---|",
    ]
    lines = [
        "<!-- storage_scan -->",
        "## Storage scan (`bench/storage_scan.py`)",
        "",
        f"Machine: {report['machine']}. Date: {report['date']}. Load average at the start: "
        f"{report['load']}. Whole run {time.perf_counter() - started:.0f} s. Scans at "
        f"`STORAGE_READ_CONCURRENCY={CONCURRENCY}` unless marked sequential (1).",
        "",
        f"**Azurite** ({azurite['objects']:,} objects laid out like a registry: "
        f"{azurite['blobs']:,} blobs, {azurite['manifests']:,} linked manifests, "
        f"{azurite['tags']:,} tags of which every {MOVED_EVERY}th was moved (two index "
        f"entries), {azurite['untagged']:,} untagged revisions; pages of 5,000; "
        f"{len(azurite['seconds']['list'])} rounds in rotating order). Baseline: a bare "
        "`list_blobs` iteration over the same prefix with the same client in the same run. "
        "Goal: first (cold) scan ratio >= 0.8. Other work on the machine only ever slows a "
        "round down, so the best round is the steadier figure; the median is shown too. All "
        "scans give the same figures (checked).",
        "",
        *header,
        *rows(
            azurite,
            (
                ("list", "bare `list_blobs` (baseline)"),
                ("names", "the scan's listing alone: repositories by name, blobs with sizes"),
                (
                    "cold",
                    f"scan, cold: {azurite['manifests_read_cold']:,} manifests and "
                    f"{azurite['tag_links_read']:,} tag links read",
                ),
                ("sequential", "scan, cold, sequential (one read at a time)"),
                (
                    "warm",
                    "scan, warm: manifests known from the previous scan "
                    f"({azurite['manifests_read_warm']:,} read; moved tags' links read)",
                ),
                *(
                    (
                        ("list_pinned", "Azurite on a core of its own: bare `list_blobs`"),
                        ("cold_pinned", "Azurite on a core of its own: scan, cold"),
                    )
                    if "cold_pinned" in azurite["median"]
                    else ()
                ),
            ),
        ),
        "",
        "The bare listing is mostly Python: the SDK turns each listed blob's properties into "
        "objects through its generic model deserialiser (about 0.17 ms of CPU per blob here). "
        "The scan reads sizes and times from the listing's XML through the SDK's names-only "
        "pager instead (a tenth of that CPU; the public `list_blobs` is its fallback should the "
        "SDK change). It needs sizes for blobs only, so it lists `repositories/` by name "
        "(`list_blob_names`) and then `blobs/` with sizes; it lists with "
        "sizes and times only the directories that need them afterwards (a repository's "
        "uploads, the revisions of a repository with untagged revisions: their link time). "
        "Manifests and moved tags' `current/link` are read on one bounded pool (Azurite, one "
        "Node process on the same two cores, spends about 2 ms of CPU per GET) while the blobs "
        "are listed. A tag whose listing shows one index entry points at it (distribution's tag "
        "store writes the index entry before the current link), so only moved tags' links are "
        "read. The last two rows run the baseline and the cold scan again with Azurite's "
        "threads on one core and the benchmark on the other, as the Azure service runs on "
        "machines of its own (ratio of the pinned scan to the pinned baseline).",
        "",
        f"**Filesystem** (the same tree written to a local directory: {filesystem['objects']:,} "
        "files; same rounds). Baseline: the backend's sorted walk alone.",
        "",
        *header,
        *rows(
            filesystem,
            (
                ("walk", "walk (baseline)"),
                ("cold", "scan, cold"),
                ("sequential", "scan, cold, sequential (one read at a time)"),
            ),
        ),
        "",
        "**Synthetic listing** (in-memory generator, no I/O: 50 base layers, 7 blobs per image, "
        "100 images per repository, every 10th image deleted, one tag per remaining image, "
        f"every {MOVED_EVERY}th tag moved, manifests and tag links synthesised on read, "
        "sequential reads; one subprocess per run, peak RSS from VmHWM). Baseline: iterating "
        "the generator alone.",
        "",
        "| blobs | objects listed | manifests | scan s (CPU s) | bare generator s | "
        "peak RSS scan | peak RSS bare generator |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in synthetic:
        scan, bare = row["scan"], row["baseline"]
        lines.append(
            f"| {row['blob_count']:,} | {scan['entries']:,} | {scan['manifests']:,} | "
            f"{scan['seconds']} ({scan['cpu_seconds']}) | {bare['seconds']} | "
            f"{scan['peak_rss_mb']:.0f} MB | {bare['peak_rss_mb']:.0f} MB |"
        )
    lines += ["<!-- /storage_scan -->", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "BLOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_synthetic(int(args.child[1]), args.child[0])
        return
    started = time.perf_counter()
    load = f"{os.getloadavg()[0]:.1f}"
    print(f"machine: {machine()}; date: {time.strftime('%Y-%m-%d')}; load {load}", flush=True)
    azurite_blobs, rounds = (500, 3) if args.quick else (3000, 5)
    sizes = (10_000, 100_000) if args.quick else (100_000, 1_000_000)
    report = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "load": load,
        "synthetic": bench_synthetic(sizes),
        "azurite": bench_azurite(azurite_blobs, rounds),
        "filesystem": bench_filesystem(azurite_blobs, rounds),
    }
    print(json.dumps(report, indent=2))
    if not args.quick:
        common.write_section(markdown(report, started), marker="storage_scan")
        print("bench/README.md updated.")


if __name__ == "__main__":
    main()
