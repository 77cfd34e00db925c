"""POST /api/registry/events: token, media types, redeliveries, bad bodies, size limit, DB failure."""

import io
import json
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from django.core.handlers.wsgi import WSGIRequest
from django.db import DatabaseError, OperationalError, connection
from django.test import Client

from registry_admin import db
from registry_admin.models import AuditEvent, DeliveryCounter, RejectedDelivery
from registry_admin.views.webhooks import registry_events

from .factories import make_envelope, make_registry_event

PAYLOADS = Path(__file__).parent / "payloads"
URL = "/api/registry/events"
TOKEN = "test-notifications-token-0123456789"
V1 = "application/vnd.docker.distribution.events.v1+json"
V2 = "application/vnd.docker.distribution.events.v2+json"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def token(settings):
    settings.NOTIFICATIONS_TOKEN = TOKEN


@pytest.fixture
def registry_client():
    """An anonymous client that enforces CSRF like a browser would: the endpoint must not care."""
    return Client(enforce_csrf_checks=True)


def post(client, body, content_type=V1, authorization=f"Bearer {TOKEN}", **extra):
    if authorization is not None:
        extra["HTTP_AUTHORIZATION"] = authorization
    return client.post(URL, data=body, content_type=content_type, **extra)


def test_it_stores_a_real_payload_and_acknowledges_a_redelivery(registry_client):
    body = (PAYLOADS / "push-manifest-oci.json").read_bytes()

    first = post(registry_client, body)
    again = post(registry_client, body)

    assert first.status_code == 200
    assert first.json() == {"stored": 1, "duplicates": 0, "rejected": False}
    assert again.status_code == 200
    assert again.json() == {"stored": 0, "duplicates": 1, "rejected": False}
    event = AuditEvent.objects.get()
    assert (event.action, event.repository, event.tag, event.actor) == (
        "push",
        "alpha/app",
        "v1",
        "admin",
    )


@pytest.mark.parametrize("content_type", [V1, V2, "application/json", "text/plain", ""])
def test_it_accepts_every_media_type_the_registry_may_send(registry_client, content_type):
    response = post(registry_client, make_envelope(make_registry_event()), content_type)
    assert response.status_code == 200
    assert AuditEvent.objects.count() == 1


def test_it_stores_an_envelope_of_many_events(registry_client):
    events = [make_registry_event(tag=f"v{i}") for i in range(20)]
    response = post(registry_client, make_envelope(*events))
    assert response.json()["stored"] == 20
    assert AuditEvent.objects.count() == 20


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-token",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        "Bearer ü<script>' OR 1=1",
        "Bearer " + "x" * 10000,
    ],
)
def test_a_wrong_or_missing_token_is_refused_and_counted(registry_client, authorization):
    response = post(
        registry_client, make_envelope(make_registry_event()), authorization=authorization
    )
    assert response.status_code == 401
    assert not AuditEvent.objects.exists()
    assert not RejectedDelivery.objects.exists()
    counter = DeliveryCounter.objects.get(name=DeliveryCounter.UNAUTHORIZED)
    assert counter.count == 1
    assert counter.last_seen is not None
    assert counter.last_addr == "127.0.0.1"


def test_refused_deliveries_do_not_grow_the_database(registry_client):
    for _ in range(30):
        assert post(registry_client, b"x" * 1000, authorization="Bearer nope").status_code == 401
    assert DeliveryCounter.objects.count() == 1
    assert DeliveryCounter.objects.get().count == 30
    assert not RejectedDelivery.objects.exists()


def test_an_empty_configured_token_accepts_nothing(registry_client, settings):
    settings.NOTIFICATIONS_TOKEN = ""
    assert post(registry_client, make_envelope(), authorization="Bearer ").status_code == 401


def test_the_token_scheme_is_case_insensitive(registry_client):
    response = post(
        registry_client, make_envelope(make_registry_event()), authorization=f"bearer {TOKEN}"
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "body, error",
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe<script>", "not JSON"),
        (b"", "not JSON"),
        (b'{"hello": "world"}', "not an envelope"),
        (b'[{"id": "1"}]', "not an envelope"),
    ],
)
def test_a_body_that_is_not_an_envelope_is_acknowledged_and_kept(registry_client, body, error):
    response = post(registry_client, body)
    assert response.status_code == 200
    assert response.json()["rejected"] is True
    rejected = RejectedDelivery.objects.get()
    assert error in rejected.error
    assert bytes(rejected.body) == body
    # The test client sends no Content-Type with an empty body.
    assert rejected.content_type == (V1 if body else "")


