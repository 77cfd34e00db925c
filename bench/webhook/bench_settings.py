"""Settings for bench/webhook_throughput.py: the portal's own, plus a no-op endpoint to compare."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench_urls"
