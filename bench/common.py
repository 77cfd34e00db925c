"""What every benchmark script shares: the machine line, percentiles, a free port, and writing its
own section of bench/README.md.

Scripts run as `.venv/bin/python bench/<script>.py`, so this folder is on sys.path and they
`import common`.
"""

import os
import platform
import re
import socket
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "bench" / "README.md"
PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine(sqlite=False, kernel=False):
    """ "AMD EPYC, 2 cores, Python 3.11.7" plus, on request, the SQLite library and the kernel."""
    parts = [cpu_model(), f"{os.cpu_count()} cores", f"Python {platform.python_version()}"]
    if sqlite:
        parts.append(f"SQLite {sqlite3.sqlite_version}")
    if kernel:
        parts.append(f"{platform.system()} {platform.release()}")
    return ", ".join(parts)


def load_average(minutes=1):
    """The 1-, 5- or 15-minute load average: other work on a shared machine skews timings."""
    return os.getloadavg()[{1: 0, 5: 1, 15: 2}[minutes]]


def today():
    return f"{datetime.now(UTC):%Y-%m-%d}"


def percentile(values, fraction):
    """The nearest-rank percentile (`fraction` 0.99 for p99) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_section(section, heading=None, marker=None):
    """Put a script's `section` into bench/README.md in place of its previous one, or append it.

    A section is found either between `<!-- marker -->` and `<!-- /marker -->` (added around
    `section` unless it carries them), or from its `heading` line (e.g. "## browse.py") to the next section.
    Other scripts' sections are left as they are.
    """
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    section = section.rstrip("\n") + "\n"
    if marker and not section.startswith(f"<!-- {marker} -->"):
        section = f"<!-- {marker} -->\n{section}<!-- /{marker} -->\n"
    if marker:
        pattern = re.compile(
            rf"<!-- {re.escape(marker)} -->.*?<!-- /{re.escape(marker)} -->\n?", re.S
        )
        if pattern.search(text):
            README.write_text(pattern.sub(lambda _: section, text, count=1))
            return
    elif heading and heading in text:
        start = text.index(heading)
        # Up to the next section: a heading, or the marker line that opens a marked one.
        ends = [text.find(mark, start + len(heading)) for mark in ("\n## ", "\n<!-- ")]
        end = min((e for e in ends if e != -1), default=-1)
        rest = "\n" + text[end + 1 :] if end != -1 else ""
        README.write_text(text[:start] + section + rest)
        return
    README.write_text(text.rstrip("\n") + "\n\n" + section)


def page_bench_env():
    """Environment for a child process that renders pages with production settings in-process
    (the Django test client, host `testserver`), on a database the caller sets in DATABASE_URL."""
    return {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "SECRET_KEY": "bench-" + "s" * 50,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "testserver",
        "NOTIFICATIONS_TOKEN": "bench-token-" + "x" * 20,
        "LOG_LEVEL": "ERROR",
    }


def run_for(threads, seconds, stop, join_timeout):
    """Start `threads`, let them run `seconds`, set `stop` and wait for each (a load phase)."""
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(join_timeout)
