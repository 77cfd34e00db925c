"""Size and build time of the image, and what makes up the size.

Builds the Dockerfile twice from scratch (`--no-cache`) with podman, as tests/test_container.py
does (same containers.conf, stand-in base images from scripts/container-standins.sh): the
current one, and as baseline the Dockerfile of the commit given by --baseline (default: the one
before the image was first built in the test suite), in the same run. Then a rebuild with the
cache and nothing changed, and a breakdown of the current image by layer and by folder.

    .venv/bin/python bench/container_image.py [--baseline COMMIT]

Takes about two minutes (two cold builds, each downloading the pinned requirements).
"""

import argparse
import json
import os
import subprocess
import tempfile
import time

import common

REPO = common.REPO_ROOT
ENV = {**os.environ, "CONTAINERS_CONF": str(REPO / "tests" / "container" / "containers.conf")}
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# The Dockerfile before issue #20 (no registry binary, pip in the venv, all locales).
DEFAULT_BASELINE = "506fc84"
MB = 1_000_000


def podman(*args, timeout=900):
    return subprocess.run(
        ["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout, check=True
    ).stdout


def build(dockerfile, tag, cache):
    started = time.monotonic()
    podman(
        "build",
        "--quiet",
        "--format",
        "docker",
        "--pull=never",
        *([] if cache else ["--no-cache"]),
        "--volume",
        f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "--file",
        str(dockerfile),
        "--tag",
        tag,
        str(REPO),
    )
    return time.monotonic() - started


def size(tag):
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).strip())


def du(tag, paths):
    """Bytes under each path inside the image (apparent size, as the layers count them)."""
    script = (
        "for p in "
        + " ".join(paths)
        + '; do du -s -B1 --apparent-size "$p" 2>/dev/null; done; true'
    )
    out = podman("run", "--rm", "--entrypoint", "sh", tag, "-c", script)
    return {line.split("\t")[1]: int(line.split("\t")[0]) for line in out.splitlines()}


def layer_name(created_by, size, folders):
    """podman history names COPY layers by content hash: name them by what they hold."""
    if created_by.lstrip().startswith("/bin/sh -c #(nop) ADD file:"):
        return "the base image (stand-in)"
    if "collectstatic" in created_by:
        return "collectstatic: hashed and compressed static files"
    if "groupadd" in created_by:
        return "the oyster user, /data and /auth"
    if "COPY" in created_by:
        parts = {
            "the venv (`COPY --from=build /opt/venv`)": folders.get("/opt/venv", 0),
            "the registry binary (`COPY --from=registry`)": folders.get(
                "/usr/local/bin/registry", 0
            ),
            "the code (`COPY . /app`)": folders.get("/app", 0) - folders.get("/app/staticfiles", 0),
        }
        return min(parts, key=lambda name: abs(parts[name] - size))
    return created_by.replace("/bin/sh -c ", "").replace("#(nop) ", "")[:60]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    args = parser.parse_args()
    subprocess.run([str(REPO / "scripts" / "container-standins.sh")], env=ENV, check=True)
    load = common.load_average()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        baseline_file = os.path.join(tmp, "Dockerfile")
        with open(baseline_file, "w") as f:
            f.write(
                subprocess.run(
                    ["git", "show", f"{args.baseline}:Dockerfile"],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        cold_baseline = build(baseline_file, "oyster-bench:baseline", cache=False)
    cold = build(REPO / "Dockerfile", "oyster-bench:current", cache=False)
    warm = build(REPO / "Dockerfile", "oyster-bench:current", cache=True)
    base_size = size("docker.io/library/python:3.11.13-slim-bookworm")
    current, baseline = size("oyster-bench:current"), size("oyster-bench:baseline")

    site = "/opt/venv/lib/python3.11/site-packages"
    paths = [
        "/opt/venv",
        f"{site}/django",
        f"{site}/pip",
        f"{site}/setuptools",
        f"{site}/cryptography",
        f"{site}/psycopg_binary.libs",
        f"{site}/azure",
        "/usr/local/bin/registry",
        "/app",
        "/app/staticfiles",
    ]
    folders = du("oyster-bench:current", paths)
    baseline_folders = du("oyster-bench:baseline", paths)
    history = json.loads(podman("history", "--format", "json", "oyster-bench:current"))
    layers = [(h["size"], layer_name(h["CreatedBy"], h["size"], folders)) for h in history]
    layers = [(n, what) for n, what in layers if n >= MB // 10]
    podman("rmi", "oyster-bench:baseline", "oyster-bench:current")

    def mb(value):
        return f"{value / MB:.0f} MB"

    lines = [
        "## Image size and build time (`bench/container_image.py`)",
        "",
        f"Machine: {common.machine()}. Date: {common.today()}. Load average at the start: "
        f"{load:.1f}. podman 4.3.1 (buildah 1.28), Docker format. Whole run "
        f"{time.monotonic() - started:.0f} s. Built on the stand-in base (Debian bookworm "
        f"minbase with Debian's Python 3.11.2, {mb(base_size)}), not the official "
        "`python:3.11.13-slim-bookworm` (about 130 MB by its published size, not measured here): the base's share differs on "
        "a real Docker build, and the registry binary is the stand-in's (Debian's 2.8.2); the "
        "rest is the same. Baseline: the Dockerfile of "
        f"`{args.baseline}`, built in the same run.",
        "",
        "| image | size | ratio to baseline | cold build (`--no-cache`) | ratio |",
        "|---|---|---|---|---|",
        f"| baseline (`{args.baseline}`) | {mb(baseline)} | 1.00 | {cold_baseline:.0f} s | 1.00 |",
        f"| current | {mb(current)} | {current / baseline:.2f} | {cold:.0f} s | "
        f"{cold / cold_baseline:.2f} |",
        "",
        f"Rebuild with the cache and nothing changed: {warm:.1f} s. A code change rebuilds "
        "from `COPY . /app` on (the collectstatic step is most of it); a change to "
        "requirements.txt reinstalls the venv.",
        "",
        "What the current image is made of (layers with a size, largest first):",
        "",
        "| layer | size |",
        "|---|---|",
        *[f"| {what} | {mb(n)} |" for n, what in sorted(layers, reverse=True)],
        "",
        "Inside the venv and the app (apparent sizes):",
        "",
        "| path | current | baseline |",
        "|---|---|---|",
    ]
    for path in paths:
        now, before = folders.get(path), baseline_folders.get(path)
        lines.append(
            f"| `{path}` | {mb(now) if now else 'absent'} | {mb(before) if before else 'absent'} |"
        )
    lines += [
        "",
        "Left out of the runtime: pip and setuptools (only install), and the message catalogs "
        "of languages other than English in Django and its apps (the portal is English only). "
        "Added: the registry's own binary from `registry:2.8.3` for garbage collection. "
        "Kept: the `.pyc` files (the venv is read-only for uid 10001, so without them every "
        "start would compile again), the static sources next to the hashed copies.",
    ]
    common.write_section("\n".join(lines), marker="container_image")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
