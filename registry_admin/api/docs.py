"""The API's reference page: Swagger UI from the portal's own static files."""

from django.contrib.auth.decorators import login_not_required
from django.shortcuts import render
from django.views.decorators.http import require_GET


@login_not_required
@require_GET
def reference_page(request):
    """Readable without login, as the document it renders: it holds no data."""
    return render(request, "registry_admin/api/docs.html")
