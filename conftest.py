"""Project-wide pytest setup: real-component fixtures live in registry_admin/tests/harness.py."""

pytest_plugins = ["registry_admin.tests.harness", "registry_admin.tests.fixtures"]
