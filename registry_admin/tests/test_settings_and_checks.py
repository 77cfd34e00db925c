"""Settings come only from the environment, every one is documented, misconfiguration is named."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError

from registry_admin import checks

ROOT = Path(__file__).resolve().parents[2]


def settings_variables():
    source = (ROOT / "portal" / "settings.py").read_text()
    names = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"', source))
    names |= set(re.findall(r'_path\(\s*"([A-Z][A-Z0-9_]+)"', source))
    return names


def documented_variables():
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def test_every_setting_read_from_the_environment_is_in_env_example():
    read = settings_variables()
    assert len(read) > 30
    # The registry's own REGISTRY_STORAGE_AZURE_* are fallbacks, explained in a comment there.
    text = (ROOT / ".env.example").read_text()
    fallbacks = {
        name for name in read if name.startswith("REGISTRY_STORAGE_AZURE_") and name in text
    }
    missing = read - documented_variables() - fallbacks - {"LOCAL_RUN"}
    assert not missing, f"add to .env.example: {sorted(missing)}"


def deployment_variables():
    """Variables read outside Django: the image's start script and health check, compose."""
    names = set()
    for path in ("docker/entrypoint.sh", "docker/healthcheck.py", "docker-compose.yml"):
        text = (ROOT / path).read_text()
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", text))
        names |= set(re.findall(r'environ\.get\("([A-Z][A-Z0-9_]+)"', text))
    return names


def test_env_example_documents_nothing_that_does_not_exist():
    extra = (
        documented_variables()
        - settings_variables()
        - deployment_variables()
        - {"PORTAL_ADMIN_USERNAME", "PORTAL_ADMIN_PASSWORD"}
    )
    extra = {name for name in extra if not name.startswith(("GUNICORN_",))}
    assert not extra, f"stale in .env.example: {sorted(extra)}"


def run_python(code, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG", "DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = run_python(
        "import django; django.setup()", DEBUG="0", DATA_DIR=str(tmp_path), SECRET_KEY=""
    )
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_the_local_run_generates_and_keeps_a_secret_key(tmp_path):
    code = "from django.conf import settings; print(settings.SECRET_KEY)"
    first = run_python(code, DEBUG="0", LOCAL_RUN="1", DATA_DIR=str(tmp_path), SECRET_KEY="")
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert len(key) >= 50
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600
    second = run_python(code, DEBUG="0", DATA_DIR=str(tmp_path), SECRET_KEY="")
    assert second.stdout.strip() == key


def errors_from(check, settings_obj=None):
    return {problem.id: problem for problem in check(None)}


def test_a_bad_registry_url_is_an_error_naming_the_setting(settings):
    settings.REGISTRY_URL = "ftp:/nope"
    problems = errors_from(checks.check_registry_settings)
    assert "oyster.E001" in problems
    assert "REGISTRY_URL" in problems["oyster.E001"].hint


def test_a_missing_service_password_is_a_warning(settings):
    settings.REGISTRY_PASSWORD = ""
    problems = errors_from(checks.check_registry_settings)
    assert "REGISTRY_PASSWORD" in problems["oyster.W001"].hint


def test_bcrypt_cost_out_of_range_is_an_error(settings):
    settings.HTPASSWD_BCRYPT_ROUNDS = 40
    problems = errors_from(checks.check_htpasswd_settings)
    assert "HTPASSWD_BCRYPT_ROUNDS" in problems["oyster.E010"].hint


def test_missing_htpasswd_directory_is_a_warning(settings, tmp_path):
    settings.HTPASSWD_PATH = str(tmp_path / "nope" / "htpasswd")
    assert "oyster.W010" in errors_from(checks.check_htpasswd_settings)


def test_an_empty_or_short_notification_token_is_a_warning(settings):
    settings.NOTIFICATIONS_TOKEN = ""
    assert "oyster.W020" in errors_from(checks.check_notification_settings)
    settings.NOTIFICATIONS_TOKEN = "short"
    assert "oyster.W021" in errors_from(checks.check_notification_settings)


def test_azure_without_credentials_names_what_to_set(settings):
    settings.STORAGE_BACKEND = "azure"
    settings.AZURE_STORAGE_CONNECTION_STRING = ""
    settings.AZURE_STORAGE_ACCOUNT_NAME = ""
    settings.AZURE_STORAGE_CONTAINER = ""
    problems = errors_from(checks.check_storage_settings)
    assert "AZURE_STORAGE_CONNECTION_STRING" in problems["oyster.E031"].hint
    assert "AZURE_STORAGE_CONTAINER" in problems["oyster.E032"].hint
    settings.STORAGE_BACKEND = "s3"
    assert "oyster.E030" in errors_from(checks.check_storage_settings)


def test_errors_stop_manage_py_check(settings):
    settings.REGISTRY_TIMEOUT = -1
    with pytest.raises(SystemCheckError, match="REGISTRY_TIMEOUT"):
        call_command("check")


@pytest.mark.django_db
def test_ensure_admin_uses_the_environment_password(monkeypatch, capsys):
    from django.contrib.auth import authenticate

    monkeypatch.setenv("PORTAL_ADMIN_USERNAME", "root-admin")
    monkeypatch.setenv("PORTAL_ADMIN_PASSWORD", "a-long-admin-password")
    call_command("ensure_admin")
    out = capsys.readouterr().out
    assert "a-long-admin-password" not in out
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username="root-admin")
    assert user.check_password("a-long-admin-password")
    assert user.has_perm("registry_admin.manage_registry_users")
    assert authenticate is not None
    call_command("ensure_admin")
    assert "exists already" in capsys.readouterr().out


