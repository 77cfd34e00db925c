"""The usage scan: one streaming pass over `docker/registry/v2/` turned into usage figures.

The layout (see https://github.com/distribution/distribution/blob/release/2.8/registry/storage/paths.go):

    blobs/sha256/<xx>/<hex>/data                                  a blob and its size
    repositories/<name>/_layers/sha256/<hex>/link                 a blob linked into a repository
    repositories/<name>/_manifests/revisions/sha256/<hex>/link    a manifest linked (not deleted)
    repositories/<name>/_uploads/<uuid>/...                       an unfinished upload

Everything but reachability comes from paths alone. What `registry garbage-collect` would free
needs its mark phase (registry/storage/garbagecollect.go): every manifest still linked in some
repository is marked with the blobs its `References()` name (config and layers; an index's
child manifests), so the scan reads those manifests and nothing else, and only those an
optional cache (what each manifest references: immutable, as manifests are content-addressed)
does not know yet. The untagged revisions need what each tag points at: its `current/link`,
read only when the listing cannot tell (see `_TagRun`). All reads run on one bounded pool
while the listing goes on.

A listing may give names only (size and time None; Azure's names-only pages cost the SDK a
fifth of the CPU): only blobs need their sizes to add up, so names do for everything under
`repositories/` but two things asked for afterwards through `details(prefix)`, a full listing
of one directory: the uploads of a repository that has some, and the revisions of a
repository with untagged revisions (their link time is when each was pushed there).

Memory stays flat per blob: digests live in one bytearray (32 bytes each), sizes in an
array, per-repository links as arrays of blob numbers; no Python object per blob.

Knows nothing of backends or settings: it reads through the `entries` and `read` it is given.
"""

import json
import time
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ..references import is_valid_repository, reachable
from .layout import BLOBS, REPOSITORIES, blob_path, digest_bytes

_LAYER_LINK = "_layers/sha256/"
_REVISION_LINK = "_manifests/revisions/sha256/"
_UPLOADS = "_uploads/"
_TAG_LINKS = "_manifests/tags/"
_CURRENT_LINK = "/current/link"
_TAG_INDEX_LINK = "/index/sha256/"
BLOBS_LEN, REPOSITORIES_LEN = len(BLOBS), len(REPOSITORIES)
# The registry refuses manifests above 4 MiB on push; anything bigger is not a manifest.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024
# Manifest digests looked up in the reference cache (and new ones stored) per query.
CACHE_BATCH = 500
# A revision link's time when the listing gave names only (the revision's details tell).
_UNKNOWN_TIME = -1.0
# What one more listing request costs, in objects listed with their properties (the SDK's
# deserialisation, 0.17 ms each, against a request's round trip and overhead): beyond this
# many objects per directory to detail, one listing of every repository's objects is cheaper.
DIRECTORY_LISTING_COST = 12


@dataclass(frozen=True)
class RepositoryUsage:
    """One repository's share of the blobs, counting every stored blob it links.

    `referenced_bytes` covers its layer links (layers and configs) and its linked manifests;
    `unique_bytes` the part no other repository links; `reclaimable_bytes` the part that no
    linked manifest reaches any more (deleted images awaiting garbage collection).
    """

    name: str
    referenced_bytes: int
    unique_bytes: int
    shared_bytes: int
    reclaimable_bytes: int
    blob_count: int
    manifest_count: int


@dataclass(frozen=True)
class UntaggedRevision:
    """A manifest revision of `repository` that no tag reaches, directly or as a child.

    `reclaimable_bytes`: what the collector frees once every untagged revision is removed,
    counted once (on the first revision that holds the blob); `is_child`: a child of an
    untagged index, which goes with its parent.
    """

    repository: str
    digest: str
    linked_at: float | None
    reclaimable_bytes: int
    is_child: bool


@dataclass(frozen=True)
class ScanResult:
    total_bytes: int
    blob_count: int
    # Distinct bytes linked by at least one repository, and what sharing saved against
    # storing each repository's blobs separately.
    linked_bytes: int
    dedup_saved_bytes: int
    reclaimable_bytes: int
    reclaimable_count: int
    upload_count: int
    upload_bytes: int
    oldest_upload_started: float | None
    # Distinct linked manifests; how many were read from storage (the rest came from the
    # cache); how many of those were not manifests (their references are unknown).
    manifest_count: int
    manifests_read: int
    unreadable_manifests: int
    missing_blob_links: int
    entry_count: int
    skipped_entries: int
    duration_seconds: float
    repositories: tuple = field(default_factory=tuple)
    # Unreferenced blobs the recycle bin holds (`held`): not counted as reclaimable.
    held_bytes: int = 0
    held_count: int = 0
    # UntaggedRevision entries: revisions no tag reaches (directly or through a tagged index).
    untagged: tuple = field(default_factory=tuple)
    # `groups`' figures: group -> every blob its repositories link, each counted once.
    group_bytes: dict = field(default_factory=dict)

    def as_dict(self):
        return asdict(self)


