"""Online collector's delete phase on Azurite: `AzureStorage.delete_objects` against a bare
batch-delete loop, and `move_objects` (copy + delete) into the trash.

    .venv/bin/python bench/gc_delete.py            # 5,000 blobs (19 minutes on 2 busy cores)
    .venv/bin/python bench/gc_delete.py --quick    # 1,500 blobs; README not written
    .venv/bin/python bench/gc_delete.py --blobs 20000   # about 1.5 hours
    .venv/bin/python bench/gc_delete.py --save run.json; ... --render run.json  # README again

N blobs laid out like a registry's (`docker/registry/v2/blobs/sha256/<xx>/<hex>/data`, 64 to
1,087 random bytes each) are written to a fresh Azurite before every measured phase (untimed,
checked by a listing); the phase then deletes all of them:

- baseline: a bare loop of `container.delete_blobs(*batch)` over batches of 256, one request
  at a time, with the backend's own client;
- `AzureStorage.delete_objects` at STORAGE_WRITE_CONCURRENCY (default 8), fed a generator;
- (sliced only) the same with one request at a time: what the concurrency brings;
- (sliced only) `AzureStorage.move_objects` into `oyster-trash/<run>/sha256/<hex>`: a
  server-side copy per blob, then the batch deletes. Azurite has no soft delete, so keeping
  data recoverable costs a copy per blob: reported separately.

Azurite's metadata store (LokiJS) spends time on every deletion that grows with the number of
blobs it holds (queries that walk the whole collection, index updates), so the rate depends
on how many blobs the container holds, and a whole phase's time grows at least with N
squared: the default N is 5,000 so that the run fits in half an hour next to other work
(20,000 takes about 1.5 hours). Two scenarios, each phase on a fresh in-memory Azurite:
**whole**: the N blobs are in the container at once (the issue's setting; one round, as it is
slow); **sliced**: the same N deletions with at most --slice (1,000) blobs in the container at
a time (stocked, deleted, next slice), where the client's own costs show; two rounds, phases in
rotating order. A move keeps N blobs stored throughout (a copy in, a source out), so every one
of its copies and deletes pays Azurite's cost at N (at 20,000 that is hours), and moves are
measured sliced only (the trash emptied, untimed, after each slice). The whole baseline's
batches also give Azurite's cost per deletion by the number of blobs stored. Goal (issue #28): `delete_objects` >= 6,000 deletions a minute and
>= 0.7 of the bare loop's rate.
"""

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
from common import machine

sys.path.insert(0, str(common.REPO_ROOT))

CONCURRENCY = int(os.environ.get("STORAGE_WRITE_CONCURRENCY", "8"))
BATCH = 256
GOAL_RATE = 6000  # deletions a minute
GOAL_RATIO = 0.7
BLOBS = "docker/registry/v2/blobs/"
# Blobs stored at which the whole baseline's cost per deletion is shown (those up to N).
SCALE_POINTS = (20_000, 10_000, 5_000, 4_000, 3_000, 2_000, 1_000, 500)


def digest(number):
    return hashlib.sha256(f"bench blob {number}".encode()).hexdigest()


def blob_path(hex_digest):
    return f"{BLOBS}sha256/{hex_digest[:2]}/{hex_digest}/data"


def trash_path(hex_digest, run):
    return f"oyster-trash/{run}/sha256/{hex_digest}"


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Loaded into Azurite's Node process (NODE_OPTIONS=--require): see start_azurite.
# Azurite sets the keep-alive time-out itself after creating the server, hence properties it
# cannot set. Node's header (60 s) and request (300 s) time-outs are raised too: a request
# queued behind 8 batches at a few thousand blobs stored can wait that long.
KEEP_ALIVE_JS = """const http = require("http");
const create = http.createServer;
http.createServer = function (...args) {
  const server = create.apply(this, args);
  for (const name of ["keepAliveTimeout", "headersTimeout", "requestTimeout"]) {
    Object.defineProperty(server, name, { get: () => 3600 * 1000, set: () => {} });
  }
  return server;
};
"""


