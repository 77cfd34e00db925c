"""API tokens: a portal user's credentials for /api/v1/, each with its own scopes and expiry."""

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """One token. Only `prefix` (to find the row) and the SHA-256 of the secret are kept: the
    whole token is shown once, at creation. SHA-256 rather than a slow hash because the secret
    is 256 random bits (nobody guesses it at any cost) and every API request checks it."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    # Scope names (api_tokens.SCOPES), comma-separated, in SCOPES' order.
    scopes = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    # Written at most once a minute per token (api_tokens.LAST_USED_RESOLUTION): not a hot row.
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.CharField(max_length=255, blank=True)

    class Meta:
        indexes = [models.Index(fields=["owner", "-created_at"], name="api_token_owner_idx")]

    def __str__(self):
        return f"{self.name} ({self.prefix})"

    @property
    def scope_list(self):
        return [s for s in self.scopes.split(",") if s]
