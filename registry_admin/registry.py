"""The registry HTTP API v2 client: the only code that speaks HTTP to the registry.

Reference: https://distribution.github.io/distribution/spec/api/

Every call has a connect and a read timeout from settings; every transport failure becomes a
`RegistryError` subclass whose message a user can read. Nothing here logs credentials.
"""

import base64
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth
from urllib3 import exceptions as urllib3_exceptions
from urllib3.util.retry import Retry

from . import tokens
from .references import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    is_valid_digest,
    is_valid_reference,
    is_valid_repository,
    is_valid_tag,
)

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


class RegistryTagMoved(RegistryError):
    """The tag points at another digest than the one the user confirmed; nothing changed."""


class RegistryDeleteIncomplete(RegistryError):
    """A tag delete stopped halfway; the message names the state, and retrying finishes it."""


# All four in every manifest request: without the OCI types 2.8 answers 404 for an OCI manifest,
# without the Docker types it rewrites a schema2 manifest to schema1 (with another digest).
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
# The registry refuses `_catalog?n=` above 1000 (400 PAGINATION_NUMBER_INVALID).
CATALOG_PAGE_SIZE = 1000
# distribution 3.1's default `tags.maxtags`: a page size every 3.x release accepts by default.
TAGS_PAGE_SIZE = 1000
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class ManifestRef:
    """What a manifest HEAD says: the registry's digest, the stored media type, the length."""

    digest: str
    media_type: str
    size: int | None


@dataclass(frozen=True)
class ManifestDocument:
    """A fetched manifest: the exact bytes (their sha256 is `digest`) and the parsed JSON."""

    digest: str
    media_type: str
    raw: bytes
    data: dict

    @property
    def is_index(self):
        return self.media_type in INDEX_MEDIA_TYPES or "manifests" in self.data


@dataclass(frozen=True)
class TagDeletion:
    """A deleted tag: the image digest it pointed at, and how it went.

    `method` is "untag" (the registry deleted the tag itself) or "placeholder" (re-pointed at
    `placeholder_digest`, which was then deleted).
    """

    repository: str
    tag: str
    digest: str
    method: str
    placeholder_digest: str = ""


@dataclass(frozen=True)
class PingResult:
    """What `GET /v2/` said: state is 'reachable', 'unauthorized' or 'unreachable'."""

    state: str
    api_version: str = ""
    detail: str = ""
    status_code: int | None = None


