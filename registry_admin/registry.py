"""The registry HTTP API v2 client: the only code that speaks HTTP to the registry.

Reference: https://distribution.github.io/distribution/spec/api/

Every call has a connect and a read timeout from settings; every transport failure becomes a
`RegistryError` subclass whose message a user can read. Nothing here logs credentials.
"""

import logging
import threading
from dataclasses import dataclass

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util.retry import Retry

logger = logging.getLogger(__name__)

API_VERSION_HEADER = "Docker-Distribution-API-Version"


class RegistryError(Exception):
    """A registry call failed; str(error) is a sentence for the page."""


class RegistryUnreachable(RegistryError):
    pass


class RegistryTimeout(RegistryUnreachable):
    pass


class RegistryUnauthorized(RegistryError):
    pass


class RegistryNotFound(RegistryError):
    pass


class RegistryDeleteUnsupported(RegistryError):
    pass


@dataclass(frozen=True)
class PingResult:
    """What `GET /v2/` said: state is 'reachable', 'unauthorized' or 'unreachable'."""

    state: str
    api_version: str = ""
    detail: str = ""
    status_code: int | None = None


class RegistryClient:
    """One pooled `requests.Session` per client; build it with `get_client()`."""

    def __init__(
        self,
        base_url,
        username="",
        password="",
        timeout=10.0,
        connect_timeout=3.05,
        verify=True,
        retries=2,
        pool_size=16,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, timeout)
        self.session = requests.Session()
        if username:
            self.session.auth = (username, password)
        self.session.verify = verify
        self.session.headers["User-Agent"] = "oyster-portal"
        # Retries only for idempotent methods, only on connection trouble and 502/503/504.
        retry = Retry(
            total=retries,
            connect=retries,
            read=0,
            status=retries,
            backoff_factor=0.2,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def url(self, path):
        return f"{self.base_url}{path}"

    def request(self, method, path, **kwargs):
        """Send one request; transport failures raise RegistryUnreachable/RegistryTimeout."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("allow_redirects", True)
        try:
            return self.session.request(method, self.url(path), **kwargs)
        except requests.exceptions.RequestException as exc:
            raise self._translate(method, path, exc) from exc

    def _translate(self, method, path, exc):
        """The RegistryError for a requests exception (retries wrap timeouts in ConnectionError)."""
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(exc, requests.exceptions.Timeout) or (
            isinstance(reason, urllib3_exceptions.TimeoutError)
            # urllib3 2 makes a refused connection a subclass of ConnectTimeoutError.
            and not isinstance(reason, urllib3_exceptions.NewConnectionError)
        ):
            logger.warning("registry %s %s timed out: %s", method, path, exc)
            return RegistryTimeout(
                f"The registry at {self.base_url} did not answer within {self.timeout[1]:g} seconds."
            )
        if isinstance(exc, requests.exceptions.SSLError):
            logger.warning("registry %s %s TLS failure: %s", method, path, exc)
            return RegistryUnreachable(
                f"TLS verification failed for {self.base_url}: set REGISTRY_CA_BUNDLE to the "
                "registry's CA, or REGISTRY_VERIFY_TLS=0 on a trusted network."
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            logger.warning("registry %s %s connection failed: %s", method, path, exc)
            return RegistryUnreachable(
                f"The registry at {self.base_url} is unreachable ({_reason(exc)})."
            )
        logger.warning("registry %s %s failed: %s", method, path, exc)
        return RegistryUnreachable(f"The request to the registry failed ({_reason(exc)}).")

    def ping(self):
        """`GET /v2/` with the service account; never raises."""
        try:
            response = self.request("GET", "/v2/")
        except RegistryError as exc:
            return PingResult(state="unreachable", detail=str(exc))
        api_version = response.headers.get(API_VERSION_HEADER, "")
        if response.status_code == 200:
            return PingResult(state="reachable", api_version=api_version, status_code=200)
        if response.status_code == 401:
            return PingResult(
                state="unauthorized",
                api_version=api_version,
                status_code=401,
                detail="The registry rejected the portal's credentials: check REGISTRY_USERNAME "
                "and REGISTRY_PASSWORD against the htpasswd file.",
            )
        return PingResult(
            state="unreachable",
            api_version=api_version,
            status_code=response.status_code,
            detail=f"The registry answered HTTP {response.status_code} to GET /v2/"
            + (f": {_error_text(response)}" if _error_text(response) else "."),
        )


def _reason(exc):
    """A short, credential-free reason from a requests exception."""
    text = str(exc.__context__ or exc) if exc.args else exc.__class__.__name__
    for marker in ("Connection refused", "Name or service not known", "No route to host"):
        if marker in str(exc):
            return marker.lower()
    return text[:200]


def _error_text(response):
    """The first error message of a registry error body, if it has one."""
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return ""
    if errors and isinstance(errors[0], dict):
        return str(errors[0].get("message") or errors[0].get("code") or "")[:200]
    return ""


_local = threading.local()


def get_client():
    """The client for the configured registry, one per thread (sessions are not thread-safe)."""
    key = (
        settings.REGISTRY_URL,
        settings.REGISTRY_USERNAME,
        settings.REGISTRY_PASSWORD,
        settings.REGISTRY_TIMEOUT,
        settings.REGISTRY_CONNECT_TIMEOUT,
        settings.REGISTRY_VERIFY_TLS,
        settings.REGISTRY_CA_BUNDLE,
    )
    client = getattr(_local, "client", None)
    if client is None or getattr(_local, "key", None) != key:
        verify = settings.REGISTRY_CA_BUNDLE or settings.REGISTRY_VERIFY_TLS
        client = RegistryClient(
            settings.REGISTRY_URL,
            settings.REGISTRY_USERNAME,
            settings.REGISTRY_PASSWORD,
            timeout=settings.REGISTRY_TIMEOUT,
            connect_timeout=settings.REGISTRY_CONNECT_TIMEOUT,
            verify=verify,
        )
        _local.client, _local.key = client, key
    return client