class _BlobTable:
    """Digests grouped by their first two bytes, with a 65,536-bucket index: `number(digest)`
    costs one memchr over its bucket (~15 digests per million blobs) instead of a dict entry
    per blob. Blob numbers are positions in this table."""

    def __init__(self, digests, sizes, times=None):
        count = len(sizes)
        buckets = array(
            "H", (high << 8 | low for high, low in zip(digests[0::32], digests[1::32], strict=True))
        )
        starts = array("q", bytes(8 * 65537))
        for bucket in buckets:
            starts[bucket + 1] += 1
        for bucket in range(65536):
            starts[bucket + 1] += starts[bucket]
        if any(buckets[i] > buckets[i + 1] for i in range(count - 1)):
            # Not listed in digest order (Azure and the filesystem walk both are): counting sort.
            grouped, grouped_sizes = bytearray(len(digests)), array("q", bytes(8 * count))
            grouped_times = array("d", bytes(8 * count)) if times is not None else None
            free = array("q", starts)
            for source, bucket in enumerate(buckets):
                target = free[bucket]
                free[bucket] = target + 1
                grouped[target * 32 : target * 32 + 32] = digests[source * 32 : source * 32 + 32]
                grouped_sizes[target] = sizes[source]
                if times is not None:
                    grouped_times[target] = times[source]
            digests, sizes, times = grouped, grouped_sizes, grouped_times
        self.digests = digests
        self.sizes = sizes
        self.times = times
        self.starts = starts

    def __len__(self):
        return len(self.sizes)

    def number(self, digest):
        """The blob's number, or -1 when no such blob is stored."""
        bucket = (digest[0] << 8) | digest[1]
        end = self.starts[bucket + 1] * 32
        position = self.digests.find(digest, self.starts[bucket] * 32, end)
        while position != -1 and position % 32:
            position = self.digests.find(digest, position + 1, end)
        return -1 if position == -1 else position // 32

    def numbers(self, raw_digests):
        """Blob numbers for the 32-byte digests in `raw_digests`; -1 for each one not stored."""
        return (self.number(raw_digests[i : i + 32]) for i in range(0, len(raw_digests), 32))

    def digest(self, number):
        return bytes(self.digests[number * 32 : number * 32 + 32])


def manifest_references(content):
    """The digests a manifest's `References()` names, as GC's mark phase sees them.

    Image manifests (Docker schema2, OCI): config and layers; indexes and manifest lists: their
    child manifests; Docker schema1: its fsLayers. Returns None when `content` is not a manifest.
    """
    try:
        document = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict):
        return None
    descriptors = []
    if isinstance(document.get("config"), dict):
        descriptors.append(document["config"].get("digest"))
    for key in ("layers", "manifests"):
        for item in document.get(key) or ():
            if isinstance(item, dict):
                descriptors.append(item.get("digest"))
    for item in document.get("fsLayers") or ():
        if isinstance(item, dict):
            descriptors.append(item.get("blobSum"))
    return [d for d in descriptors if isinstance(d, str)]


def packed_references(content):
    """What the manifest `content` references, as the cache keeps it (the sha256 digests, 32
    raw bytes each, concatenated), or None when it is not a manifest."""
    if len(content) > MANIFEST_MAX_BYTES:
        return None
    references = manifest_references(content)
    if references is None:
        return None
    return b"".join(filter(None, map(digest_bytes, references)))


