#!/usr/bin/env bash
# Installs what `make test` needs on a fresh Debian machine, each piece only when missing:
# Debian's docker-registry, skopeo, chromium, postgresql and prometheus (for promtool), and
# Azurite and oidc-provider (the sign-in tests' OpenID Provider) from npm.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/docker-registry ] || need_apt+=(docker-registry)
[ -x /usr/bin/skopeo ] || need_apt+=(skopeo)
# promtool checks /metrics' output (tests/test_metrics_gunicorn.py); Debian ships it in prometheus.
[ -x /usr/bin/promtool ] || need_apt+=(prometheus)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages: ${need_apt[*]}. Install them: sudo apt-get install ${need_apt[*]}" >&2
    exit 1
  fi
  echo "Installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x node_modules/.bin/azurite-blob ] || [ ! -f node_modules/oidc-provider/package.json ]; then
  command -v npm >/dev/null || { echo "npm is missing: apt-get install npm" >&2; exit 1; }
  echo "Installing Azurite and oidc-provider (npm)"
  npm ci --no-audit --no-fund --loglevel=error
fi