def start_azurite(location):
    """An in-memory Azurite (as the harness starts one) whose HTTP server keeps an idle
    connection for an hour instead of Node's 5 s. Node checks that time-out before it reads
    what has arrived on an idle connection, so a request sent on a pooled connection while
    Azurite's one thread is busy with other batches for more than 5 s was closed unread and
    the client saw "connection reset by peer" (8 batches of 256 at 3,000 blobs stored: 2 of
    12 reset after about 6 s, none retried here, see fresh_azurite). Only concurrent clients
    meet it: a sequential loop's next request finds the server idle. Azurite's own
    `--blobKeepAliveTimeout` has no effect in 3.35 (it reads a flag of another name, finds
    none and falls back to 5 s)."""
    from registry_admin.tests import harness

    port = harness.free_port()
    location = Path(location)
    (location / "keep_alive.js").write_text(KEEP_ALIVE_JS)
    environment = dict(os.environ)
    environment["NODE_OPTIONS"] = (
        environment.get("NODE_OPTIONS", "") + f" --require={location / 'keep_alive.js'}"
    ).strip()
    log_path = location / "azurite.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                str(harness.AZURITE_BINARY),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                "--silent",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    harness.wait_for_port(port, timeout=30, process=process, log_path=log_path)
    return harness.RunningAzurite(
        port=port,
        account_name=harness.AZURITE_ACCOUNT,
        account_key=harness.AZURITE_KEY,
        process=process,
        location=location,
    )


@contextlib.contextmanager
def fresh_azurite():
    """A new in-memory Azurite with an empty container: (azurite, container, backend)."""
    from azure.storage.blob import ContainerClient

    from registry_admin import storage

    with tempfile.TemporaryDirectory(prefix="oyster-bench-gc-") as location:
        azurite = start_azurite(location)
        try:
            container = ContainerClient.from_connection_string(
                azurite.connection_string, "registry", connection_timeout=10, read_timeout=300
            )
            container.create_container()
            # No retries: a request retried after a time-out would have done its work twice
            # (a batch delete retried finds its blobs gone, and the count of 202s falls
            # short). A batch of 256 takes Azurite about 35 s at 20,000 blobs stored, and 8
            # of them queue behind each other: hence the long time-out.
            backend = storage.AzureStorage(
                container="registry",
                connection_string=azurite.connection_string,
                timeout=1800,
                retries=0,
                write_concurrency=CONCURRENCY,
            )
            yield azurite, container, backend
        finally:
            azurite.stop()


def stock(container, digests):
    """Write the blobs (untimed), 16 uploads at a time."""

    def upload(hex_digest):
        size = 64 + int(hex_digest[:4], 16) % 1024
        container.upload_blob(blob_path(hex_digest), os.urandom(size), overwrite=True)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(upload, digests))


def listed(container, prefix):
    return sum(1 for _ in container.list_blob_names(name_starts_with=prefix))


def bare_loop(backend, digests, azurite_pid=None, samples=None):
    """The baseline: the SDK's batch delete, 256 at a time, nothing else. With `samples`,
    appends (blobs stored before the batch, seconds, Azurite CPU seconds) per batch."""
    paths = [blob_path(d) for d in digests]
    deleted = 0
    for start in range(0, len(paths), BATCH):
        if samples is not None:
            cpu, started = cpu_seconds(azurite_pid), time.perf_counter()
        parts = backend.client.delete_blobs(*paths[start : start + BATCH])
        deleted += sum(1 for part in parts if part.status_code == 202)
        if samples is not None:
            samples.append(
                (
                    len(paths) - start,
                    time.perf_counter() - started,
                    cpu_seconds(azurite_pid) - cpu,
                )
            )
    return deleted


def run_phase(kind, digests, slice_size, samples=None):
    """One phase on a fresh Azurite: the blobs stocked `slice_size` at a time (all at once
    when None) and each slice deleted by `kind`. Returns the timed seconds (summed over the
    slices), this process's CPU seconds and Azurite's, and the untimed stocking seconds."""
    timed = own_cpu = server_cpu = stocking = 0.0
    size = slice_size or len(digests)
    with fresh_azurite() as (azurite, container, backend):
        pid = azurite.process.pid
        for number, start in enumerate(range(0, len(digests), size)):
            part = digests[start : start + size]
            began = time.perf_counter()
            stock(container, part)
            stocking += time.perf_counter() - began
            assert listed(container, BLOBS) == len(part)
            run = f"run-{number}"
            cpu, azurite_cpu, began = time.process_time(), cpu_seconds(pid), time.perf_counter()
            if kind == "baseline":
                done = bare_loop(backend, part, pid, samples)
            elif kind in ("delete", "delete_sequential"):
                backend.write_concurrency = CONCURRENCY if kind == "delete" else 1
                done = backend.delete_objects(blob_path(d) for d in part)
            else:
                backend.write_concurrency = CONCURRENCY
                done = backend.move_objects((blob_path(d), trash_path(d, run)) for d in part)
            timed += time.perf_counter() - began
            own_cpu += time.process_time() - cpu
            server_cpu += cpu_seconds(pid) - azurite_cpu
            assert done == len(part), (kind, done)
            assert listed(container, BLOBS) == 0, kind
            if kind == "move":
                assert listed(container, f"oyster-trash/{run}/") == len(part)
                if slice_size:  # keep the store small for the next slice (untimed)
                    backend.delete_objects(trash_path(d, run) for d in part)
    return timed, own_cpu, server_cpu, stocking


