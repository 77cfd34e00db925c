"""System checks: each misconfiguration is reported with a sentence that says what to set.

Errors stop `migrate`, `runserver` and gunicorn's preload; warnings are printed and the portal
runs with the affected feature degraded.
"""

import ipaddress
import os
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, Warning, register

from . import storage


@register()
def check_registry_settings(app_configs, **kwargs):
    problems = []
    url = urlsplit(settings.REGISTRY_URL)
    if url.scheme not in ("http", "https") or not url.netloc:
        problems.append(
            Error(
                f"REGISTRY_URL={settings.REGISTRY_URL!r} is not an http(s) URL.",
                hint="Set REGISTRY_URL to the registry's base URL, e.g. https://registry.example.com.",
                id="oyster.E001",
            )
        )
    if not settings.REGISTRY_PASSWORD:
        problems.append(
            Warning(
                "REGISTRY_PASSWORD is empty: the portal cannot authenticate to the registry.",
                hint="Set REGISTRY_USERNAME and REGISTRY_PASSWORD to the portal's service account "
                "(`python manage.py htpasswd rotate-service` creates one in the htpasswd file).",
                id="oyster.W001",
            )
        )
    if settings.REGISTRY_TIMEOUT <= 0:
        problems.append(
            Error(
                "REGISTRY_TIMEOUT must be a positive number of seconds.",
                hint="Set REGISTRY_TIMEOUT, e.g. 10.",
                id="oyster.E002",
            )
        )
    if settings.REGISTRY_CA_BUNDLE and not os.path.isfile(settings.REGISTRY_CA_BUNDLE):
        problems.append(
            Error(
                f"REGISTRY_CA_BUNDLE={settings.REGISTRY_CA_BUNDLE!r} is not a readable file.",
                hint="Set REGISTRY_CA_BUNDLE to a PEM file with the registry's CA, or leave it empty.",
                id="oyster.E003",
            )
        )
    return problems


@register()
def check_htpasswd_settings(app_configs, **kwargs):
    problems = []
    for name in ("HTPASSWD_BCRYPT_ROUNDS", "HTPASSWD_SERVICE_BCRYPT_ROUNDS"):
        rounds = getattr(settings, name)
        if not 4 <= rounds <= 31:
            problems.append(
                Error(
                    f"{name}={rounds} is outside bcrypt's range.",
                    hint=f"Set {name} to a cost between 4 and 31 (10 is a good default for people).",
                    id="oyster.E010",
                )
            )
    directory = os.path.dirname(os.path.abspath(settings.HTPASSWD_PATH))
    if not os.path.isdir(directory):
        problems.append(
            Warning(
                f"The directory of HTPASSWD_PATH ({directory}) does not exist.",
                hint="Set HTPASSWD_PATH to the htpasswd file the registry reads "
                "(REGISTRY_AUTH_HTPASSWD_PATH), on a volume both can reach.",
                id="oyster.W010",
            )
        )
    if settings.HTPASSWD_MIN_PASSWORD_LENGTH < 1 or settings.HTPASSWD_MIN_PASSWORD_LENGTH > 72:
        problems.append(
            Error(
                "HTPASSWD_MIN_PASSWORD_LENGTH must be between 1 and 72.",
                hint="Set HTPASSWD_MIN_PASSWORD_LENGTH, e.g. 12.",
                id="oyster.E011",
            )
        )
    return problems


@register()
def check_notification_settings(app_configs, **kwargs):
    if settings.NOTIFICATIONS_TOKEN:
        if len(settings.NOTIFICATIONS_TOKEN) < 16:
            return [
                Warning(
                    "NOTIFICATIONS_TOKEN is shorter than 16 characters.",
                    hint="Set NOTIFICATIONS_TOKEN to a long random string.",
                    id="oyster.W021",
                )
            ]
        return []
    return [
        Warning(
            "NOTIFICATIONS_TOKEN is empty: every registry notification will be refused (401).",
            hint="Set NOTIFICATIONS_TOKEN to a long random string and give the registry the same "
            "value (see `python manage.py registry_config`).",
            id="oyster.W020",
        )
    ]


