"""Every form of the portal lives in registry_admin/forms/, one module per area; views import
them (forms written inside views were found again in issue 26)."""

import importlib
import pkgutil

from django import forms

from registry_admin import views


def test_no_view_module_defines_a_form():
    defined = []
    for module_info in pkgutil.iter_modules(views.__path__):
        module = importlib.import_module(f"{views.__name__}.{module_info.name}")
        defined += [
            f"{module.__name__}.{name}"
            for name, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, forms.BaseForm)
            and value.__module__ == module.__name__
        ]
    assert defined == []
