"""The registry's token server, signing side: the key, its certificate, scopes and the JWT.

Spec: https://distribution.github.io/distribution/spec/auth/token/ and .../spec/auth/jwt/.
The registry verifies every request's token with the public key alone, so the bcrypt check of
the password happens once per token here instead of once per registry request.

One header works on both registry lines: distribution 2.8 verifies the `x5c` chain against its
`rootcertbundle`; 3.x tries `x5c` first as well and, without it, looks the key up by `kid`, which
it computes as the RFC 7638 thumbprint of each certificate's key in the bundle (so a `kid` in
any other form is "signed by untrusted key" there).

The key is generated on first use into TOKEN_KEY_DIR (mode 0600, created with O_EXCL so two
processes starting at once agree on one key) with a self-signed certificate beside it: that
certificate is the whole chain and the whole bundle.
"""

import base64
import hashlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.conf import settings

from . import access
from .models.access import ACTIONS
from .references import is_valid_repository

KEY_FILE = "token-signing-key.pem"
CERT_FILE = "token-signing-cert.pem"
ALGORITHM = "RS256"
# The certificate only binds the key for the registry; it is never shown to a browser, so a long
# life avoids an outage on a date nobody remembers. Rotating = deleting both files.
CERT_DAYS = 3650
# A scope is short: "repository:" + a name of at most 255 characters + the actions.
MAX_SCOPE_LENGTH = 512


class ScopeError(ValueError):
    """A scope parameter that is not `type:name:actions` as the spec defines it."""


@dataclass(frozen=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: tuple

    def __str__(self):
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


_SCOPE_TYPE_RE = re.compile(r"[a-z0-9]+(?:\([a-z0-9]+\))?")


def parse_scopes(values, limit=None):
    """Scopes from the `scope` parameters (each may hold several, separated by spaces).

    Raises ScopeError with a sentence for anything malformed or when there are more than
    `limit` scopes; never returns a partial list, so nothing is granted from bad input.
    """
    limit = settings.TOKEN_MAX_SCOPES if limit is None else limit
    scopes = []
    for value in values:
        for item in str(value).split():
            if len(scopes) >= limit:
                raise ScopeError(f"Too many scopes: at most {limit} in one request.")
            scopes.append(parse_scope(item))
    return scopes


def parse_scope(text):
    if len(text) > MAX_SCOPE_LENGTH:
        raise ScopeError(f"A scope is longer than {MAX_SCOPE_LENGTH} characters.")
    kind, sep1, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep1 and sep2 and kind and name and actions) or not _SCOPE_TYPE_RE.fullmatch(kind):
        raise ScopeError(f"{text[:80]!r} is not a scope of the form type:name:actions.")
    actions = tuple(dict.fromkeys(a for a in actions.split(",") if a))
    if kind.split("(")[0] == "registry":
        if name != "catalog" or not set(actions) <= {"*"}:
            raise ScopeError(f"{text[:80]!r}: the only registry scope is registry:catalog:*.")
        return Scope("registry", "catalog", ("*",))
    if kind.split("(")[0] != "repository":
        raise ScopeError(f"{text[:80]!r}: unknown resource type {kind[:20]!r}.")
    if not is_valid_repository(name):
        raise ScopeError(f"{name[:80]!r} is not a valid repository name.")
    if not actions or not set(actions) <= {*ACTIONS, "*"}:
        raise ScopeError(f"{text[:80]!r}: actions must be among pull, push, delete or *.")
    return Scope("repository", name, actions)


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(number):
    return number.to_bytes((number.bit_length() + 7) // 8 or 1, "big")


def jwk_thumbprint(public_key):
    """RFC 7638 thumbprint (SHA-256, base64url without padding) of an RSA public key."""
    numbers = public_key.public_numbers()
    # RFC 7638 section 3: required members only, lexicographic order, no whitespace.
    canonical = json.dumps(
        {"e": _b64url(_int_bytes(numbers.e)), "kty": "RSA", "n": _b64url(_int_bytes(numbers.n))},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass
class SigningKey:
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    kid: str

    @property
    def certificate_pem(self):
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def x5c(self):
        # x5c holds standard (not URL-safe) base64 DER, RFC 7515 section 4.1.6.
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return [base64.b64encode(der).decode("ascii")]


_lock = threading.Lock()
_cache = {}


def key_dir():
    return Path(settings.TOKEN_KEY_DIR)


def signing_key():
    """The portal's signing key, generated on first use; cached per process and directory."""
    directory = key_dir()
    with _lock:
        cached = _cache.get(str(directory))
        if cached is None:
            cached = _load_or_create(directory)
            _cache[str(directory)] = cached
        return cached


def _load_or_create(directory):
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create(key_path, cert_path)
    deadline = time.monotonic() + 5
    # Another process may have created the key a moment ago and still be writing its certificate.
    while not cert_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return SigningKey(private_key, certificate, jwk_thumbprint(private_key.public_key()))


def _create(key_path, cert_path):
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process won the race; its key is the key
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Oyster token signing key")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=CERT_DAYS))
        # Self-signed and its own root: the registry's bundle holds exactly this certificate.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private_key, hashes.SHA256())
    )
    tmp = cert_path.with_name(cert_path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)


def write_bundle(path):
    """Write the certificate bundle the registry's `rootcertbundle` names; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_bytes(signing_key().certificate_pem)
    os.chmod(tmp, 0o644)  # public: the registry's user must read it
    os.replace(tmp, path)
    return path


def issue(subject, access, service, now=None, lifetime=None):
    """A signed token for `subject` ("" for anonymous) with `access`: [{type, name, actions}]."""
    key = signing_key()
    now = int(now if now is not None else time.time())
    lifetime = settings.TOKEN_LIFETIME if lifetime is None else lifetime
    claims = {
        "iss": settings.TOKEN_ISSUER,
        "sub": subject,
        "aud": service,
        "exp": now + lifetime,
        # A little slack for a registry clock behind ours (the registry adds its own 60 s too).
        "nbf": now - 10,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "access": access,
    }
    headers = {"typ": "JWT", "kid": key.kid, "x5c": key.x5c}
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers=headers), now


def verify(token, service):
    """The claims of a token this portal signed for `service`; raises jwt.InvalidTokenError.

    The registry is what verifies tokens in production; this is for checks and tests.
    """
    key = signing_key()
    header = jwt.get_unverified_header(token)
    if header.get("kid") != key.kid:
        raise jwt.InvalidTokenError("signed by another key")
    return jwt.decode(
        token,
        key.private_key.public_key(),
        algorithms=[ALGORITHM],
        audience=service,
        issuer=settings.TOKEN_ISSUER,
    )


def mint_for_portal(service, scope_texts):
    """(token, lifetime) for the portal's own service account, signed here: the registry client
    uses it instead of sending the password to the token endpoint. None when `service` is not the
    one this portal serves (that registry's own realm rules then apply)."""
    if service != settings.TOKEN_SERVICE:
        return None
    try:
        scopes = parse_scopes(scope_texts)
    except ScopeError:
        return None
    principal = access.principal_for(settings.REGISTRY_USERNAME)
    token, _issued = issue(principal.username, access.grant_access(principal, scopes), service)
    return token, settings.TOKEN_LIFETIME
