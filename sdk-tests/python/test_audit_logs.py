"""The official WorkOS Python SDK (workos 10.8.0) against audit-testkit."""

import csv
import io
import time
import urllib.request
from datetime import datetime, timezone

import pytest
from workos._errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitExceededError,
)
from workos.audit_logs._resource import RetentionPeriod, RetentionPeriodInDays
from workos.audit_logs.models import (
    AuditLogEvent,
    AuditLogSchemaActorInput,
    AuditLogSchemaTargetInput,
)
from workos.audit_logs.models.audit_log_event_actor import AuditLogEventActor
from workos.audit_logs.models.audit_log_event_context import AuditLogEventContext
from workos.audit_logs.models.audit_log_event_target import AuditLogEventTarget

OCCURRED = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)


def event(action="user.signed_in", metadata=None):
    return AuditLogEvent(
        action=action,
        occurred_at=OCCURRED,
        actor=AuditLogEventActor(id="user_1", type="user", name="Jon Smith", metadata={"role": "admin"}),
        targets=[AuditLogEventTarget(id="team_1", type="team", name="Engineering")],
        context=AuditLogEventContext(location="203.0.113.7", user_agent="pytest"),
        metadata=metadata if metadata is not None else {"request_id": "req_1"},
    )


def test_create_event(tk, client):
    client.audit_logs.create_event(organization_id=tk.organization_id, event=event())
    events = tk.events()
    assert len(events) == 1
    assert events[0]["event"]["action"] == "user.signed_in"
    assert events[0]["event"]["occurred_at"] == "2024-01-02T03:04:05.678Z"
    assert events[0]["idempotency_key"]


def test_sdk_retries_two_500s_and_one_event_is_stored(tk, client):
    # The first 500 comes after the event was stored: only idempotency prevents a duplicate.
    tk.fault({"path": "/audit_logs/events", "method": "POST", "times": 2,
              "action": {"type": "respond", "status": 500}, "when": "after"})
    client.audit_logs.create_event(organization_id=tk.organization_id, event=event())
    assert len(tk.events()) == 1
    reqs = [r for r in tk.requests() if r["path"] == "/audit_logs/events"]
    assert [r["status"] for r in reqs] == [500, 500, 200]
    keys = {dict(r["headers"])["idempotency-key"] for r in reqs}
    assert len(keys) == 1


def test_create_and_list_schemas(client):
    s1 = client.audit_logs.create_schema(
        action_name="invoice.paid",
        actor=AuditLogSchemaActorInput(metadata={"type": "object", "properties": {"role": {"type": "string"}}}),
        targets=[AuditLogSchemaTargetInput(type="invoice", metadata={"type": "object", "properties": {"cost": {"type": "number"}}})],
    )
    assert s1.version == 1
    s2 = client.audit_logs.create_schema(
        action_name="invoice.paid", targets=[AuditLogSchemaTargetInput(type="invoice")]
    )
    assert s2.version == 2
    page = client.audit_logs.list_action_schemas("invoice.paid")
    assert [s.version for s in page.data] == [2, 1]


def test_list_actions_walks_every_page(client):
    names = [f"thing.a{i:02d}" for i in range(23)]
    for n in names:
        client.audit_logs.create_schema(action_name=n, targets=[AuditLogSchemaTargetInput(type="team")])
    page = client.audit_logs.list_actions(limit=5, order="asc")
    assert len(page.data) == 5
    seen = [a.name for a in page.auto_paging_iter()]
    assert seen == names
    desc = [a.name for a in client.audit_logs.list_actions(limit=10).auto_paging_iter()]
    assert desc == list(reversed(names))


def test_export_ready_and_csv(tk, client):
    client.audit_logs.create_event(organization_id=tk.organization_id, event=event("user.signed_in"))
    client.audit_logs.create_event(organization_id=tk.organization_id, event=event("user.signed_out"))
    created = client.audit_logs.create_export(
        organization_id=tk.organization_id,
        range_start=datetime(2024, 1, 1, tzinfo=timezone.utc),
        range_end=datetime(2024, 2, 1, tzinfo=timezone.utc),
        actor_names=["Jon Smith"],
    )
    assert created.state == "pending"
    exp = created
    for _ in range(50):
        if exp.state == "ready":
            break
        time.sleep(0.1)
        exp = client.audit_logs.get_export(created.id)
    assert exp.state == "ready"
    assert exp.url.startswith(tk.url + "/_testkit/exports/")
    with urllib.request.urlopen(exp.url, timeout=10) as r:
        rows = list(csv.DictReader(io.StringIO(r.read().decode())))
    assert len(rows) == 2
    assert {r["action"] for r in rows} == {"user.signed_in", "user.signed_out"}
    assert rows[0]["actor_name"] == "Jon Smith"
    assert rows[0]["target_id_1"] == "team_1"
    assert rows[0]["metadata"] == '{"request_id":"req_1"}'


def test_retention_get_and_set(tk, client):
    r = client.audit_logs.get_organization_audit_logs_retention(tk.organization_id)
    assert r.retention_period_in_days == 30
    r = client.audit_logs.update_organization_audit_logs_retention(
        tk.organization_id, retention=RetentionPeriodInDays(retention_period_in_days=365)
    )
    assert r.retention_period_in_days == 365
    r = client.audit_logs.update_organization_audit_logs_retention(
        tk.organization_id, retention=RetentionPeriod(retention_period="2_YEARS")
    )
    assert r.retention_period_in_days == 730
    assert client.audit_logs.get_organization_audit_logs_retention(tk.organization_id).retention_period_in_days == 730


def test_portal_link(tk, client):
    res = client.admin_portal.generate_link(organization=tk.organization_id, intent="audit_logs")
    assert res.link.startswith(tk.url + "/portal?token=")
    with urllib.request.urlopen(res.link, timeout=10) as r:
        assert r.status == 200


def test_unknown_org_is_not_found(client):
    with pytest.raises(NotFoundError) as e:
        client.audit_logs.create_event(organization_id="org_unknown", event=event())
    assert e.value.status_code == 404
    assert e.value.request_id.startswith("req_")


def test_invalid_event_is_bad_request(tk, client):
    with pytest.raises(BadRequestError) as e:
        client.audit_logs.create_event(organization_id=tk.organization_id, event=event(metadata={"x" * 41: 1}))
    assert e.value.code == "invalid_audit_log_event"
    assert tk.events() == []


def test_429_is_rate_limit_exceeded(tk, client):
    # The SDK retries 429 three times; the fourth answer reaches the caller.
    tk.fault({"path": "/audit_logs/events", "method": "POST", "times": 4,
              "action": {"type": "respond", "status": 429,
                         "body": {"message": "Too many requests.", "code": "rate_limit_exceeded"},
                         "retry_after": "1"}})
    with pytest.raises(RateLimitExceededError) as e:
        client.audit_logs.create_event(organization_id=tk.organization_id, event=event())
    assert e.value.retry_after == 1
    assert len(tk.requests()) == 4
    assert tk.events() == []


def test_bad_key_is_authentication_error(tk):
    with pytest.raises(AuthenticationError) as e:
        tk.sdk(api_key="not_a_secret_key").audit_logs.create_event(organization_id=tk.organization_id, event=event())
    assert e.value.status_code == 401