@register()
def check_storage_settings(app_configs, **kwargs):
    # The rules live in storage.settings_problems(); this only words them as checks. A
    # filesystem root that is missing at startup is left to the storage page.
    found = dict(storage.settings_problems())
    if "backend" in found:
        return [
            Error(
                f"STORAGE_BACKEND={settings.STORAGE_BACKEND!r} is not a known storage backend.",
                hint="Set STORAGE_BACKEND to 'filesystem' or 'azure'.",
                id="oyster.E030",
            )
        ]
    problems = []
    if "credentials" in found:
        problems.append(
            Error(
                "STORAGE_BACKEND is 'azure' but its credentials cannot work: "
                + found["credentials"],
                hint="Set AZURE_STORAGE_CREDENTIAL=default with AZURE_STORAGE_ACCOUNT_NAME "
                "(a managed identity), or AZURE_STORAGE_CONNECTION_STRING, or "
                "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (the registry's "
                "REGISTRY_STORAGE_AZURE_* also work).",
                id="oyster.E031",
            )
        )
    if "container" in found:
        problems.append(
            Error(
                "STORAGE_BACKEND is 'azure' but AZURE_STORAGE_CONTAINER is empty.",
                hint="Set AZURE_STORAGE_CONTAINER to the registry's blob container.",
                id="oyster.E032",
            )
        )
    return problems


@register()
def check_proxy_settings(app_configs, **kwargs):
    problems = []
    if settings.PROXY_COUNT < 0:
        problems.append(
            Error(
                "PROXY_COUNT cannot be negative.",
                hint="Set it to the number of proxies in front of the portal (0 for none).",
                id="oyster.E040",
            )
        )
    if (
        settings.PROXY_COUNT > 0
        and settings.SECURE_SSL_REDIRECT
        and not settings.SECURE_PROXY_SSL_HEADER
    ):
        problems.append(
            Warning(
                "PROXY_COUNT says a proxy is in front, SECURE_SSL_REDIRECT is on and "
                "TRUST_X_FORWARDED_PROTO is off: if the proxy ends TLS, every request is "
                "redirected to HTTPS for ever.",
                hint="Set TRUST_X_FORWARDED_PROTO=1 when the proxy ends TLS and every request "
                "passes it (Azure App Service: yes).",
                id="oyster.W040",
            )
        )
    return problems


@register()
def check_token_settings(app_configs, **kwargs):
    problems = []
    if settings.REGISTRY_AUTH_MODE not in ("htpasswd", "token"):
        problems.append(
            Error(
                f"REGISTRY_AUTH_MODE={settings.REGISTRY_AUTH_MODE[:40]!r} is neither htpasswd "
                "nor token.",
                hint="Set REGISTRY_AUTH_MODE=htpasswd (the registry checks the htpasswd file) or "
                "token (the portal issues the registry's tokens).",
                id="oyster.E050",
            )
        )
    if not 30 <= settings.TOKEN_LIFETIME <= 86400:
        problems.append(
            Error(
                f"TOKEN_LIFETIME={settings.TOKEN_LIFETIME} is outside 30 to 86400 seconds.",
                hint="Set TOKEN_LIFETIME to a few minutes, e.g. 300.",
                id="oyster.E051",
            )
        )
    if not 1 <= settings.TOKEN_MAX_SCOPES <= 1000:
        problems.append(
            Error(
                "TOKEN_MAX_SCOPES must be between 1 and 1000.",
                hint="Set TOKEN_MAX_SCOPES, e.g. 32.",
                id="oyster.E052",
            )
        )
    return problems


@register()
def check_metrics_settings(app_configs, **kwargs):
    problems = []
    for entry in settings.METRICS_ALLOWED_ADDRESSES:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            problems.append(
                Error(
                    f"METRICS_ALLOWED_ADDRESSES has {entry[:60]!r}, which is not an address or "
                    "network.",
                    hint="Write addresses or networks separated by commas, e.g. "
                    "127.0.0.1,::1,10.0.0.0/8.",
                    id="oyster.E060",
                )
            )
    if settings.METRICS_TOKEN and len(settings.METRICS_TOKEN) < 16:
        problems.append(
            Warning(
                "METRICS_TOKEN is shorter than 16 characters: it could be guessed.",
                hint="Set METRICS_TOKEN to a long random string, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.",
                id="oyster.W060",
            )
        )
    if not 0 < settings.METRICS_REGISTRY_TIMEOUT <= 30:
        problems.append(
            Error(
                "METRICS_REGISTRY_TIMEOUT must be more than 0 and at most 30 seconds.",
                hint="Set METRICS_REGISTRY_TIMEOUT, e.g. 1.",
                id="oyster.E061",
            )
        )
    if not 0 <= settings.METRICS_TOP_REPOSITORIES <= 1000:
        problems.append(
            Error(
                "METRICS_TOP_REPOSITORIES must be between 0 and 1000.",
                hint="Set METRICS_TOP_REPOSITORIES, e.g. 10 (0: none one by one).",
                id="oyster.E062",
            )
        )
    return problems