class _ManifestReader:
    """Finds what each linked manifest references, and where tags point, while the listing
    goes on.

    Each distinct manifest is looked up in `cache` first (manifests are content-addressed, so
    what one references never changes), then read from storage; tag links the listing cannot
    settle are read too (a tag moves, so never cached). Both share one pool with at most
    `4 * concurrency` reads in flight, which bounds memory whatever the listing's size; with
    a concurrency of 1 every read happens in the calling thread, in listing order. Manifest
    results are appended to one bytearray of records (manifest digest, length, referenced
    digests) and matched to blob numbers once the listing is complete.
    """

    def __init__(self, read, concurrency, cache=None):
        self.read = read
        self.concurrency = max(1, concurrency)
        self.pool = ThreadPoolExecutor(self.concurrency) if self.concurrency > 1 else None
        self.cache = cache
        self.pending = deque()
        self.requested = set()
        self.waiting = []
        self.fresh = {}
        self.records = bytearray()
        # {repository number: the 32-byte digests its tags point at now, concatenated}
        self.tagged = {}
        self.read_count = 0
        self.unreadable = 0

    def request(self, raw_digest):
        if raw_digest in self.requested:
            return
        self.requested.add(raw_digest)
        if self.cache is None:
            self._submit(self._fetch, raw_digest, self._collect, raw_digest)
            return
        self.waiting.append(raw_digest)
        if len(self.waiting) >= CACHE_BATCH:
            self._look_up()

    def _look_up(self):
        batch, self.waiting = self.waiting, []
        known = self.cache.lookup(batch)
        for raw_digest in batch:
            references = known.get(raw_digest)
            if references is None:
                self._submit(self._fetch, raw_digest, self._collect, raw_digest)
            else:
                self._record(raw_digest, references)

    def tag_points_at(self, repository, raw_digest):
        # Concatenated, not a set of bytes: no Python object per tag.
        targets = self.tagged.get(repository)
        if targets is None:
            targets = self.tagged[repository] = bytearray()
        targets += raw_digest

    def request_tag(self, repository, path):
        """Read a tag's `current/link` (at `path`) and note where it points."""
        self._submit(self._fetch_tag, path, self._collect_tag, repository)

    def _submit(self, fetch, argument, collect, key):
        if self.pool is None:
            collect(key, fetch(argument))
            return
        self.pending.append((collect, key, self.pool.submit(fetch, argument)))
        while len(self.pending) > 4 * self.concurrency:
            collect, key, future = self.pending.popleft()
            collect(key, future.result())

    def _fetch(self, raw_digest):
        content = self.read(blob_path(raw_digest), MANIFEST_MAX_BYTES)
        if content is None:
            return None  # the revision links a blob that is gone: GC skips it too
        references = packed_references(content)
        return False if references is None else references

    def _fetch_tag(self, path):
        content = self.read(path, 200)
        if not content:
            return None
        return digest_bytes(content.decode("ascii", "replace").strip())

    def _collect_tag(self, repository, raw_digest):
        if raw_digest is not None:
            self.tag_points_at(repository, raw_digest)

    def _collect(self, raw_digest, outcome):
        if outcome is None:
            return
        self.read_count += 1
        if outcome is False:
            self.unreadable += 1
            return
        self._record(raw_digest, outcome)
        if self.cache is not None:
            self.fresh[raw_digest] = outcome
            if len(self.fresh) >= CACHE_BATCH:
                self.cache.store(self.fresh)
                self.fresh = {}

    def _record(self, raw_digest, references):
        self.records += raw_digest + len(references).to_bytes(4, "little") + references

    def finish(self):
        """Wait for every read; then bring the cache up to date (only after a whole listing)."""
        try:
            if self.waiting:
                self._look_up()
            while self.pending:
                collect, key, future = self.pending.popleft()
                collect(key, future.result())
        finally:
            self.close()
        if self.cache is not None:
            if self.fresh:
                self.cache.store(self.fresh)
                self.fresh = {}
            self.cache.prune(self.requested)

    def close(self):
        if self.pool is not None:
            for _, _, future in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True)
            self.pool = None

    def marked_references(self, table):
        """Blob numbers referenced by manifests that are stored (GC skips a missing one)."""
        records, position = self.records, 0
        while position < len(records):
            manifest = records[position : position + 32]
            length = int.from_bytes(records[position + 32 : position + 36], "little")
            start, position = position + 36, position + 36 + length
            if table.number(manifest) >= 0:
                yield from table.numbers(records[start:position])


def scan(
    entries,
    read,
    progress=None,
    read_concurrency=1,
    cache=None,
    progress_every=20000,
    details=None,
    held=None,
    groups=None,
):
    """Usage figures from one pass over `entries` ((path, size, last_modified) under V2_PREFIX;
    size and last_modified None for a repository's entries listed by name only, in which case
    `details(prefix)` must list a directory with them).

    `read(path, max_bytes)` fetches a linked manifest or a tag link. `cache`, optional, remembers what
    manifests reference between scans: `lookup([digest]) -> {digest: references}`,
    `store({digest: references})` and `prune(live digests)`, digests as 32 raw bytes and
    references as their concatenation. `progress(done, total, message)` is called every
    `progress_every` entries and once per stage. `held`, optional, is a set of 32-byte digests
    the recycle bin keeps: unreferenced, they count as held instead of reclaimable. `groups`,
    optional, maps a repository name to a group (a quota) or None: the result then adds up each
    group's linked blobs, each counted once (`group_bytes`). Returns a ScanResult.
    """
    started = time.monotonic()
    listing = _Listing()
    reader = _ManifestReader(read, read_concurrency, cache)
    try:
        listing.consume(entries, reader, progress, progress_every)

        def detailed(prefixes):
            return _detailed(details, prefixes, read_concurrency, listing.entry_count)

        if listing.uploads_unlisted:
            # While the last manifest reads go on.
            listing.add_upload_details(detailed)
        if progress:
            progress(
                listing.entry_count, None, "Listing done; reading the last manifests and tag links"
            )
        reader.finish()
    finally:
        reader.close()
    if progress:
        progress(listing.entry_count, listing.entry_count, "Adding up")
    table = _BlobTable(listing.digests, listing.sizes)
    listing.digests = listing.sizes = None
    return _tally(table, listing, reader, started, reader.tagged, detailed, held or (), groups)