def scenario(name, digests, slice_size, kinds, rounds, samples=None):
    times, cpu, azurite_cpu, stocking, loads = {}, {}, {}, [], []
    for number in range(rounds):
        shift = number % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            loads.append(common.load_average())
            seconds, own, server, stocked = run_phase(
                kind, digests, slice_size, samples if kind == "baseline" else None
            )
            times.setdefault(kind, []).append(seconds)
            cpu.setdefault(kind, []).append(own)
            azurite_cpu.setdefault(kind, []).append(server)
            stocking.append(stocked)
            print(
                f"{name} round {number + 1} {kind}: {len(digests):,} in {seconds:.1f} s "
                f"({len(digests) / seconds * 60:,.0f}/min); CPU bench {own:.1f} s, Azurite "
                f"{server:.1f} s; stocking {stocked:.0f} s (untimed); load {loads[-1]:.1f}",
                flush=True,
            )
    median = {kind: statistics.median(values) for kind, values in times.items()}
    best = {kind: min(values) for kind, values in times.items()}
    return {
        "blobs": len(digests),
        "slice": slice_size,
        "rounds": rounds,
        "seconds": {kind: [round(t, 2) for t in values] for kind, values in times.items()},
        "median": median,
        "best": best,
        "rate": {kind: len(digests) / t * 60 for kind, t in median.items()},
        "rate_best": {kind: len(digests) / t * 60 for kind, t in best.items()},
        "ratio": {kind: median["baseline"] / t for kind, t in median.items()},
        "ratio_best": {kind: best["baseline"] / t for kind, t in best.items()},
        "cpu": {kind: statistics.median(values) for kind, values in cpu.items()},
        "azurite_cpu": {kind: statistics.median(v) for kind, v in azurite_cpu.items()},
        "stock_seconds": statistics.median(stocking),
        "loads": loads,
    }


def scaling(samples):
    """Per stored-blob count in SCALE_POINTS (the batch starting nearest to it): ms per deletion
    and Azurite CPU ms per deletion of the bare loop."""
    rows = []
    for point in SCALE_POINTS:
        if point > samples[0][0]:
            continue
        stored, seconds, cpu = min(samples, key=lambda sample: abs(sample[0] - point))
        count = min(BATCH, stored)
        rows.append((stored, seconds / count * 1000, cpu / count * 1000))
    return rows


LABELS = {
    "baseline": "bare `container.delete_blobs(*batch)` loop, 256 a batch, sequential (baseline)",
    "delete": f"`delete_objects`, `STORAGE_WRITE_CONCURRENCY={CONCURRENCY}`",
    "delete_sequential": "`delete_objects`, one request at a time (1)",
    "move": f"`move_objects` into the trash: copy, then batch delete ({CONCURRENCY} at a time)",
}


def table(report, kinds):
    lines = [
        "| phase | blobs | seconds: median (best) | per minute: median (best) | "
        "ratio to the bare loop: median (best) | CPU s: bench / Azurite |",
        "|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        lines.append(
            f"| {LABELS[kind]} | {report['blobs']:,} | {report['median'][kind]:.1f} "
            f"({report['best'][kind]:.1f}) | {report['rate'][kind]:,.0f} "
            f"({report['rate_best'][kind]:,.0f}) | {report['ratio'][kind]:.2f} "
            f"({report['ratio_best'][kind]:.2f}) | "
            f"{report['cpu'][kind]:.1f} / {report['azurite_cpu'][kind]:.1f} |"
        )
    return lines


def verdict(report):
    rate, ratio = report["rate"]["delete"], report["ratio"]["delete"]
    parts = [
        f"rate {'met' if rate >= GOAL_RATE else 'not met'} ({rate:,.0f} a minute)",
        f"ratio {'met' if ratio >= GOAL_RATIO else 'not met'} ({ratio:.2f})",
    ]
    met = rate >= GOAL_RATE and ratio >= GOAL_RATIO
    return f"**{'met' if met else 'not met'}**: {', '.join(parts)}"