def test_unknown_actions_are_acknowledged_kept_and_the_rest_stored(registry_client):
    good = make_registry_event()
    unknown = make_registry_event(action="replicate")
    response = post(registry_client, make_envelope(good, unknown))
    assert response.status_code == 200
    assert response.json()["stored"] == 1
    assert "unknown action 'replicate'" in response.json()["errors"][0]
    assert "unknown action 'replicate'" in RejectedDelivery.objects.get().error
    assert AuditEvent.objects.get().event_id == good["id"]


def test_an_oversized_body_is_refused(registry_client, settings):
    settings.NOTIFICATIONS_MAX_BODY = 2000
    small = make_envelope(make_registry_event())
    assert len(small) < 2000
    assert post(registry_client, small).status_code == 200
    big = make_envelope(*[make_registry_event() for _ in range(5)])
    assert len(big) > 2000
    response = post(registry_client, big)
    assert response.status_code == 413
    assert AuditEvent.objects.count() == 1
    assert not RejectedDelivery.objects.exists()


def test_an_oversized_body_is_refused_before_the_token_is_known_only_as_401(
    registry_client, settings
):
    settings.NOTIFICATIONS_MAX_BODY = 10
    assert post(registry_client, b"x" * 100, authorization="Bearer no").status_code == 401


def test_a_chunked_body_without_content_length_is_measured_while_read(settings):
    """gunicorn passes chunked bodies without CONTENT_LENGTH; the read itself enforces the limit."""
    settings.NOTIFICATIONS_MAX_BODY = 2000

    def chunked_request(body):
        return WSGIRequest(
            {
                "REQUEST_METHOD": "POST",
                "PATH_INFO": URL,
                "SERVER_NAME": "testserver",
                "SERVER_PORT": "80",
                "REMOTE_ADDR": "127.0.0.1",
                "CONTENT_TYPE": V1,
                "HTTP_AUTHORIZATION": f"Bearer {TOKEN}",
                "wsgi.input": io.BytesIO(body),
                "wsgi.input_terminated": True,
                "wsgi.url_scheme": "http",
            }
        )

    big = make_envelope(*[make_registry_event() for _ in range(5)])
    assert registry_events(chunked_request(big)).status_code == 413
    assert registry_events(chunked_request(make_envelope(make_registry_event()))).status_code == 200
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_other_methods_are_not_allowed(registry_client, method):
    response = getattr(registry_client, method)(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


@contextmanager
def failing_inserts():
    """The database refuses writes (a locked SQLite file, a PostgreSQL failover)."""

    def refuse(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("INSERT", "WITH")):
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        yield


def test_a_database_failure_is_not_acknowledged_so_the_registry_retries(registry_client):
    body = make_envelope(make_registry_event())
    with failing_inserts():
        response = post(registry_client, body)
    assert response.status_code == 503
    assert not AuditEvent.objects.exists()
    # The registry's retry then goes through.
    assert post(registry_client, body).json()["stored"] == 1


def test_a_database_failure_while_counting_still_answers_401(registry_client):
    with failing_inserts():
        response = post(registry_client, make_envelope(), authorization="Bearer nope")
    assert response.status_code == 401


def test_the_answer_never_echoes_the_token(registry_client):
    response = post(registry_client, b"{}", authorization="Bearer wrong-token-value")
    assert b"wrong-token-value" not in response.content
    assert TOKEN.encode() not in response.content


def test_captured_retries_are_stored_once(registry_client):
    with open(PAYLOADS / "all-captures.jsonl") as f:
        captures = [json.loads(line) for line in f]
    retried = [c for c in captures if c["phase"].startswith(("19-", "21-", "23-"))]
    for capture in retried:
        assert post(registry_client, json.dumps(capture["body"])).status_code == 200
    unique = {c["body"]["events"][0]["id"] for c in retried}
    assert AuditEvent.objects.count() == len(unique) < len(retried)


def test_lone_surrogates_and_nul_never_reach_the_database(registry_client):
    """JSON can escape characters no database column accepts; a 500 here would wedge the
    registry's queue, so they are cleaned (fields) or refused (ids) and acknowledged."""
    event = make_registry_event(repository="team/app", tag="v1")
    body = make_envelope(event).replace(b'"tag": "v1"', b'"tag": "v1\\ud800\\u0000"')
    body = body.replace(b'"name": "bob"', b'"name": "b\\udfffob"')
    bad_id = make_registry_event()
    bad_id_body = make_envelope(bad_id).replace(
        bad_id["id"].encode(), bad_id["id"].encode() + b"\\u0000\\ud800"
    )

    assert post(registry_client, body).json()["stored"] == 1
    response = post(registry_client, bad_id_body)

    assert response.status_code == 200
    stored = AuditEvent.objects.get()
    assert stored.tag == "v1?" and stored.actor == "b?ob"
    assert "unprintable" in RejectedDelivery.objects.get().error
    # The rejected delivery's page shows it.
    assert b"\\ud800" in bytes(RejectedDelivery.objects.get().body)


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_died_while_idle_is_replaced_and_the_delivery_stored(registry_client):
    """The webhook skips the kept connection's health check (half its round trips): a dead
    connection fails the first store, and the delivery goes through on a new one."""
    failures = []

    def die_once(execute, sql, params, many, context):
        if not failures and sql.lstrip().upper().startswith(("INSERT", "WITH")):
            failures.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    body = make_envelope(make_registry_event())
    with connection.execute_wrapper(die_once):
        response = post(registry_client, body)
    assert failures, "the store did not go through the wrapped connection"
    assert response.status_code == 200 and response.json()["stored"] == 1
    assert AuditEvent.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_database_that_stays_down_is_still_answered_503(registry_client):
    with failing_inserts():
        response = post(registry_client, make_envelope(make_registry_event()))
    assert response.status_code == 503
    assert not AuditEvent.objects.exists()


# PostgreSQL: the webhook's INSERT is a prepared statement (db.fetch_prepared).


@pytest.fixture
def preparing_again():
    """The process-wide "a pooler lost a prepared statement" switch, reset after the test."""
    yield
    db._unprepared.clear()


AUDIT_INSERT = 'INSERT INTO "registry_admin_auditevent"'


def prepared_inserts():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE strpos(statement, %s) > 0",
            [AUDIT_INSERT],
        )
        return cursor.fetchone()[0]