@pytest.mark.django_db
def test_ensure_admin_generates_and_prints_a_password_once(monkeypatch, capsys):
    from django.contrib.auth import get_user_model

    monkeypatch.delenv("PORTAL_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("PORTAL_ADMIN_USERNAME", raising=False)
    call_command("ensure_admin")
    out = capsys.readouterr().out
    password = re.search(r"generated password: (\S+)", out).group(1)
    assert len(password) >= 16
    assert get_user_model().objects.get(username="admin").check_password(password)
    call_command("ensure_admin")
    assert password not in capsys.readouterr().out


@pytest.mark.django_db
def test_ensure_service_account_writes_a_low_cost_entry(settings, tmp_path, capsys):
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    settings.REGISTRY_USERNAME = "svc"
    settings.REGISTRY_PASSWORD = "s" * 43
    call_command("ensure_service_account")
    line = (tmp_path / "htpasswd").read_text()
    assert line.startswith("svc:$2b$04$")
    call_command("ensure_service_account")
    assert "up to date" in capsys.readouterr().out
    assert (tmp_path / "htpasswd").read_text() == line
    settings.REGISTRY_PASSWORD = ""
    with pytest.raises(CommandError, match="REGISTRY_PASSWORD"):
        call_command("ensure_service_account")


def test_local_registry_config_points_the_registry_at_the_portal(settings, tmp_path):
    import yaml

    settings.NOTIFICATIONS_TOKEN = "t" * 32
    settings.HTPASSWD_PATH = str(tmp_path / "htpasswd")
    settings.STORAGE_FILESYSTEM_ROOT = str(tmp_path / "storage")
    out = tmp_path / "config.yml"
    call_command(
        "local_registry_config", "--out", str(out), "--portal-url", "http://127.0.0.1:8123"
    )
    config = yaml.safe_load(out.read_text())
    assert config["storage"]["delete"]["enabled"] is True
    assert config["auth"]["htpasswd"]["path"] == str(tmp_path / "htpasswd")
    (endpoint,) = config["notifications"]["endpoints"]
    assert endpoint["url"] == "http://127.0.0.1:8123/api/registry/events"
    assert endpoint["headers"]["Authorization"] == ["Bearer " + "t" * 32]
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("database_url", "switch", "threshold"),
    [
        ("postgres://oyster@127.0.0.1:1/oyster", None, "5"),
        ("postgres://oyster@127.0.0.1:1/oyster", "off", "None"),
        ("postgres://oyster@127.0.0.1:1/oyster", "on", "5"),
        ("sqlite:////tmp/oyster-never-opened.sqlite3", None, "absent"),
    ],
)
def test_prepared_statements_follow_the_setting_on_postgresql_only(
    tmp_path, database_url, switch, threshold
):
    """psycopg prepares only what binds server-side (the webhook's INSERT); Django's default
    would be never. Nothing connects here."""
    env = {"DEBUG": "0", "LOCAL_RUN": "1", "DATA_DIR": str(tmp_path), "SECRET_KEY": "s" * 50}
    env["DATABASE_URL"] = database_url
    if switch is not None:
        env["DATABASE_PREPARED_STATEMENTS"] = switch
    code = (
        "from django.conf import settings; "
        "print(settings.DATABASES['default'].get('OPTIONS', {}).get('prepare_threshold', 'absent'))"
    )
    result = run_python(code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == threshold


def test_sqlite_connections_use_wal_with_a_larger_checkpoint_interval(tmp_path):
    """Every connection the portal opens on SQLite: WAL, and a checkpoint every 4,000 pages."""
    env = {"DEBUG": "0", "LOCAL_RUN": "1", "DATA_DIR": str(tmp_path), "SECRET_KEY": "s" * 50}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'portal.sqlite3'}"
    code = (
        "import django; django.setup(); from django.db import connection\n"
        "with connection.cursor() as cursor:\n"
        "    for pragma in ('journal_mode', 'synchronous', 'wal_autocheckpoint'):\n"
        "        cursor.execute('PRAGMA ' + pragma); print(cursor.fetchone()[0])"
    )
    result = run_python(code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wal", "1", "4000"]  # synchronous 1: NORMAL