def _origin(url):
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class _SameOriginSession(requests.Session):
    """A session that follows redirects only on the registry's own scheme, host and port.

    A registry answer that points elsewhere would make the portal a blind request-forger inside
    its network (and, with a token realm, a credential courier); it ends the request instead.
    """

    origin = None

    def get_redirect_target(self, resp):
        target = super().get_redirect_target(resp)
        if target and self.origin and _origin(urljoin(resp.url, target)) != self.origin:
            host = urlsplit(urljoin(resp.url, target)).netloc[:80]
            logger.warning("registry redirected %s to another host; not followed", resp.url)
            raise RegistryError(
                f"The registry redirected a request to another host ({host}); the portal follows "
                "redirects only on the registry's own address. If the registry redirects blob "
                "downloads to its storage, turn that off for the portal (storage.redirect.disable)."
            )
        return target


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
        token_hosts=(),
        token_minter=None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout, timeout)
        # Host names besides the registry's own that may receive the service account's
        # credentials as a token realm (REGISTRY_TOKEN_REALM_HOSTS).
        self.token_hosts = frozenset(h.strip().lower() for h in token_hosts if h.strip())
        # When the portal is the registry's token server: `token_minter(service, scopes)` signs
        # a token in this process ((token, lifetime), or None for a service it does not serve),
        # so the service account's password never travels, not even to the portal itself.
        self.token_minter = token_minter
        self.session = _SameOriginSession()
        self.session.origin = _origin(self.base_url)
        # Proxy variables are read once here: with trust_env on, requests re-reads the whole
        # environment on every call (about 1 ms each, a third of a manifest HEAD's client cost).
        self.session.proxies = requests.utils.get_environ_proxies(self.base_url)
        self.session.trust_env = False
        self.session.auth = RegistryAuth(self, username, password)
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

    def check_response(self, response, what):
        """Return `response` when it is a success; otherwise raise the matching RegistryError.

        `what` names the object for the message ("manifest team/app:v1").
        """
        status = response.status_code
        if status < 400:
            return response
        detail = _error_text(response)
        suffix = f": {detail}" if detail else "."
        method = response.request.method if response.request is not None else ""
        logger.warning("registry %s %s answered %s", method, _path_of(response.url), status)
        if status == 401:
            error = RegistryUnauthorized(
                "The registry rejected the portal's credentials: check REGISTRY_USERNAME and "
                "REGISTRY_PASSWORD."
            )
        elif status == 403:
            error = RegistryUnauthorized(f"The registry denied access to {what}{suffix}")
        elif status == 404:
            error = RegistryNotFound(f"The registry has no {what}{suffix}")
        elif status == 405 and method == "DELETE":
            error = RegistryDeleteUnsupported(
                "The registry does not allow deletes: set storage.delete.enabled to true in "
                "its configuration."
            )
        elif status == 429:
            error = RegistryError(f"The registry is rate-limiting the portal ({what}).")
        else:
            error = RegistryError(f"The registry answered HTTP {status} to {method} {what}{suffix}")
        raise error

    def catalog_pages(self, page_size=CATALOG_PAGE_SIZE):
        """Yield the catalog one page (a list of repository names) at a time, following `Link`.

        https://distribution.github.io/distribution/spec/api/#catalog
        """
        page_size = max(1, min(int(page_size), CATALOG_PAGE_SIZE))
        path = f"/v2/_catalog?n={page_size}"
        seen_paths = set()
        while path and path not in seen_paths:
            seen_paths.add(path)
            response = self.check_response(self.request("GET", path), "catalog")
            names = _json_object(response, "catalog").get("repositories") or []
            yield [name for name in names if isinstance(name, str)]
            path = self._next_catalog_path(response)

    def _next_catalog_path(self, response):
        target = (response.links.get("next") or {}).get("url")
        if not target:
            return None
        parts = urlsplit(urljoin(self.base_url + "/v2/_catalog", target))
        # Only ever follow the catalog on this registry, whatever the header says.
        if not parts.path.endswith("/v2/_catalog"):
            return None
        return f"/v2/_catalog?{parts.query}" if parts.query else None

    def list_repositories(self, page_size=CATALOG_PAGE_SIZE):
        """Every repository name in the catalog, in the registry's order."""
        names = []
        for page in self.catalog_pages(page_size):
            names.extend(page)
        return names

    def list_tags(self, repository, page_size=TAGS_PAGE_SIZE):
        """The repository's tags, every page; [] when it has none.

        2.8 ignores `n` and `last` and answers everything, unsorted. 3.x pages: it sends `Link`
        whenever a page is full, may cap `n` at its `tags.maxtags` (3.1.1) or refuse a larger
        one with 400 PAGINATION_NUMBER_INVALID (3.1.0), and ends with `{"tags": null}` after a
        full last page. So ask for `page_size`, follow `Link` whatever size the registry chose,
        and on that 400 ask once without `n` (every 3.x version then answers everything).
        Recorded from the source: tests/distribution3/README.md.
        """
        _require_name(repository)
        what = f"repository {repository}"
        base = f"/v2/{repository}/tags/list"
        path = f"{base}?n={max(1, int(page_size))}"
        tags, seen_tags, seen_paths = [], set(), set()
        while path and path not in seen_paths:
            seen_paths.add(path)
            response = self.request("GET", path)
            if (
                response.status_code == 400
                and _error_code(response) == "PAGINATION_NUMBER_INVALID"
                and len(seen_paths) == 1
            ):
                path = base
                continue
            self.check_response(response, what)
            page = _json_object(response, f"tags of {repository}").get("tags") or []
            for tag in page:
                if isinstance(tag, str) and tag not in seen_tags:
                    seen_tags.add(tag)
                    tags.append(tag)
            path = self._next_page_path(response, base)
        return tags

    def _next_page_path(self, response, base):
        """The `Link: <…>; rel="next"` target when it stays on `base` of this registry."""
        target = (response.links.get("next") or {}).get("url")
        if not target:
            return None
        parts, ours = (
            urlsplit(urljoin(self.base_url + base, target)),
            urlsplit(self.base_url + base),
        )
        if (parts.scheme, parts.netloc, parts.path) != (ours.scheme, ours.netloc, ours.path):
            return None
        return f"{base}?{parts.query}" if parts.query else None

    def head_manifest(self, repository, reference):
        """The digest, media type and length of `repository:reference` without its body."""
        response, _ = self._manifest_request("HEAD", repository, reference)
        digest = response.headers.get("Docker-Content-Digest", "")
        if not is_valid_digest(digest):
            # Some proxies drop the header on HEAD: the body's hash is the truth then.
            document = self.get_manifest(repository, reference)
            return ManifestRef(document.digest, document.media_type, len(document.raw))
        length = response.headers.get("Content-Length")
        return ManifestRef(
            digest=digest,
            media_type=_media_type(response),
            size=int(length) if length and length.isdigit() else None,
        )

    def get_manifest(self, repository, reference):
        """Fetch a manifest; its digest is checked against the bytes (and the reference)."""
        response, what = self._manifest_request("GET", repository, reference, stream=True)
        raw = self._read_capped(response, MAX_MANIFEST_BYTES, what)
        computed = "sha256:" + hashlib.sha256(raw).hexdigest()
        header = response.headers.get("Docker-Content-Digest", "")
        expected = reference if is_valid_digest(reference) else header
        if expected.startswith("sha256:") and expected != computed:
            raise RegistryError(
                f"The registry sent a {what} whose content does not match {expected}."
            )
        data = _json_loads(raw, what)
        media_type = _media_type(response) or str(data.get("mediaType") or "")
        return ManifestDocument(digest=computed, media_type=media_type, raw=raw, data=data)

    def _manifest_request(self, method, repository, reference, **kwargs):
        """(checked response, "manifest REPO:REF") for a HEAD or GET of one manifest."""
        _require_name(repository, reference)
        what = f"manifest {_ref_text(repository, reference)}"
        response = self.request(
            method,
            f"/v2/{repository}/manifests/{reference}",
            headers={"Accept": MANIFEST_ACCEPT},
            **kwargs,
        )
        return self.check_response(response, what), what

    def put_manifest(self, repository, reference, raw, media_type):
        """PUT `raw` as the manifest `repository:reference` (a tag or its own digest) with its
        media type; returns the digest the registry answered, which is sha256(raw) when the
        registry stored the bytes as sent. Raises RegistryNotFound when the registry is missing
        a blob or child manifest it references (MANIFEST_BLOB_UNKNOWN, MANIFEST_UNKNOWN) and
        RegistryError otherwise. https://distribution.github.io/distribution/spec/api/#put-manifest
        """
        _require_name(repository, reference)
        ref = _ref_text(repository, reference)
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            data=raw,
            headers={"Content-Type": media_type},
        )
        if response.status_code == 201:
            return response.headers.get("Docker-Content-Digest", "")
        detail = _error_text(response) or f"HTTP {response.status_code}"
        if response.status_code == 400 and _error_code(response) in (
            "MANIFEST_BLOB_UNKNOWN",
            "BLOB_UNKNOWN",
            "MANIFEST_UNKNOWN",
        ):
            raise RegistryNotFound(f"The registry refused the manifest {ref}: {detail}.")
        self.check_response(response, f"manifest {ref}")
        raise RegistryError(f"The registry refused the manifest {ref}: {detail}.")

    def blob_exists(self, repository, digest):
        """True when `repository` links the blob `digest` and its data is stored (HEAD)."""
        _require_name(repository, digest)
        if not is_valid_digest(digest):
            raise RegistryNotFound(f"{digest[:80]!r} is not a digest.")
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if response.status_code == 404:
            return False
        self.check_response(response, f"blob {repository}@{digest}")
        return True

    def mount_blob(self, repository, digest, source):
        """Link blob `digest` into `repository` from `source`, which links it (a
        cross-repository mount: `POST /v2/<repository>/blobs/uploads/?mount=&from=`). True when
        the registry linked it (201); False when it started an upload instead (202: `source` has
        no such blob), which is cancelled. https://distribution.github.io/distribution/spec/api/
        """
        _require_name(repository, digest)
        _require_name(source)
        if not is_valid_digest(digest):
            raise RegistryNotFound(f"{digest[:80]!r} is not a digest.")
        what = f"blob mount of {digest} from {source} into {repository}"
        response = self.request(
            "POST", f"/v2/{repository}/blobs/uploads/?mount={digest}&from={source}"
        )
        if response.status_code == 201:
            return True
        self.check_response(response, what)
        location = urlsplit(urljoin(self.base_url + "/", response.headers.get("Location", "")))
        base_path = urlsplit(self.base_url).path
        path = location.path[len(base_path) :] if base_path else location.path
        if path.startswith(f"/v2/{repository}/blobs/uploads/"):
            # The upload the registry opened instead: nothing to keep in it.
            with contextlib.suppress(RegistryError):
                query = f"?{location.query}" if location.query else ""
                self.request("DELETE", f"{path}{query}")
        return False

    def get_config(self, repository, digest):
        """An image config blob (JSON) by digest, checked against the digest."""
        _require_name(repository, digest)
        if not is_valid_digest(digest):
            raise RegistryError(f"{digest[:80]!r} is not a digest.")
        what = f"config blob {repository}@{digest}"
        response = self.check_response(
            self.request("GET", f"/v2/{repository}/blobs/{digest}", stream=True), what
        )
        raw = self._read_capped(response, MAX_CONFIG_BYTES, what)
        if digest.startswith("sha256:") and "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise RegistryError(f"The registry sent a {what} whose content does not match.")
        return _json_loads(raw, what)

    def _read_capped(self, response, limit, what):
        try:
            chunks, size = [], 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise RegistryError(f"The {what} is larger than {limit // 1024 // 1024} MB.")
                chunks.append(chunk)
            return b"".join(chunks)
        except requests.exceptions.RequestException as exc:
            raise self._translate("GET", what, exc) from exc
        finally:
            response.close()

    def ping(self, timeout=None):
        """`GET /v2/` with the service account; never raises. `timeout` (seconds, for the
        connection and the answer alike) replaces the client's own when given."""
        options = {"timeout": (timeout, timeout)} if timeout else {}
        try:
            response = self.request("GET", "/v2/", **options)
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

    # --- Deleting tags and images ----------------------------------------------------------
    # https://distribution.github.io/distribution/spec/api/#deleting-an-image
    # 2.8 deletes manifests, never tags: `DELETE /manifests/<digest>` drops every tag on that
    # digest. One tag alone goes by re-pointing it at a unique placeholder manifest and deleting
    # the placeholder (measured on 2.8.2; registry_admin/tests/test_registry_deletes.py runs it).

    PLACEHOLDER_ANNOTATION = "io.oyster.placeholder"
    PLACEHOLDER_REPLACES_ANNOTATION = "io.oyster.placeholder.replaces"
    DELETES_DISABLED_MESSAGE = (
        "The registry refuses deletes (405 UNSUPPORTED): its storage.delete.enabled setting is "
        "off. Set REGISTRY_STORAGE_DELETE_ENABLED=true in the registry's environment (or "
        "`storage: {delete: {enabled: true}}` in its config.yml) and restart it. Nothing was "
        "changed."
    )
    # A digest no repository holds: deleting it answers 404 when deletes work, 405 when off.
    # The write check's tag: never created (its manifest is empty), named so a log reader knows.
    _WRITE_CHECK_TAG = "oyster-write-check"
    _PROBE_DIGEST = "sha256:" + hashlib.sha256(b"oyster: are deletes enabled?").hexdigest()

    def delete_tag(self, repository, tag, expected_digest=None, placeholders=None):
        """Remove `repository:tag` and nothing else; its image and other tags stay.

        `placeholders` is where the portal records the placeholders it pushes:
        `lookup(repository, digest)` returns the image digest a recorded placeholder replaced
        (None when the portal never pushed it) and `record(repository, tag, digest, replaces)`
        is called before the tag is re-pointed. Without it no leftover is ever recognised: a
        manifest's own annotations can be forged by anyone with push rights.

        Returns a TagDeletion. Raises RegistryNotFound (no such tag), RegistryTagMoved (the tag
        no longer points at `expected_digest`), RegistryDeleteUnsupported (deletes are off) —
        in those three cases nothing changed — or RegistryDeleteIncomplete, whose message says
        which placeholder the tag points at now; calling delete_tag again finishes the job.
        Any other RegistryError means nothing changed.
        """
        _require_name(repository, tag)
        if not is_valid_tag(tag):
            raise RegistryNotFound(f"{tag[:80]!r} is not a tag.")
        ref = f"{repository}:{tag}"
        current = self.get_manifest(repository, tag)
        replaced = placeholders.lookup(repository, current.digest) if placeholders else None
        if replaced is not None:
            # An earlier attempt stopped after re-pointing the tag: finish it.
            self._check_deletes_enabled(repository)
            self._delete_placeholder(repository, tag, current.digest, replaced)
            return TagDeletion(repository, tag, replaced, "placeholder", current.digest)
        if expected_digest and current.digest != expected_digest:
            raise RegistryTagMoved(
                f"{ref} now points at {current.digest}, not {expected_digest}: it was pushed "
                "again since the page was shown. Nothing was deleted."
            )
        if self._untag(repository, tag):
            return TagDeletion(repository, tag, current.digest, "untag", "")
        self._check_deletes_enabled(repository)
        body = self._placeholder_manifest(repository, tag, current)
        placeholder_digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if placeholders:
            placeholders.record(repository, tag, placeholder_digest, current.digest)
        try:
            response = self.request(
                "PUT",
                f"/v2/{repository}/manifests/{tag}",
                data=body,
                headers={"Content-Type": OCI_MANIFEST},
            )
        except RegistryError as exc:
            # The PUT may have reached the registry before the connection failed.
            raise RegistryDeleteIncomplete(
                f"{exc} While re-pointing {ref} at placeholder {placeholder_digest}: the tag "
                f"points either at its image {current.digest} (unchanged) or at that "
                "placeholder. Retry the delete to finish."
            ) from exc
        if response.status_code >= 300:
            detail = _error_text(response)
            raise RegistryError(
                f"The registry answered HTTP {response.status_code} to re-pointing {ref} at a "
                f"placeholder{': ' + detail if detail else ''}. Nothing was changed: {ref} "
                f"still points at {current.digest}."
            )
        self._delete_placeholder(repository, tag, placeholder_digest, current.digest)
        return TagDeletion(repository, tag, current.digest, "placeholder", placeholder_digest)

    def delete_image(self, repository, digest):
        """Delete the manifest `digest` from `repository`, and with it every tag pointing at it.

        Raises RegistryNotFound, RegistryDeleteUnsupported (nothing changed) or RegistryError.
        """
        _require_name(repository, digest)
        if not is_valid_digest(digest):
            raise RegistryNotFound(f"{digest[:80]!r} is not a digest.")
        ref = f"{repository}@{digest}"
        try:
            response = self.request("DELETE", f"/v2/{repository}/manifests/{digest}")
        except RegistryError as exc:
            raise RegistryError(
                f"{exc} The delete of {ref} may or may not have happened: reload its tags."
            ) from exc
        if response.status_code in (200, 202):
            return
        if self._is_unsupported(response):
            raise RegistryDeleteUnsupported(self.DELETES_DISABLED_MESSAGE)
        self.check_response(response, f"image {ref}")
        raise RegistryError(f"The registry answered HTTP {response.status_code} to deleting {ref}.")

    def forget_blob(self, repository, digest):
        """`DELETE /v2/<repository>/blobs/<digest>`: the registry drops its cached descriptor of
        the blob in that repository and its link (gone already when the online collector asks).
        True when it had one, False on 404 (nothing cached, no link). Raises
        RegistryDeleteUnsupported or RegistryError."""
        _require_name(repository, digest)
        if not is_valid_digest(digest):
            raise RegistryNotFound(f"{digest[:80]!r} is not a digest.")
        response = self.request("DELETE", f"/v2/{repository}/blobs/{digest}")
        if response.status_code in (200, 202):
            return True
        if response.status_code == 404:
            return False
        if self._is_unsupported(response):
            raise RegistryDeleteUnsupported(self.DELETES_DISABLED_MESSAGE)
        self.check_response(response, f"blob {repository}@{digest}")
        raise RegistryError(
            f"The registry answered HTTP {response.status_code} to forgetting {repository}@{digest}."
        )

    def read_only_state(self, repository):
        """("read-only" | "writable" | "unreachable" | "unknown", detail): may GC run now?

        PUTs an empty manifest. 2.8.2 in `maintenance.readonly` mode answers 405 with
        `Allow: GET, HEAD` and a plain-text body (measured), as it does to every write; deletes
        being off answers writes normally, so only that exact answer counts as read-only. A
        writable registry refuses the empty body (400 MANIFEST_INVALID) and stores nothing.
        An upload session (the check's probe before) cannot be undone on 2.8.2: even a
        cancel carrying its `_state` leaves `_uploads/<uuid>/hashstates/` behind, which the
        registry's upload purging never removes (it has no `startedat`).
        """
        _require_name(repository)
        try:
            response = self.request(
                "PUT",
                f"/v2/{repository}/manifests/{self._WRITE_CHECK_TAG}",
                data=b"",
                headers={"Content-Type": OCI_MANIFEST},
            )
        except RegistryTimeout as exc:
            # A hung registry may still be writing: only a refused connection is "stopped".
            return "unknown", str(exc)
        except RegistryUnreachable as exc:
            return "unreachable", str(exc)
        allow = {m.strip().upper() for m in response.headers.get("Allow", "").split(",")}
        content_type = response.headers.get("Content-Type", "")
        if (
            response.status_code == 405
            and allow == {"GET", "HEAD"}
            and content_type.startswith("text/plain")
        ):
            return "read-only", "The registry refuses writes (maintenance.readonly is on)."
        if response.status_code == 400 and _error_code(response) == "MANIFEST_INVALID":
            return "writable", "The registry accepts writes: it is not in read-only mode."
        detail = _error_text(response) or f"HTTP {response.status_code}"
        return "unknown", f"The registry answered a write check with {detail}."

    def _untag(self, repository, tag):
        """`DELETE /manifests/<tag>`: True when the registry untagged it (distribution v3),
        False when it wants a digest (2.8's 400 DIGEST_INVALID)."""
        response = self.request("DELETE", f"/v2/{repository}/manifests/{tag}")
        if response.status_code in (200, 202):
            return True
        if self._is_unsupported(response):
            raise RegistryDeleteUnsupported(self.DELETES_DISABLED_MESSAGE)
        if response.status_code == 400 and _error_code(response) in ("DIGEST_INVALID", ""):
            return False
        self.check_response(response, f"tag {repository}:{tag}")
        raise RegistryError(
            f"The registry answered HTTP {response.status_code} to deleting {repository}:{tag}."
        )

    def _check_deletes_enabled(self, repository):
        # The placeholder PUT succeeds even with deletes off, so ask before changing anything.
        response = self.request("DELETE", f"/v2/{repository}/manifests/{self._PROBE_DIGEST}")
        if self._is_unsupported(response):
            raise RegistryDeleteUnsupported(self.DELETES_DISABLED_MESSAGE)
        if response.status_code == 404:
            return
        self.check_response(response, f"repository {repository}")
        raise RegistryError(
            f"The registry answered HTTP {response.status_code} to a delete check on "
            f"{repository}; nothing was changed."
        )

    @staticmethod
    def _is_unsupported(response):
        return response.status_code == 405 or _error_code(response) == "UNSUPPORTED"

    def _delete_placeholder(self, repository, tag, placeholder_digest, image_digest):
        ref = f"{repository}:{tag}"
        stuck = f"{ref} now points at placeholder {placeholder_digest}, which could not be deleted"
        kept = f"The image {image_digest} and its other tags are untouched." if image_digest else ""
        retry = "Retry the delete of this tag to finish."
        try:
            response = self.request("DELETE", f"/v2/{repository}/manifests/{placeholder_digest}")
        except RegistryError as exc:
            raise RegistryDeleteIncomplete(f"{stuck} ({exc}). {kept} {retry}") from exc
        # 404: gone already (a concurrent retry finished it).
        if response.status_code not in (200, 202, 404):
            detail = _error_text(response) or f"HTTP {response.status_code}"
            raise RegistryDeleteIncomplete(f"{stuck} ({detail}). {kept} {retry}")

    def _placeholder_manifest(self, repository, tag, current):
        """A unique OCI manifest with no layers, reusing a config blob the repository has."""
        annotations = {
            self.PLACEHOLDER_ANNOTATION: f"{uuid.uuid4()}",
            self.PLACEHOLDER_REPLACES_ANNOTATION: current.digest,
            "org.opencontainers.image.description": (
                f"Oyster placeholder while deleting the tag {tag}; deleted right away."
            ),
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self._placeholder_config(repository, current),
            "layers": [],
            "annotations": annotations,
        }
        return json.dumps(manifest, sort_keys=True).encode()

    def _placeholder_config(self, repository, current):
        config = _config_descriptor(current.data)
        if config is None and current.is_index:
            for child in current.data.get("manifests") or []:
                child_digest = child.get("digest") if isinstance(child, dict) else None
                if not is_valid_digest(child_digest):
                    continue
                try:
                    config = _config_descriptor(self.get_manifest(repository, child_digest).data)
                except RegistryNotFound:
                    continue
                if config is not None:
                    break
        if config is not None:
            return config
        # No config to borrow (a schema1 manifest, an index without local children).
        empty = b"{}"
        return {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": self._upload_blob(repository, empty),
            "size": len(empty),
        }

    def _upload_blob(self, repository, data):
        """Monolithic upload (POST, then PUT ?digest=); returns the blob's digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        what = f"blob upload to {repository}"
        start = self.check_response(self.request("POST", f"/v2/{repository}/blobs/uploads/"), what)
        location = start.headers.get("Location", "")
        parts = urlsplit(urljoin(self.base_url + "/", location))
        path = parts.path
        base_path = urlsplit(self.base_url).path
        # Follow only the upload path on this registry, whatever host the header names.
        if base_path and path.startswith(base_path + "/"):
            path = path[len(base_path) :]
        if not path.startswith(f"/v2/{repository}/blobs/uploads/"):
            raise RegistryError(f"The registry answered a {what} with an unexpected Location.")
        query = f"{parts.query}&" if parts.query else ""
        self.check_response(
            self.request(
                "PUT",
                f"{path}?{query}digest={digest}",
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            ),
            what,
        )
        return digest


class RegistryAuth(AuthBase):
    """Basic credentials, and bearer tokens once the registry challenges with `Bearer`.

    With htpasswd auth the basic header goes out with every request (no extra round trip).
    Behind a token server (https://distribution.github.io/distribution/spec/auth/token/) the
    first request per scope gets `401 WWW-Authenticate: Bearer realm=...,service=...,scope=...`;
    the token is fetched from the realm with the basic credentials, cached per scope until it
    expires, and the request is sent again once with it.
    """

    def __init__(self, client, username="", password=""):
        self.client = client
        self.basic = HTTPBasicAuth(username, password) if username else None
        # Built once: the header is the same for every request.
        credentials = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._basic_header = f"Basic {credentials}" if username else ""
        self.uses_tokens = False
        self._tokens = {}  # scope -> (token, monotonic expiry)

    def __call__(self, request):
        if self.uses_tokens:
            token = self._cached_token(_scope_for(request.method, request.path_url))
            if token:
                request.headers["Authorization"] = f"Bearer {token}"
        elif self.basic:
            request.headers["Authorization"] = self._basic_header
        request.register_hook("response", self._answer_challenge)
        return request

    def _cached_token(self, scope):
        token, expires = self._tokens.get(scope, (None, 0.0))
        return token if token and time.monotonic() < expires else None

    def _answer_challenge(self, response, **kwargs):
        if response.status_code != 401 or getattr(response.request, "oyster_retried", False):
            return response
        challenge = parse_bearer_challenge(response.headers.get("WWW-Authenticate", ""))
        if challenge is None:
            return response
        self.uses_tokens = True
        token = self._fetch_token(challenge)
        predicted = _scope_for(response.request.method, response.request.path_url)
        for scope in {predicted, challenge.get("scope", "")}:
            self._tokens[scope] = token
        response.content  # noqa: B018  (drain, so the connection can be reused)
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token[0]}"
        retry.oyster_retried = True
        again = response.connection.send(retry, **kwargs)
        again.history.append(response)
        again.request = retry
        return again

    def _fetch_token(self, challenge):
        """(token, monotonic expiry) from the challenge's realm; raises RegistryError."""
        if self.client.token_minter is not None:
            minted = self.client.token_minter(
                challenge.get("service", ""), challenge.get("scope", "").split()
            )
            if minted is not None:
                token, lifetime = minted
                return token, time.monotonic() + max(1, lifetime - 10)
        realm = challenge.get("realm", "")
        host = urlsplit(realm).netloc[:80] or realm[:80]
        if urlsplit(realm).scheme not in ("http", "https") or not urlsplit(realm).netloc:
            raise RegistryUnauthorized(
                f"The registry asked for a token from {realm[:80]!r}, which is not an HTTP URL."
            )
        self._check_realm(realm, host)
        params = [("service", challenge["service"])] if challenge.get("service") else []
        params += [("scope", scope) for scope in challenge.get("scope", "").split()]
        try:
            response = self.client.session.get(
                realm,
                params=params,
                auth=self.basic or _NO_AUTH,
                timeout=self.client.timeout,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            logger.warning("token server %s failed: %s", host, exc.__class__.__name__)
            raise RegistryUnreachable(
                f"The registry's token server at {host} is unreachable ({_reason(exc)})."
            ) from exc
        if response.status_code in (401, 403):
            raise RegistryUnauthorized(
                f"The registry's token server at {host} rejected the portal's credentials: "
                "check REGISTRY_USERNAME and REGISTRY_PASSWORD."
            )
        try:
            body = response.json() if response.status_code == 200 else {}
        except ValueError:
            body = {}
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(
                f"The registry's token server at {host} answered HTTP {response.status_code} "
                "without a token."
            )
        lifetime = body.get("expires_in")
        lifetime = lifetime if isinstance(lifetime, int) and lifetime > 0 else 60
        # Renew a little early so a token never expires between cache and registry.
        return token, time.monotonic() + max(1, lifetime - 10)

    def _check_realm(self, realm, host):
        """Refuse a realm the credentials must not travel to: the registry's answer names it,
        and whoever controls that answer (or sits between) would otherwise receive them."""
        scheme, hostname, _port = _origin(realm)
        registry_scheme, registry_host, _ = _origin(self.client.base_url)
        if hostname != registry_host and hostname not in self.client.token_hosts:
            logger.warning("token realm on another host refused: %s", host)
            raise RegistryUnauthorized(
                f"The registry asked for a token from another host ({host}); the portal sends "
                "its credentials only to the registry's own host. If that token server is "
                "yours, add its host name to REGISTRY_TOKEN_REALM_HOSTS."
            )
        if registry_scheme == "https" and scheme != "https":
            logger.warning("plain-HTTP token realm refused for an HTTPS registry: %s", host)
            raise RegistryUnauthorized(
                f"The registry asked for a token over plain HTTP ({host}) although it is served "
                "over HTTPS; the portal does not send its credentials unencrypted."
            )


class _NoAuth(AuthBase):
    """Keeps the session's RegistryAuth off a request (anonymous token fetches)."""

    def __call__(self, request):
        return request


_NO_AUTH = _NoAuth()

_CHALLENGE_PARAM_RE = re.compile(
    r'[\s,]*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))'
)


def parse_bearer_challenge(header):
    """The parameters of the `Bearer` challenge in a WWW-Authenticate value, or None.

    `Bearer realm="https://auth/token",service="registry",scope="repository:a/b:pull,push"`
    -> {"realm": ..., "service": ..., "scope": ...}. Commas inside quotes stay in the value;
    parameters end where another scheme (`, Basic realm=...`) starts.
    """
    start = re.search(r"(?:^|[\s,])Bearer(?:\s+|$)", header or "", flags=re.IGNORECASE)
    if not start:
        return None
    params, position = {}, start.end()
    while param := _CHALLENGE_PARAM_RE.match(header, position):
        name, quoted, bare = param.groups()
        params[name.lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        position = param.end()
    return params if params.get("realm") else None


def _scope_for(method, path_url):
    """The token scope a request needs, as the registry would ask for it."""
    path = path_url.split("?", 1)[0]
    if path.startswith("/v2/_catalog"):
        return "registry:catalog:*"
    match = re.match(r"/v2/(.+)/(?:manifests|blobs|tags)/", path)
    if not match:
        return ""
    actions = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "pull,push")
    return f"repository:{match.group(1)}:{actions}"


def _require_name(repository, reference=None):
    """Refuse a name the registry grammar does not allow before it becomes part of a URL."""
    if not is_valid_repository(repository):
        raise RegistryNotFound(f"{str(repository)[:80]!r} is not a valid repository name.")
    if reference is not None and not is_valid_reference(reference):
        raise RegistryNotFound(f"{str(reference)[:80]!r} is not a valid tag or digest.")


def _ref_text(repository, reference):
    separator = "@" if is_valid_digest(reference) else ":"
    return f"{repository}{separator}{reference}"


def _media_type(response):
    return response.headers.get("Content-Type", "").split(";", 1)[0].strip()


def _path_of(url):
    return urlsplit(url or "").path


def _json_loads(raw, what):
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise RegistryError(f"The registry sent a {what} that is not JSON.") from None
    if not isinstance(data, dict):
        raise RegistryError(f"The registry sent a {what} that is not a JSON object.")
    return data


def _json_object(response, what):
    return _json_loads(response.content, what)


def _error_code(response):
    """The first error code of a registry error body ("DIGEST_INVALID"), or ""."""
    try:
        errors = response.json().get("errors") or []
    except (ValueError, AttributeError):
        return ""
    if errors and isinstance(errors[0], dict):
        return str(errors[0].get("code") or "")
    return ""


def _config_descriptor(manifest):
    """The config descriptor of an image manifest, trimmed to its checked fields, or None."""
    config = manifest.get("config")
    if not isinstance(config, dict) or not is_valid_digest(config.get("digest")):
        return None
    size = config.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    media_type = config.get("mediaType")
    return {
        "mediaType": media_type
        if isinstance(media_type, str) and media_type
        else "application/vnd.oci.image.config.v1+json",
        "digest": config["digest"],
        "size": size,
    }


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
        tuple(settings.REGISTRY_TOKEN_REALM_HOSTS),
        settings.REGISTRY_AUTH_MODE,
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
            token_hosts=settings.REGISTRY_TOKEN_REALM_HOSTS,
            token_minter=tokens.mint_for_portal if settings.REGISTRY_AUTH_MODE == "token" else None,
        )
        _local.client, _local.key = client, key
    return client