class _Listing:
    """What the paths say: blobs, each repository's links, uploads. Compact by design.

    With `keep_times` (the online collector's mark), also each blob's and each layer link's
    last-modified time, and no tag is looked at."""

    def __init__(self, keep_times=False):
        self.keep_times = keep_times
        # (repository name, digest) -> whether to read that revision (None: every one).
        self.revision_wanted = None
        self.blob_times = array("d")
        self.layer_times = []
        self.digests, self.sizes = bytearray(), array("q")
        self.repository_ids, self.names, self.rejected_names = {}, [], set()
        self.layer_links, self.revision_links = [], []
        self.revision_times = []
        self.uploads = {}
        # Repositories whose uploads were listed without sizes (names only).
        self.uploads_unlisted = set()
        self.entry_count = self.skipped = 0

    def consume(self, entries, reader, progress, progress_every):
        # One tight loop with everything in locals: this runs once per stored object.
        digests, sizes, repository_ids = self.digests, self.sizes, self.repository_ids
        layer_links, revision_links = self.layer_links, self.revision_links
        revision_times = self.revision_times
        keep_times, blob_times, layer_times = self.keep_times, self.blob_times, self.layer_times
        tags = _TagRun(reader)
        layer_end, revision_end = len(_LAYER_LINK) + 64, len(_REVISION_LINK) + 64
        count = skipped = 0
        for path, size, modified in entries:
            count += 1
            if progress and not count % progress_every:
                progress(count, None, f"Listed {count:,} objects ({len(sizes):,} blobs)")
            if path.startswith(BLOBS):
                # "<xx>/<64 hex>/data"
                rest = path[BLOBS_LEN:]
                raw = _hex_digest(rest[3:67]) if len(rest) == 72 and rest[67:] == "/data" else None
                if raw is None or rest[:2] != rest[3:5]:
                    skipped += 1
                    continue
                digests += raw
                sizes.append(size)
                if keep_times:
                    blob_times.append(modified or 0.0)
                continue
            if not path.startswith(REPOSITORIES):
                skipped += 1
                continue
            rest = path[REPOSITORIES_LEN:]
            cut = rest.find("/_")
            repository = repository_ids.get(rest[:cut])
            if repository is None:
                repository = self._new_repository(rest[:cut]) if cut > 0 else None
                if repository is None:
                    skipped += 1
                    continue
            tail = rest[cut + 1 :]
            if tail.startswith(_LAYER_LINK):
                raw = _link_digest(tail, len(_LAYER_LINK), layer_end)
                if raw is None:
                    skipped += 1
                else:
                    layer_links[repository] += raw
                    if keep_times:
                        layer_times[repository].append(modified or 0.0)
            elif tail.startswith(_REVISION_LINK):
                raw = _link_digest(tail, len(_REVISION_LINK), revision_end)
                if raw is None:
                    skipped += 1
                else:
                    revision_links[repository] += raw
                    revision_times[repository].append(
                        _UNKNOWN_TIME if modified is None else modified or 0.0
                    )
                    wanted = self.revision_wanted
                    if wanted is None or wanted(self.names[repository], raw):
                        reader.request(raw)
            elif tail.startswith(_TAG_LINKS):
                if not keep_times:
                    tags.entry(repository, path, len(path) - len(tail) + len(_TAG_LINKS))
            elif tail.startswith(_UPLOADS):
                if size is None:
                    self.uploads_unlisted.add(repository)
                else:
                    self._add_upload(repository, tail, size, modified)
            # Tag links (_manifests/tags/...) need no counting: GC marks every linked revision.
        tags.finish()
        self.entry_count += count
        self.skipped += skipped

    def _add_upload(self, repository, tail, size, modified):
        key = (repository, tail[len(_UPLOADS) :].split("/", 1)[0])
        upload = self.uploads.get(key)
        if upload is None:
            self.uploads[key] = [size, modified]
        else:
            upload[0] += size
            upload[1] = min(upload[1], modified)

    def add_upload_details(self, detailed):
        """Sizes and times of the uploads that were listed by name only (`detailed`: see
        `_detailed`)."""
        repositories = {
            f"{REPOSITORIES}{self.names[r]}/{_UPLOADS}": r for r in self.uploads_unlisted
        }
        for prefix, path, size, modified in detailed(sorted(repositories)):
            if size is not None:
                tail = path[len(prefix) - len(_UPLOADS) :]
                self._add_upload(repositories[prefix], tail, size, modified)
        self.uploads_unlisted = set()

    def _new_repository(self, name):
        if name in self.rejected_names:
            return None
        if not is_valid_repository(name):
            if len(self.rejected_names) < 1000:
                self.rejected_names.add(name)
            return None
        repository = self.repository_ids[name] = len(self.names)
        self.names.append(name)
        self.layer_links.append(bytearray())
        self.layer_times.append(array("d"))
        self.revision_links.append(bytearray())
        self.revision_times.append(array("d"))
        return repository


