"""Pages whose feature has not landed yet; each feature replaces its own."""

from django.shortcuts import render


def _placeholder(title):
    def view(request):
        return render(request, "registry_admin/placeholder.html", {"title": title})

    view.__name__ = title.lower().replace(" ", "_")
    return view

