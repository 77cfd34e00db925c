"""Keep-expression benchmark: the worst tag time of RE2 on the expressions that stall Python's
backtracking `re`, against a plain expression (the baseline, measured in the same run).

    .venv/bin/python bench/regex_keep.py            # a few seconds
    .venv/bin/python bench/regex_keep.py --write    # and replace its section in bench/README.md

Each expression runs `fullmatch` on tags of 30, 64 and 128 characters built to fail late (the
worst case for a backtracking engine); the worst time over the tags is reported, in ms and as a
ratio to the baseline `latest|v\\d+` on the same tags. Python's `re` on the issue's expression is
timed on the 30-character tag `a…ab` in a child process stopped after 10 s, to show what RE2
replaced.
"""

import argparse
import subprocess
import sys
import time

import common
import re2

SECTION = "regex_keep"
BASELINE = r"latest|v\d+"
HOSTILE = [r"((a?){10}){3}a{30}", r"(a+)+$", r"(a|aa)*b", r".*.*.*.*.*x", r"(\w+)*!"]
TAGS = ["a" * n for n in (30, 64, 128)] + ["a" * (n - 1) + "b" for n in (30, 64, 128)]


def worst_ms(pattern, repeats=200):
    compiled = re2.compile(pattern)
    worst = 0.0
    for tag in TAGS:
        started = time.perf_counter()
        for _ in range(repeats):
            compiled.fullmatch(tag)
        worst = max(worst, (time.perf_counter() - started) / repeats * 1000)
    return worst


def python_re_seconds(pattern, tag, cap=10):
    code = f"import re,time;t=time.perf_counter();re.fullmatch({pattern!r},{tag!r});print(time.perf_counter()-t)"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=cap
        )
        return float(out.stdout)
    except subprocess.TimeoutExpired:
        return None


def md(pattern):
    return pattern.replace("|", "\\|")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    base = worst_ms(BASELINE)
    rows = [(pattern, worst_ms(pattern)) for pattern in HOSTILE]
    slow = python_re_seconds(HOSTILE[0], "a" * 29 + "b")
    lines = [
        "## regex_keep.py",
        "",
        f"{common.today()}, {common.machine()}, load {common.load_average():.1f}. "
        f"Worst `fullmatch` time over tags of 30-128 characters; baseline `{md(BASELINE)}` "
        f"{base * 1000:.1f} µs.",
        "",
        "| expression | RE2 worst (ms) | ratio to baseline |",
        "|---|---|---|",
        *[f"| `{md(p)}` | {ms:.4f} | {ms / base:.1f}× |" for p, ms in rows],
        "",
        "Python's `re` (the engine before RE2) on `((a?){10}){3}a{30}` with the 30-character tag "
        "`a…ab`: " + (f"{slow:.2f} s" if slow is not None else "over 10 s (stopped there)") + ".",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        common.write_section(text, marker=SECTION)


if __name__ == "__main__":
    main()
