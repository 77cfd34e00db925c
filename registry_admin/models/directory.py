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

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="directory_identity_unique")
        ]

    def __str__(self):
        return f"{self.subject} at {self.issuer}"
