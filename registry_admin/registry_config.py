"""The registry-side configuration that makes a registry talk to this portal.

`notification_endpoint()` is what `python manage.py registry_config` prints and the admin settings
page shows; `local_registry_config()` is the whole config `make run` and the test harness give
Debian's `docker-registry`.
Reference: https://distribution.github.io/distribution/about/configuration/#notifications

Both take a registry version, 2 (distribution 2.8) or 3 (distribution 3.x, `registry:3`); what
differs is recorded from the upstream source in registry_admin/tests/distribution3/README.md:
3.x reads /etc/distribution/config.yml by default, and its Azure driver refuses to start without
`credentials.type`.
"""

import json
import shlex

import yaml

EVENTS_PATH = "/api/registry/events"
REGISTRY_LOG_LEVEL = "warn"


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


REGISTRY_VERSIONS = (2, 3)
# The official images' `CMD ["serve", PATH]` (distribution's Dockerfile at v2.8.2 and v3.0.0).
CONFIG_PATHS = {2: "/etc/docker/registry/config.yml", 3: "/etc/distribution/config.yml"}
# registry/storage/driver/azure/parser.go (v3.0.0): the values `credentials.type` accepts.
AZURE_CREDENTIALS_TYPES = ("default_credentials", "shared_key", "client_secret")
# Printed where the registry needs a secret the portal must not know or print.
ACCOUNT_KEY_PLACEHOLDER = "<storage account key>"
CLIENT_SECRET_PLACEHOLDER = "<client secret>"


def check_version(version):
    version = int(version)
    if version not in REGISTRY_VERSIONS:
        raise ValueError(f"registry version {version} is not supported: use 2 or 3")
    return version


def azure_storage_section(
    version,
    account_name,
    container,
    root_directory="",
    service_url="",
    credentials_type="default_credentials",
):
    """`storage.azure` for the registry version, with placeholders for any secret.

    2.8 knows only an account key (its driver has no token credentials). 3.x needs
    `credentials.type`: `default_credentials` is the app's managed identity (or workload
    identity), `shared_key` the account key; and it takes `serviceurl` for other endpoints.
    """
    version = check_version(version)
    section = {"accountname": account_name, "container": container}
    if version == 2:
        section["accountkey"] = ACCOUNT_KEY_PLACEHOLDER
    else:
        if credentials_type not in AZURE_CREDENTIALS_TYPES:
            raise ValueError(
                f"credentials type {credentials_type!r} is not one of "
                + ", ".join(AZURE_CREDENTIALS_TYPES)
            )
        credentials = {"type": credentials_type}
        if credentials_type == "shared_key":
            section["accountkey"] = ACCOUNT_KEY_PLACEHOLDER
        elif credentials_type == "client_secret":
            credentials.update(
                clientid="<client id>", tenantid="<tenant id>", secret=CLIENT_SECRET_PLACEHOLDER
            )
        section["credentials"] = credentials
        if service_url:
            section["serviceurl"] = service_url
    if root_directory.strip("/"):
        section["rootdirectory"] = root_directory.strip("/")
    return {"azure": section}


def storage_env_lines(storage_section):
    """`REGISTRY_STORAGE=azure` and `REGISTRY_STORAGE_AZURE_*` lines for a storage section: the
    registry's parser turns each `_` level into a nested key (configuration/parser.go)."""
    ((driver, parameters),) = storage_section.items()
    lines = [f"REGISTRY_STORAGE={driver}"]

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}_{key.upper()}", item)
        else:
            lines.append(f"{prefix}={shlex.quote(str(value))}")

    walk(f"REGISTRY_STORAGE_{driver.upper()}", parameters)
    return lines


def local_registry_config(
    listen,
    storage_root,
    htpasswd_path,
    portal_url,
    token,
    delete_enabled=True,
    realm="Oyster",
    version=2,
    auth=None,
):
    """A complete registry config for a local filesystem-backed registry.

    The same keys serve 2.8 and 3.x (the filesystem driver, htpasswd and notifications did not
    change); `version` is checked so a caller cannot ask for one Oyster does not know. `auth`
    replaces the htpasswd block, e.g. with `token_auth_section(...)["auth"]`.
    """
    check_version(version)
    return {
        "version": 0.1,
        # At info, 2.8.2 logs "configuring endpoint ... headers=map[Authorization:[Bearer TOKEN]]"
        # on start; warn keeps the notification token out of its log (failed deliveries and
        # request errors are still logged, at error).
        "log": {"level": REGISTRY_LOG_LEVEL, "formatter": "text", "accesslog": {"disabled": True}},
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


def registry_config_texts(portal_url, token, ignore=None, version=2, storage_section=None):
    """(yaml_text, env_text) for `manage.py registry_config`: the notification settings, plus
    `storage_section` (see azure_storage_section) when given, for one registry version."""
    version = check_version(version)
    yaml_text, env_text = notification_config_texts(portal_url, token, ignore=ignore)
    if storage_section:
        yaml_text += dump_yaml({"storage": storage_section})
        env_text += "\n".join(storage_env_lines(storage_section)) + "\n"
    return yaml_text, env_text


def config_path_note(version):
    """One comment line: where this registry version's image reads its config."""
    version = check_version(version)
    earlier = "; 2.8 read /etc/docker/registry/config.yml" if version == 3 else ""
    return f"# Registry {version} reads {CONFIG_PATHS[version]} (the official image's default{earlier})."


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
