"""The image's HEALTHCHECK: exit 0 when /healthz answers 200 on the local port, 1 otherwise.

Standard library only (the slim image has no curl). The request carries a Host header the portal
accepts, taken from ALLOWED_HOSTS, because a deployment usually lists only its public names and
Django refuses any other host with a 400.
"""

import os
import sys
import urllib.error
import urllib.request


def allowed_host():
    first = os.environ.get("ALLOWED_HOSTS", "").split(",")[0].strip()
    if not first or first == "*":
        return "localhost"
    # ".example.com" allows example.com and its subdomains.
    return first.lstrip(".")


def main():
    port = os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz", headers={"Host": allowed_host()}
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310  (fixed local URL)
            return 0 if response.status == 200 else 1
    # ValueError: a Host urllib refuses to send (control characters, non-Latin-1 text).
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