class _TagRun:
    """Where each tag points, from the listing where it can tell, else from `current/link`.

    In distribution (registry/storage/tagstore.go, 2.8 and 3.x alike) `Tag()` links the
    digest into the tag's index (`<tag>/index/sha256/<hex>/link`) first, then overwrites
    `<tag>/current/link`; `Untag()` removes the tag's whole directory; the only other remover
    of index entries is garbage collection with --delete-untagged
    (registry/storage/garbagecollect.go, vacuum.go `RemoveManifest`), and only for digests no
    tag's current link names. So a tag's current digest is always in its index: a tag listed
    with a `current/link` and exactly one index entry points at that entry's digest, with no
    read. A tag moved since (or re-pointed by the portal's placeholder delete while it
    lasted) has several entries, and its `current/link` is read.

    A sorted listing (Azure's, the filesystem walk's) gives each tag's entries in one run, so
    one run is kept at a time. Should runs ever come out of order, a tag could be split over
    two runs: from then on every `current/link` is read, and a run with index entries but no
    current link counts them all as tagged, which can only hide an untagged revision, never
    report a tagged one as untagged.
    """

    __slots__ = ("reader", "key", "repository", "current", "entries", "digest", "found", "ordered")

    def __init__(self, reader):
        self.reader = reader
        self.key = None
        self.ordered = True

    def entry(self, repository, path, start):
        """One listed path under `_manifests/tags/`; its tag name starts at `start`."""
        slash = path.find("/", start)
        if slash <= start:
            return
        key = path[: slash + 1]
        if key != self.key:
            if self.key is not None:
                self._settle()
                if key < self.key:
                    self.ordered = False
            self.key, self.repository = key, repository
            self.current, self.entries, self.digest, self.found = None, 0, None, None
        rest = path[slash:]
        if rest == _CURRENT_LINK:
            self.current = path
        elif rest.startswith("/index/"):
            self.entries += 1
            # Any other algorithm (or junk) leaves None: then the current link says.
            self.digest = _link_digest(rest, len(_TAG_INDEX_LINK), len(_TAG_INDEX_LINK) + 64)
            if not self.ordered and self.digest is not None:
                # Kept for this run only, for a run without a current link (see above).
                if self.found is None:
                    self.found = bytearray()
                self.found += self.digest

    def _settle(self):
        if self.current is None:
            if self.found:
                found = self.found
                for i in range(0, len(found), 32):
                    self.reader.tag_points_at(self.repository, bytes(found[i : i + 32]))
            # Else the registry answers "tag unknown": it points nowhere.
        elif self.ordered and self.entries == 1 and self.digest is not None:
            self.reader.tag_points_at(self.repository, self.digest)
        else:
            self.reader.request_tag(self.repository, self.current)

    def finish(self):
        if self.key is not None:
            self._settle()
        self.key = None


