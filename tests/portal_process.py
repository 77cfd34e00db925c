"""The portal as its own process (gunicorn, production settings, a file database), for fault and
end-to-end tests that kill, restart or load it the way an operator's deployment would be."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from registry_admin.tests.harness import NOTIFICATIONS_TOKEN, free_port

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


class PortalProcess:
    """gunicorn serving the portal on a free port with its own SQLite file (or DATABASE_URL)."""

    def __init__(self, workdir, workers=2, extra_env=None, database_url=None, threads=1):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.db_path = self.workdir / "portal.sqlite3"
        self.workers = workers
        self.threads = threads
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "DJANGO_"))},
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "SECRET_KEY": "fault-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
            "DEBUG": "0",
            "DATA_DIR": str(self.workdir),
            "DATABASE_URL": database_url or f"sqlite:///{self.db_path}",
            "SECURE_SSL_REDIRECT": "0",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "SECURE_HSTS_SECONDS": "0",
            "WHITENOISE_USE_FINDERS": "1",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "NOTIFICATIONS_TOKEN": NOTIFICATIONS_TOKEN,
            "REGISTRY_PASSWORD": "unused-in-this-test",
            "LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.process = None
        self.log_path = self.workdir / "gunicorn.log"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def manage(self, *args, timeout=120):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self):
        log = open(self.log_path, "ab")  # noqa: SIM115  (kept open for the process's lifetime)
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "gunicorn"),
                "portal.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
                "--timeout",
                "30",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a kill takes the workers too
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(self.log_path.read_text()[-3000:])
            time.sleep(0.1)
        raise RuntimeError("the portal did not become healthy within 30 s")

    def kill(self, sig=signal.SIGKILL):
        """Kill the master and its workers at once, as a crash or an OOM kill would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(10)

    def stop(self):
        self.kill(signal.SIGTERM)

    def query(self, sql, params=()):
        """Read the portal's SQLite database directly."""
        with sqlite3.connect(self.db_path, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()


class EventSink:
    """An always-200 notification endpoint that remembers every event id it was sent."""

    def __init__(self):
        self.ids = set()
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink.lock:
                    sink.ids.update(e["id"] for e in json.loads(body).get("events", []))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/events"

    def snapshot(self):
        with self.lock:
            return set(self.ids)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def stored_event_ids(portal):
    return [
        row[0]
        for row in portal.query(
            "SELECT event_id FROM registry_admin_auditevent WHERE source = 'registry'"
        )
    ]
