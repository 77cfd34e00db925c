"""What event hooks cost where events are applied, and how fast the sender empties a queue.

    .venv/bin/python bench/event_hooks.py            # about a minute on 2 cores
    .venv/bin/python bench/event_hooks.py --write    # and replace its section in bench/README.md
    .venv/bin/python bench/event_hooks.py --quick    # smaller, for a smoke run

In process, the test settings' SQLite database. Phase 1: batches of real-shaped push events
(tests' factories: a manifest push with a tag, as distribution 2.8 sends) stored as the
notification endpoint stores them, then applied as the worker's applier does
(`ingest.apply_pending`, 1,000 per transaction), with no hook, then with 3 hooks (all kinds, one
of them filtered to a repository pattern the events match); alternating rounds, median. The
notification endpoint itself does not change: it only stores (see webhook_throughput.py).
Phase 2: the queue those hooks filled is sent by `event_hooks.send_due` to a local receiver
(http.server, 200 at once), as the worker's sender thread does: deliveries per second.
"""

import argparse
import os
import statistics
import sys
import time

import common
from common import machine

sys.path.insert(0, str(common.REPO_ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings_test")
os.environ.setdefault("NOTIFICATIONS_APPLY_DELAY", "0.25")
SECTION = "event_hooks"


def run(rounds, events_per_round):
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    from registry_admin import event_hooks, ingest, notifications
    from registry_admin.models import EventHook, HookDelivery
    from registry_admin.tests.factories import make_envelope, make_registry_event
    from registry_admin.tests.harness import serving
    from registry_admin.tests.test_event_hooks import receiver_class

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0)
    settings.EVENT_HOOKS_ALLOW_PRIVATE = True
    results = {"none": [], "hooks": []}

    def apply_rate(count):
        envelopes = [
            make_envelope(
                *(
                    make_registry_event(repository=f"team/app-{n % 50}", tag=f"v{n}")
                    for n in range(start, min(start + 50, count))
                )
            )
            for start in range(0, count, 50)
        ]
        for body in envelopes:
            notifications.record(notifications.parse_envelope(body))
        started = time.perf_counter()
        while ingest.apply_pending():
            pass
        return count / (time.perf_counter() - started)

    try:
        with serving(receiver_class()) as server:
            apply_rate(200)  # warm-up
            for _ in range(rounds):
                for name in results:
                    EventHook.objects.all().delete()
                    event_hooks.forget_cached()
                    if name == "hooks":
                        for hook, pattern in (("a", ""), ("b", "team/*"), ("c", "")):
                            event_hooks.save_hook(
                                "bench", hook, f"{server.url}/{hook}", "cloudevents", (), pattern
                            )
                        HookDelivery.objects.all().delete()
                    results[name].append(apply_rate(events_per_round))
            queued = HookDelivery.objects.filter(state=HookDelivery.State.PENDING).count()
            started = time.perf_counter()
            while event_hooks.send_due():
                pass
            send_seconds = time.perf_counter() - started
            delivered = HookDelivery.objects.filter(state=HookDelivery.State.DELIVERED).count()
    finally:
        connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)
    return {
        "none": statistics.median(results["none"]),
        "hooks": statistics.median(results["hooks"]),
        "queued": queued,
        "delivered": delivered,
        "send_rate": delivered / send_seconds if send_seconds else 0,
    }


def markdown(r, load, seconds, events, rounds):
    return "\n".join(
        [
            "## Event hooks (`bench/event_hooks.py`)",
            "",
            f"Machine: {machine()}. Date: {common.today()}. Load average at the start: "
            f"{load:.1f}. Whole run {seconds:.0f} s. SQLite, in process; {events:,} push events "
            f"per round, median of {rounds} alternating rounds.",
            "",
            "| | events applied/s | ratio |",
            "|---|---|---|",
            f"| no hook | {r['none']:,.0f} | 1.00 |",
            f"| 3 CloudEvents hooks taking every push (3 deliveries queued per event) | "
            f"{r['hooks']:,.0f} | {r['hooks'] / r['none']:.2f} |",
            "",
            f"Sender (`send_due`, one process, a local receiver answering 200): "
            f"{r['delivered']:,} of {r['queued']:,} queued deliveries sent, "
            f"{r['send_rate']:,.0f} deliveries/s.",
            "",
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller (smoke run)")
    parser.add_argument("--write", action="store_true", help="update bench/README.md")
    args = parser.parse_args()
    rounds, events = (1, 500) if args.quick else (5, 2000)
    print(f"machine: {machine()}; date: {common.today()}", flush=True)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    results = run(rounds, events)
    text = markdown(results, load, time.perf_counter() - started, events, rounds)
    print(text)
    if args.write:
        common.write_section(text, marker=SECTION)


if __name__ == "__main__":
    main()
