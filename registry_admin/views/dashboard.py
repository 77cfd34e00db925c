from django.shortcuts import render

from .. import registry
from . import audit


def dashboard(request):
    ping = registry.get_client().ping()
    context = {"ping": ping}
    context.update(audit.dashboard_context(ping))
    return render(request, "registry_admin/dashboard.html", context)