def markdown(report):
    whole, sliced = report["whole"], report["sliced"]
    first = report["samples"][0]  # the whole baseline's first batch
    loads = whole["loads"] + sliced["loads"]
    move_rate = sliced["rate"]["move"]
    lines = [
        "<!-- gc_delete -->",
        "## Online collector: deleting on Azurite (`bench/gc_delete.py`)",
        "",
        f"Machine: {report['machine']}. Date: {report['date']}. Load average at the start: "
        f"{report['load']:.1f}; "
        f"as each phase started: {min(loads):.1f} to {max(loads):.1f} (1 min; the 2 cores are "
        "shared with other work, which slows Azurite and the client alike, so the ratios are "
        "the figures to compare). "
        f"Whole run {report['minutes']:.0f} minutes. {whole['blobs']:,} "
        "blobs laid out like a registry's (`docker/registry/v2/blobs/sha256/<xx>/<hex>/data`, "
        "64 to 1,087 random bytes), written to a fresh in-memory Azurite before each phase "
        "(untimed) and all deleted by it; every phase's result is checked by a listing. "
        f"Goal (issue #28): `delete_objects` at >= {GOAL_RATE:,} deletions a minute and >= "
        f"{GOAL_RATIO} of the bare loop's rate. The ratio is the bare loop's time over the "
        "phase's, both from the same scenario of the same run; median of the rounds, best in "
        "brackets.",
        "",
        f"**Whole**: the {whole['blobs']:,} blobs in the container at once ({whole['rounds']} "
        f"round; stocking took {whole['stock_seconds']:.0f} s). Goal {verdict(whole)}. No "
        "move phase here: a move keeps every blob stored throughout (a copy in, a source "
        "out), so each of its requests pays Azurite's cost at the full count (hours at 20,000); "
        "moves are measured sliced.",
        "",
        *table(whole, ["baseline", "delete"]),
        "",
        f"**Sliced**: the same {sliced['blobs']:,} deletions with at most "
        f"{sliced['slice']:,} blobs in the container at a time ({sliced['rounds']} "
        f"round{'s' if sliced['rounds'] > 1 else ''}, phases in rotating order). Goal "
        f"{verdict(sliced)}.",
        "",
        *table(sliced, ["baseline", "delete", "delete_sequential"]),
        "",
        "**Moves** (sliced, same rounds): what keeping the data recoverable costs. Per minute "
        "counts blobs moved (each a server-side copy into the trash, then its source deleted "
        "by the batch delete); the ratio is still the bare deletion loop's time over the "
        f"move's: {move_rate:,.0f} moves a minute, "
        f"{sliced['rate']['delete'] / move_rate:.1f} times as long as `delete_objects`.",
        "",
        *table(sliced, ["move"]),
        "",
        "**Azurite's cost per deletion grows with what it stores** (the whole baseline's batches):",
        "",
        "| blobs in the container | ms per deletion (bare loop) | Azurite CPU ms per deletion |",
        "|---|---|---|",
        *(
            f"| {stored:,} | {ms:.1f} | {cpu:.1f} |"
            for stored, ms, cpu in scaling(report["samples"])
        ),
        "",
        *why(report),
        "",
        "Azurite is one Node process (one thread) on the same two cores. Its metadata store "
        "(LokiJS, in memory here) finds the blob to delete by a query whose first indexed "
        "field, the account name, is the same for every blob (so it walks the collection; "
        "three such queries per deletion) and removes it from four indices, so its time per "
        "deletion grows with the blobs it holds, faster than in proportion here (the table "
        "above, from a single batch per row under a moving load). Azure's own "
        "service is not measured. Azurite has no soft delete: keeping deleted data "
        "recoverable costs a server-side copy per blob (the moves table). The bench's client "
        "has a 30-minute time-out and no retries: at "
        f"{first[0]:,} blobs stored one batch of {BATCH} took Azurite {first[1]:.0f} s (the "
        "portal's default STORAGE_TIMEOUT is 30 s, and 8 such batches in flight queue behind "
        "each other), and a "
        "batch retried after a time-out finds its blobs already deleted (404, which "
        "`delete_objects` counts as gone, not as deleted). Azurite's HTTP server keeps idle "
        "connections 5 s and checks that before reading what has arrived, so with requests "
        "queued behind other batches it reset pooled connections (2 of 12 batches with 8 in "
        "flight at 3,000 blobs): the bench raises Node's keep-alive time-out in Azurite's "
        "process (its `--blobKeepAliveTimeout` has no effect in 3.35). A sequential loop does "
        "not meet this; the portal's client (2 retries, not configurable) would send such a "
        "batch again.",
        "<!-- /gc_delete -->",
        "",
    ]
    return "\n".join(lines)


