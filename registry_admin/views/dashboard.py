from django.shortcuts import render

from .. import registry


def dashboard(request):
    ping = registry.get_client().ping()
    return render(request, "registry_admin/dashboard.html", {"ping": ping})
