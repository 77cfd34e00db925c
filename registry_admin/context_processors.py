from django.conf import settings

from .roles import is_admin


def portal(request):
    """Values every page's base template needs."""
    user = getattr(request, "user", None)
    return {
        "is_portal_admin": bool(user and is_admin(user)),
        "registry_public_host": settings.REGISTRY_PUBLIC_HOST,
    }
