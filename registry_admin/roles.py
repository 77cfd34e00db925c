"""The two portal roles, as Django groups with permissions.

*admin* may change things (registry users, deletes, jobs); *viewer* reads everything.
Groups are (re)built after every migrate, so a new permission reaches existing installs.
"""

from django.contrib.auth.decorators import permission_required

ADMIN_GROUP = "admin"
VIEWER_GROUP = "viewer"

VIEW = "registry_admin.view_portal"
MANAGE_USERS = "registry_admin.manage_registry_users"
DELETE_IMAGES = "registry_admin.delete_images"
RUN_JOBS = "registry_admin.run_jobs"

GROUP_PERMISSIONS = {
    VIEWER_GROUP: [VIEW],
    ADMIN_GROUP: [VIEW, MANAGE_USERS, DELETE_IMAGES, RUN_JOBS],
}


def ensure_groups(**kwargs):
    """post_migrate receiver: create the role groups and give them exactly their permissions."""
    from django.contrib.auth.models import Group, Permission

    for group_name, perms in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=group_name)
        codenames = [p.split(".", 1)[1] for p in perms]
        found = Permission.objects.filter(
            content_type__app_label="registry_admin", codename__in=codenames
        )
        group.permissions.set(found)


def require(perm):
    """View decorator: 403 (not a login redirect) for a logged-in user without `perm`."""
    return permission_required(perm, raise_exception=True)


def is_admin(user):
    return user.is_authenticated and user.has_perm(MANAGE_USERS)
