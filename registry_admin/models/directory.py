from django.conf import settings
from django.db import models


class DirectoryIdentity(models.Model):
    """A portal account's identity at the organisation's directory: the provider's issuer and its
    subject for the person. Sign-ins find the account by this pair, never by name, so a directory
    user called `admin` cannot step into a local account of that name."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="directory_identity"
    )
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    # The role-claim values seen at the last sign-in, for the users page and the audit trail.
    groups = models.JSONField(default=list, blank=True)
    last_sign_in = models.DateTimeField(null=True, blank=True)
    # The name the person has at the registry in token mode (`dana@example.org` ->
    # `dana.example.org`), given with their first CLI secret; unique among identities, and no
    # htpasswd user or robot of that name may exist when it is given.
    registry_name = models.CharField(max_length=64, null=True, blank=True, unique=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="directory_identity_unique")
        ]

    def __str__(self):
        return f"{self.subject} at {self.issuer}"


class CliSecret(models.Model):
    """A password for `docker login` as the identity's registry name (token mode). Only its
    SHA-256 is kept: it is 32 random bytes, which no one guesses, so a slow hash would only
    slow the token endpoint."""

    identity = models.ForeignKey(
        DirectoryIdentity, on_delete=models.CASCADE, related_name="secrets"
    )
    name = models.CharField(max_length=64)
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} of {self.identity_id}"
