"""The registry-side configuration that makes a registry talk to this portal.

`notification_endpoint()` is what `python manage.py registry_config` prints and the admin settings
page shows; `local_registry_config()` is the whole config `make run` and the test harness give
Debian's `docker-registry`.
Reference: https://distribution.github.io/distribution/about/configuration/#notifications
"""

import json
import shlex

import yaml

EVENTS_PATH = "/api/registry/events"


def notification_endpoint(portal_url, token, timeout="3s", threshold=3, backoff="5s", ignore=None):
    """One entry of `notifications.endpoints` pointing at this portal's webhook."""
    endpoint = {
        "name": "oyster",
        "url": portal_url.rstrip("/") + EVENTS_PATH,
        "headers": {"Authorization": [f"Bearer {token}"]},
        "timeout": timeout,
        "threshold": threshold,
        "backoff": backoff,
    }
    if ignore:
        endpoint["ignore"] = ignore
    return endpoint


def endpoints_env_value(endpoint):
    """The `REGISTRY_NOTIFICATIONS_ENDPOINTS` form: the endpoints list as one line of JSON (YAML)."""
    return json.dumps([endpoint], separators=(",", ":"))


def local_registry_config(
    listen,
    storage_root,
    htpasswd_path,
    portal_url,
    token,
    delete_enabled=True,
    realm="Oyster",
    auth=None,
):
    """A complete registry config for a local filesystem-backed registry.

    `auth` replaces the htpasswd block, e.g. with `token_auth_section(...)["auth"]`.
    """
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_root)},
            "delete": {"enabled": bool(delete_enabled)},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": listen, "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "auth": auth or {"htpasswd": {"realm": realm, "path": str(htpasswd_path)}},
        "notifications": {
            "events": {"includereferences": True},
            "endpoints": [notification_endpoint(portal_url, token, backoff="1s")],
        },
    }


def dump_yaml(data):
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# Shown instead of the real token where the config is displayed in a page.
TOKEN_PLACEHOLDER = "<NOTIFICATIONS_TOKEN>"
# What the `ignore` block drops when the admin asks to leave blob-level noise out.
IGNORE_BLOBS = {"mediatypes": ["application/octet-stream"]}


def notification_config_texts(portal_url, token, ignore=None):
    """(yaml_text, env_text): the registry's notification settings for this portal, both ways.

    yaml_text is the `notifications:` section of the registry's config.yml; env_text the same as
    `REGISTRY_NOTIFICATIONS_*` environment variables (shell-quoted lines).
    """
    endpoint = notification_endpoint(portal_url, token, ignore=ignore or None)
    section = {"notifications": {"events": {"includereferences": True}, "endpoints": [endpoint]}}
    env_lines = [
        # The registry names environment overrides after its Go struct fields: `events` in YAML is
        # the field EventConfig (..._EVENTS_... is ignored with a warning; measured on 2.8.2).
        "REGISTRY_NOTIFICATIONS_EVENTCONFIG_INCLUDEREFERENCES=true",
        "REGISTRY_NOTIFICATIONS_ENDPOINTS=" + shlex.quote(endpoints_env_value(endpoint)),
    ]
    return dump_yaml(section), "\n".join(env_lines) + "\n"


TOKEN_PATH = "/auth/token"


def token_auth_section(portal_url, service, issuer, rootcertbundle):
    """The registry's `auth:` block that sends clients to this portal for tokens."""
    return {
        "auth": {
            "token": {
                "realm": portal_url.rstrip("/") + TOKEN_PATH,
                "service": service,
                "issuer": issuer,
                "rootcertbundle": str(rootcertbundle),
            }
        }
    }


def token_auth_texts(portal_url, service, issuer, rootcertbundle):
    """(yaml_text, env_text) of the token `auth:` block, as config.yml and REGISTRY_AUTH_* lines."""
    section = token_auth_section(portal_url, service, issuer, rootcertbundle)
    token = section["auth"]["token"]
    env_lines = ["REGISTRY_AUTH=token"] + [
        f"REGISTRY_AUTH_TOKEN_{name.upper()}={shlex.quote(str(value))}"
        for name, value in token.items()
    ]
    return dump_yaml(section), "\n".join(env_lines) + "\n"