def why(report):
    """Sentences on what bounds each scenario, from its own figures."""
    lines = []
    for name in ("whole", "sliced"):
        scene = report[name]
        base, rate, ratio = (
            scene["rate"]["baseline"],
            scene["rate"]["delete"],
            scene["ratio"]["delete"],
        )
        wall = scene["median"]["delete"]
        own, server = scene["cpu"]["delete"], scene["azurite_cpu"]["delete"]
        text = (
            f"- {name.capitalize()}: `delete_objects` {rate:,.0f} a minute, ratio {ratio:.2f}; "
            f"the bare loop {base:,.0f} a minute. Of `delete_objects`' {wall:.1f} s, the bench "
            f"process used {own:.1f} s of CPU and Azurite {server:.1f} s"
        )
        if base < GOAL_RATE:
            text += (
                f"; the bare loop itself is under {GOAL_RATE:,} a minute, so no client reaches "
                "the rate goal against this Azurite at this size"
            )
        lines.append(text + ".")
    sliced = report["sliced"]
    lines.append(
        f"- One request at a time (sliced), `delete_objects` is at "
        f"{sliced['ratio']['delete_sequential']:.2f} of the bare loop. It sends the same "
        "requests, but with `raise_on_any_failure=False`; the bare loop takes the SDK's "
        "default (True), under which azure-storage-blob's `_batch_send` parses each answer "
        "twice (`response.parts()` parses all 256 parts at once, in a new thread pool, and "
        "it is called once for nothing and once for the check), hence the bare loop's larger "
        f"CPU column ({sliced['cpu']['baseline']:.1f} s against "
        f"{sliced['cpu']['delete_sequential']:.1f} s). That is a small part of the wall "
        "time; the rest of the gap is the order of the phases against a load that moved "
        f"(the bare loop's rounds: {' s, '.join(f'{t:.1f}' for t in sliced['seconds']['baseline'])} "
        f"s). With {CONCURRENCY} in flight Azurite always has the next batch waiting (no "
        "round trip between its requests), which is what concurrency adds here: Azurite's "
        "work runs on one thread, so two batches in flight share one core."
    )
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 blobs, one round")
    parser.add_argument("--blobs", type=int, help="blobs per phase (default 5,000)")
    parser.add_argument("--slice", type=int, help="blobs stored at once when sliced (1,000)")
    parser.add_argument("--rounds", type=int, help="rounds of the sliced phases (default 2)")
    parser.add_argument("--save", help="also write the measurements to this JSON file")
    parser.add_argument("--render", help="write bench/README.md's section from a --save file")
    args = parser.parse_args()
    if args.render:
        with open(args.render) as handle:
            common.write_section(markdown(json.load(handle)), marker="gc_delete")
        print("bench/README.md updated.")
        return
    started, load = time.perf_counter(), common.load_average()
    blob_count = args.blobs or (1500 if args.quick else 5000)
    slice_size = args.slice or (500 if args.quick else 1000)
    rounds = args.rounds or (1 if args.quick else 2)
    print(f"machine: {machine()}; {common.today()}; load {load:.1f}", flush=True)
    digests = [digest(number) for number in range(blob_count)]
    samples = []
    report = {
        "whole": scenario("whole", digests, None, ["baseline", "delete"], 1, samples),
        "sliced": scenario(
            "sliced",
            digests,
            slice_size,
            ["baseline", "delete", "delete_sequential", "move"],
            rounds,
        ),
        "samples": samples,
        "machine": machine(),
        "date": common.today(),
        "load": load,
    }
    report["minutes"] = (time.perf_counter() - started) / 60
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(report, handle, indent=1)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    for stored, ms, cpu in scaling(samples):
        print(f"{stored:>6,} blobs stored: {ms:.1f} ms per deletion, Azurite CPU {cpu:.1f} ms")
    for name in ("whole", "sliced"):
        print(f"{name}: goal {verdict(report[name])}")
    if args.quick:
        print(markdown(report))
    else:
        common.write_section(markdown(report), marker="gc_delete")
        print("bench/README.md updated.")


if __name__ == "__main__":
    main()