def _loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@register()
def check_sign_in_settings(app_configs, **kwargs):
    problems = []
    if settings.OIDC_ISSUER:
        url = urlsplit(settings.OIDC_ISSUER)
        # Plain HTTP only to a provider on this machine (a test or a local Keycloak): elsewhere
        # the discovery document, and so the keys that vouch for every sign-in, could be swapped.
        if not (url.scheme == "https" or (url.scheme == "http" and _loopback(url.hostname or ""))):
            problems.append(
                Error(
                    f"OIDC_ISSUER={settings.OIDC_ISSUER[:200]!r} is not an https URL.",
                    hint="Set OIDC_ISSUER to the provider's issuer, e.g. "
                    "https://login.microsoftonline.com/<tenant-id>/v2.0 (README: Signing in).",
                    id="oyster.E070",
                )
            )
        if not settings.OIDC_CLIENT_ID or not settings.OIDC_CLIENT_SECRET:
            problems.append(
                Error(
                    "OIDC_ISSUER is set but OIDC_CLIENT_ID or OIDC_CLIENT_SECRET is empty.",
                    hint="Register Oyster as a web application at the provider (redirect URI "
                    "https://<portal>/login/oidc/callback/) and set both from it.",
                    id="oyster.E071",
                )
            )
        if "openid" not in settings.OIDC_SCOPES.split():
            problems.append(
                Error(
                    f"OIDC_SCOPES={settings.OIDC_SCOPES[:200]!r} lacks `openid`.",
                    hint="Set OIDC_SCOPES to `openid profile email` plus what the role claim "
                    "needs (Keycloak, GitLab: groups).",
                    id="oyster.E072",
                )
            )
    if (settings.OIDC_ISSUER or settings.APP_SERVICE_AUTH) and not settings.OIDC_ROLE_MAP:
        problems.append(
            Error(
                "OIDC_ROLE_MAP is empty: every sign-in through the directory would be refused.",
                hint="Set OIDC_ROLE_MAP to `claim-value=role` pairs, e.g. "
                "oyster-admins=admin,oyster-readers=viewer (values as the provider sends them).",
                id="oyster.E073",
            )
        )
    if settings.APP_SERVICE_AUTH and settings.PROXY_COUNT < 1:
        problems.append(
            Error(
                "APP_SERVICE_AUTH is on but PROXY_COUNT is 0: any client could send "
                "X-MS-CLIENT-PRINCIPAL and be whoever it claims.",
                hint="Set PROXY_COUNT=1 on App Service (its front end is the proxy), and only "
                "where that front end is the only way to reach the portal.",
                id="oyster.E074",
            )
        )
    if not settings.LOCAL_LOGIN:
        if not settings.LOCAL_LOGIN_BREAK_GLASS:
            problems.append(
                Warning(
                    "LOCAL_LOGIN is off and no break-glass admin is named: when the identity "
                    "provider is down, nobody can sign in.",
                    hint="Set LOCAL_LOGIN_BREAK_GLASS to the user name of a portal admin with a "
                    "password kept in a safe place.",
                    id="oyster.W070",
                )
            )
        if not settings.OIDC_ISSUER and not settings.APP_SERVICE_AUTH:
            problems.append(
                Error(
                    "LOCAL_LOGIN is off but neither OIDC_ISSUER nor APP_SERVICE_AUTH is set: "
                    "only the break-glass admin could sign in.",
                    hint="Set up a way to sign in with the organisation's identity "
                    "(README: Signing in), or set LOCAL_LOGIN=1.",
                    id="oyster.E075",
                )
            )
    return problems