def _hex_digest(text):
    """32 raw bytes from 64 hex characters, or None (fromhex would also skip spaces)."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _link_digest(tail, offset, end):
    """The 32-byte digest in '<kind prefix><64 hex>/link', or None."""
    if len(tail) != end + 5 or tail[end:] != "/link":
        return None
    return _hex_digest(tail[offset:end])


def _detailed(details, prefixes, concurrency, listed):
    """(prefix, path, size, modified) of every object under each of `prefixes` (directories
    of repositories, `<repositories>/<name>/<_uploads/ or revisions>`), through `details`.

    One listing per directory, at most `concurrency` at a time and `4 * concurrency` waiting;
    or, when there are so many directories that their requests would cost more than listing
    every repository object with its properties once (`listed`: the objects the scan listed),
    that one listing, keeping only what is under `prefixes`."""
    if not prefixes:
        return
    if details is None:
        raise ValueError("a names-only listing needs `details` to list sizes and times")
    if len(prefixes) * DIRECTORY_LISTING_COST > listed:
        wanted = set(prefixes)
        for path, size, modified in details(REPOSITORIES):
            cut = path.find("/_", REPOSITORIES_LEN) + 1
            for kind in (_UPLOADS, _REVISION_LINK):
                if path.startswith(kind, cut) and path[: cut + len(kind)] in wanted:
                    yield path[: cut + len(kind)], path, size, modified
        return

    def listing(prefix):
        return [(prefix, *entry) for entry in details(prefix)]

    if concurrency <= 1 or len(prefixes) == 1:
        for prefix in prefixes:
            yield from listing(prefix)
        return
    window = 4 * concurrency
    with ThreadPoolExecutor(concurrency) as pool:
        for start in range(0, len(prefixes), window):
            for entries in pool.map(listing, prefixes[start : start + window]):
                yield from entries


def _tally(table, listing, reader, started, tagged, detailed, held=(), groups=None):
    sizes, count = table.sizes, len(table)
    untagged = _untagged(table, listing, reader, tagged, detailed)
    refcount = array("i", bytes(4 * count))
    # The last repository that counted each blob: dedups a repository's links without a set.
    last_counted = array("i", [-1]) * count
    marked = bytearray(count)
    linked, manifest_counts, missing, distinct_manifests = [], [], 0, 0
    for repository in range(len(listing.names)):
        numbers, manifests = array("i"), 0
        for number in table.numbers(listing.revision_links[repository]):
            if number < 0:
                missing += 1
                continue
            if not marked[number]:
                marked[number] = 1  # GC marks every manifest still linked as a revision
                distinct_manifests += 1
            manifests += 1
            if last_counted[number] != repository:
                last_counted[number] = repository
                refcount[number] += 1
                numbers.append(number)
        for number in table.numbers(listing.layer_links[repository]):
            if number < 0:
                missing += 1
            elif last_counted[number] != repository:
                last_counted[number] = repository
                refcount[number] += 1
                numbers.append(number)
        listing.revision_links[repository] = listing.layer_links[repository] = None
        linked.append(numbers)
        manifest_counts.append(manifests)
    del last_counted
    for number in reader.marked_references(table):
        if number >= 0:
            marked[number] = 1
    # What the recycle bin holds is kept by Oyster's collector like marked data: shown as held.
    held_bytes = held_count = 0
    for digest in held:
        number = table.number(digest) if len(digest) == 32 else -1
        if number >= 0 and not marked[number]:
            marked[number] = 1
            held_bytes += sizes[number]
            held_count += 1
    repositories = [
        _repository_usage(name, numbers, manifests, sizes, refcount, marked)
        for name, numbers, manifests in zip(listing.names, linked, manifest_counts, strict=True)
    ]
    repositories.sort(key=lambda usage: usage.name)
    group_bytes = _group_bytes(listing.names, linked, sizes, groups) if groups else {}
    reclaimable_bytes = reclaimable_count = linked_bytes = 0
    for number in range(count):
        if not marked[number]:
            reclaimable_bytes += sizes[number]
            reclaimable_count += 1
        if refcount[number]:
            linked_bytes += sizes[number]
    uploads = listing.uploads.values()
    return ScanResult(
        total_bytes=sum(sizes),
        blob_count=count,
        linked_bytes=linked_bytes,
        dedup_saved_bytes=sum(r.referenced_bytes for r in repositories) - linked_bytes,
        reclaimable_bytes=reclaimable_bytes,
        reclaimable_count=reclaimable_count,
        upload_count=len(uploads),
        upload_bytes=sum(upload[0] for upload in uploads),
        oldest_upload_started=min((upload[1] for upload in uploads), default=None),
        manifest_count=distinct_manifests,
        manifests_read=reader.read_count,
        unreadable_manifests=reader.unreadable,
        missing_blob_links=missing,
        entry_count=listing.entry_count,
        skipped_entries=listing.skipped,
        duration_seconds=round(time.monotonic() - started, 3),
        repositories=tuple(repositories),
        held_bytes=held_bytes,
        held_count=held_count,
        untagged=tuple(untagged),
        group_bytes=group_bytes,
    )


def _group_bytes(names, linked, sizes, group_of):
    """{group: bytes of the blobs its repositories link, each once}: repositories taken group by
    group, so one array of "last group that counted this blob" dedups without a set per group."""
    members = {}
    for index, name in enumerate(names):
        group = group_of(name)
        if group is not None:
            members.setdefault(group, []).append(index)
    last_group = array("i", [-1]) * len(sizes)
    totals = {}
    for number_of_group, (group, indices) in enumerate(members.items()):
        total = 0
        for index in indices:
            for number in linked[index]:
                if last_group[number] != number_of_group:
                    last_group[number] = number_of_group
                    total += sizes[number]
        totals[group] = total
    return totals


class _References:
    """What each read manifest references, from the reader's records, by blob number: one
    8-byte offset per blob instead of a dict entry and two bytes objects per manifest."""

    def __init__(self, table, records):
        self.table, self.records = table, records
        self.offsets = array("q", [-1]) * len(table)
        self.others = {}  # records of manifests whose blob is not stored (from the cache)
        position = 0
        while position < len(records):
            manifest = records[position : position + 32]
            length = int.from_bytes(records[position + 32 : position + 36], "little")
            number = table.number(manifest)
            if number >= 0:
                self.offsets[number] = position + 32
            else:
                self.others[bytes(manifest)] = bytes(
                    records[position + 36 : position + 36 + length]
                )
            position += 36 + length

    def get(self, digest):
        """The concatenated digests `digest` references; b"" when unknown."""
        number = self.table.number(digest)
        if number < 0:
            return self.others.get(digest, b"")
        offset = self.offsets[number]
        if offset < 0:
            return b""
        length = int.from_bytes(self.records[offset : offset + 4], "little")
        return bytes(self.records[offset + 4 : offset + 4 + length])


def _untagged(table, listing, reader, tagged, detailed):
    """UntaggedRevisions, with what removing them all would let the collector free.

    Per repository: the revisions minus what its tags reach (a tag's manifest and, for an
    index, its children, recursively). A blob counts as reclaimable when no revision that
    stays (in any repository) marks it and the collector would not free it already.
    """
    references = _References(table, reader.records)
    # Revisions that stay, concatenated: no Python object per revision across repositories.
    found, staying = [], bytearray()
    for repository, name in enumerate(listing.names):
        links, times = listing.revision_links[repository], listing.revision_times[repository]
        revisions = {bytes(links[i : i + 32]): times[i // 32] for i in range(0, len(links), 32)}
        targets = tagged.get(repository, b"")

        def linked_children(digest, revisions=revisions):
            refs = references.get(digest)
            return [
                c for c in (refs[i : i + 32] for i in range(0, len(refs), 32)) if c in revisions
            ]

        reached = reachable(
            (
                digest
                for digest in (bytes(targets[i : i + 32]) for i in range(0, len(targets), 32))
                if digest in revisions
            ),
            linked_children,
        )
        lost = [d for d in revisions if d not in reached]
        for digest in reached:
            staying += digest
        children = set()
        for digest in lost:
            refs = references.get(digest)
            children.update(refs[i : i + 32] for i in range(0, len(refs), 32))
        found.extend((name, d, revisions[d], d in children) for d in lost)
    if not found:
        return []
    if any(item[2] == _UNKNOWN_TIME for item in found):
        found = _with_link_times(found, detailed)
    # Listing order must not change the figures: parents first, then by name and digest.
    found.sort(key=lambda item: (item[0], item[3], item[1]))
    kept = bytearray(len(table))
    for i in range(0, len(staying), 32):
        digest = bytes(staying[i : i + 32])
        number = table.number(digest)
        if number >= 0:
            kept[number] = 1
            refs = references.get(digest)
            for ref in table.numbers(refs):
                if ref >= 0:
                    kept[ref] = 1
    counted = bytearray(len(table))
    result = []
    for name, digest, linked_at, is_child in found:
        total = 0
        for number in (table.number(digest), *table.numbers(references.get(digest))):
            if number >= 0 and not kept[number] and not counted[number]:
                counted[number] = 1
                total += table.sizes[number]
        result.append(
            UntaggedRevision(name, "sha256:" + digest.hex(), linked_at or None, total, is_child)
        )
    return result


def _with_link_times(found, detailed):
    """`found` with the link time of each revision the listing gave by name only (None when
    the link went in the meantime)."""
    names = {
        f"{REPOSITORIES}{name}/{_REVISION_LINK}": name
        for name, _, linked_at, _ in found
        if linked_at == _UNKNOWN_TIME
    }
    times = {}
    for prefix, path, _, modified in detailed(sorted(names)):
        raw = _link_digest(path, len(prefix), len(prefix) + 64)
        if raw is not None and modified is not None:
            times[names[prefix], raw] = modified
    return [
        (
            name,
            digest,
            times.get((name, digest)) if linked_at == _UNKNOWN_TIME else linked_at,
            child,
        )
        for name, digest, linked_at, child in found
    ]


def _repository_usage(name, numbers, manifests, sizes, refcount, marked):
    referenced = unique = reclaimable = 0
    for number in numbers:
        size = sizes[number]
        referenced += size
        if refcount[number] == 1:
            unique += size
        if not marked[number]:
            reclaimable += size
    return RepositoryUsage(
        name=name,
        referenced_bytes=referenced,
        unique_bytes=unique,
        shared_bytes=referenced - unique,
        reclaimable_bytes=reclaimable,
        blob_count=len(numbers),
        manifest_count=manifests,
    )


# --- The online collector's mark -----------------------------------------------------------


@dataclass(frozen=True)
class UnreferencedBlob:
    """A stored blob no linked manifest revision marks (what the registry's collector would
    delete), with its data's last-modified time and the repositories linking it
    ((name, link last-modified time) pairs)."""

    digest: bytes
    size: int
    modified: float
    links: tuple = ()


@dataclass
class Mark:
    """One listing's mark: what is unreferenced, and what each repository linked as a revision
    (32-byte digests, concatenated), to tell new revisions from known ones later."""

    unreferenced: list
    revisions: dict
    blob_count: int
    marked_count: int
    manifests_read: int
    entry_count: int


def mark(entries, read, read_concurrency=1, cache=None, progress=None, progress_every=20000):
    """The registry collector's mark phase over one listing with times (`list_entries`): every
    blob a linked revision of some repository marks, directly or through an index's children
    (each child is itself a linked revision, as the registry requires). Returns a Mark."""
    listing = _Listing(keep_times=True)
    reader = _ManifestReader(read, read_concurrency, cache)
    try:
        listing.consume(entries, reader, progress, progress_every)
        reader.finish()
    finally:
        reader.close()
    table = _BlobTable(listing.digests, listing.sizes, listing.blob_times)
    listing.digests = listing.sizes = listing.blob_times = None
    marked = bytearray(len(table))
    revisions = {}
    for repository, name in enumerate(listing.names):
        links = listing.revision_links[repository]
        revisions[name] = _sorted_digests(links)
        for number in table.numbers(links):
            if number >= 0:
                marked[number] = 1
    for number in reader.marked_references(table):
        if number >= 0:
            marked[number] = 1
    links = {}
    for repository, name in enumerate(listing.names):
        times = listing.layer_times[repository]
        for position, number in enumerate(table.numbers(listing.layer_links[repository])):
            if number >= 0 and not marked[number]:
                links.setdefault(number, []).append((name, times[position]))
        listing.layer_links[repository] = listing.layer_times[repository] = None
    unreferenced = [
        UnreferencedBlob(
            table.digest(number),
            table.sizes[number],
            table.times[number],
            tuple(links.get(number, ())),
        )
        for number in range(len(table))
        if not marked[number]
    ]
    return Mark(
        unreferenced=unreferenced,
        revisions=revisions,
        blob_count=len(table),
        marked_count=len(table) - len(unreferenced),
        manifests_read=reader.read_count,
        entry_count=listing.entry_count,
    )


@dataclass
class Relisting:
    """What a later listing of `repositories/` says about a set of watched digests: which are
    linked now (digest -> repository names), and which a revision the mark did not know
    references (or is)."""

    linked: dict
    referenced: set
    new_revisions: int


# Directories the marking rule never reads: tags (every linked revision is marked, tagged or
# not) and uploads in progress (not blobs until they finish).
UNMARKED_DIRECTORIES = ("/" + _TAG_LINKS, "/" + _UPLOADS)


def unmarked(directory):
    """A `prune` for the mark's listing (a third of a registry's directories)."""
    return directory.endswith(UNMARKED_DIRECTORIES)


def relist_pruner(watched, known_revisions):
    """A `prune` for relist()'s listing: besides what the mark never reads, the layer links of
    digests not watched and the revisions already known (the bulk of a registry's
    directories) hold nothing relist() looks at."""
    watched_hex = {digest.hex() for digest in watched}
    layers, revisions = "/" + _LAYER_LINK, "/" + _REVISION_LINK

    def prune(directory):
        # ".../<repository>/_layers/sha256/<64 hex>/" or ".../_manifests/revisions/sha256/..."
        if directory.endswith(UNMARKED_DIRECTORIES):
            return True
        parent, hex_digest = directory[:-65], directory[-65:-1]
        if directory[-66:-65] != "/" or len(parent) <= REPOSITORIES_LEN:
            return False
        if parent.endswith(layers):
            return hex_digest.lower() not in watched_hex
        if parent.endswith(revisions):
            raw = _hex_digest(hex_digest)
            name = parent[REPOSITORIES_LEN : -len(revisions)]
            return raw is not None and _contains(known_revisions.get(name, b""), raw)
        return False

    return prune


def relist(entries, read, watched, known_revisions, read_concurrency=1, cache=None):
    """Re-mark against `watched` (32-byte digests) from a listing of `repositories/`: their
    layer links now, and whether a revision not in `known_revisions` (Mark.revisions) is one
    of them or references one (through nested indexes too: every child is a revision, read
    here when it is new)."""
    listing = _Listing(keep_times=True)
    listing.revision_wanted = lambda name, digest: (
        not _contains(known_revisions.get(name, b""), digest)
    )
    # A re-listing reads only new revisions: the cache must not be pruned down to those.
    reader = _ManifestReader(read, read_concurrency, cache and _NoPrune(cache))
    linked, new_revisions = {}, 0
    try:
        listing.consume(entries, reader, None, 1 << 62)
        reader.finish()
    finally:
        reader.close()
    referenced = set()
    for repository, name in enumerate(listing.names):
        links = listing.layer_links[repository]
        for i in range(0, len(links), 32):
            digest = bytes(links[i : i + 32])
            if digest in watched:
                linked.setdefault(digest, []).append(name)
        known = known_revisions.get(name, b"")
        revisions = listing.revision_links[repository]
        for i in range(0, len(revisions), 32):
            digest = bytes(revisions[i : i + 32])
            if not _contains(known, digest):
                new_revisions += 1
                if digest in watched:
                    referenced.add(digest)
    records, position = reader.records, 0
    while position < len(records):
        length = int.from_bytes(records[position + 32 : position + 36], "little")
        start, position = position + 36, position + 36 + length
        for i in range(start, position, 32):
            digest = bytes(records[i : i + 32])
            if digest in watched:
                referenced.add(digest)
    return Relisting(linked=linked, referenced=referenced, new_revisions=new_revisions)


def _sorted_digests(concatenated):
    """32-byte digests, concatenated, in sorted order (for `_contains`)."""
    chunks = sorted(bytes(concatenated[i : i + 32]) for i in range(0, len(concatenated), 32))
    return b"".join(chunks)


def _contains(sorted_concatenated, digest):
    """Whether `digest` is among the sorted, concatenated 32-byte digests (a binary search: no
    Python object per digest is kept)."""
    low, high = 0, len(sorted_concatenated) // 32
    while low < high:
        middle = (low + high) // 2
        item = sorted_concatenated[middle * 32 : middle * 32 + 32]
        if item == digest:
            return True
        if item < digest:
            low = middle + 1
        else:
            high = middle
    return False


class _NoPrune:
    """A reference cache whose `prune` does nothing (for partial reads such as `relist`)."""

    def __init__(self, cache):
        self.lookup, self.store = cache.lookup, cache.store

    def prune(self, live):
        pass
