from django.db import models


class Roles(models.Model):  # noqa: DJ008  (no rows, nothing to print)
    """Holds the portal's custom permissions; no table.

    The *admin* and *viewer* groups are built from these permissions after every migrate
    (see `registry_admin.roles`).
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("view_portal", "Can read every page (viewer)"),
            ("manage_registry_users", "Can create, change and delete registry users"),
            ("delete_images", "Can delete tags and images"),
            ("run_jobs", "Can start reconcile, scan and retention runs and edit their rules"),
        ]