def deliver(client, count):
    """Post `count` one-event deliveries; every one must be stored."""
    for _ in range(count):
        response = post(client, make_envelope(make_registry_event()))
        assert response.status_code == 200, response.content
        assert response.json()["stored"] == 1


@pytest.mark.postgres
@pytest.mark.parametrize("delay", [0.25, 0])
def test_on_postgresql_the_insert_is_prepared_once_per_connection(
    registry_client, batched, settings, delay
):
    settings.NOTIFICATIONS_APPLY_DELAY = delay  # 0: the INSERT inside the delivery's transaction
    deliver(registry_client, 4)
    assert prepared_inserts() == 0  # psycopg prepares from the 5th run on
    deliver(registry_client, 8)
    assert prepared_inserts() == 1  # one statement, reused: not one per delivery
    assert AuditEvent.objects.count() == 12


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_prepared_statement_lost_to_a_pooler_turns_preparing_off(
    registry_client, caplog, batched, preparing_again
):
    """A pooler in transaction mode hands the next statement to a server connection that never
    prepared it: that delivery is still stored (run again unprepared, 200), and nothing is
    prepared from then on."""
    deliver(registry_client, 6)
    assert prepared_inserts() == 1
    # Behind psycopg's back, as a pooler switching server connections would.
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")

    deliver(registry_client, 3)

    assert "DATABASE_PREPARED_STATEMENTS=0" in caplog.text
    assert prepared_inserts() == 0
    assert AuditEvent.objects.count() == 9


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_lost_prepared_statement_inside_a_transaction_is_retried_by_the_registry(
    registry_client, settings, preparing_again
):
    """With the index applied in the delivery's transaction, the failed statement spoiled the
    transaction: 503, so the registry sends it again, and that goes through unprepared."""
    settings.NOTIFICATIONS_APPLY_DELAY = 0
    deliver(registry_client, 6)
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")
    body = make_envelope(make_registry_event())

    assert post(registry_client, body).status_code == 503
    assert post(registry_client, body).json()["stored"] == 1
    assert AuditEvent.objects.count() == 7


@pytest.mark.postgres
@pytest.mark.parametrize(
    "lost",
    [
        psycopg.errors.InvalidSqlStatementName,
        psycopg.errors.DuplicatePreparedStatement,
        psycopg.errors.ProtocolViolation,
    ],
)
def test_each_kind_of_lost_prepared_statement_is_recognised(registry_client, lost, preparing_again):
    failures = []

    def lose_once(execute, sql, params, many, context):
        if not failures and AUDIT_INSERT in sql:
            failures.append(sql)
            error = DatabaseError("prepared statement lost")
            error.__cause__ = lost()
            raise error
        return execute(sql, params, many, context)

    with connection.execute_wrapper(lose_once):
        response = post(registry_client, make_envelope(make_registry_event()))
    assert failures
    # Inside the test's transaction: answered 503 (the registry retries), and switched off.
    assert response.status_code == 503
    assert db._unprepared.is_set()


@pytest.mark.postgres
def test_other_database_errors_leave_preparing_on(registry_client):
    with failing_inserts():
        assert post(registry_client, make_envelope(make_registry_event())).status_code == 503
    assert not db._unprepared.is_set()
