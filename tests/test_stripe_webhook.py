"""``POST /api/v1/stripe/webhook``: only events signed with a configured secret, within 300 s
either way, are stored, once each; everything else is a 400 and stores nothing. Signed
with the stripe library's own helper, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from billing_gateway.billing.api import create_app
from billing_gateway.billing.store import BillingStore
from billing_gateway.billing.stripe import inbox
from billing_gateway.billing.stripe.runtime import StripeRuntime
from billing_gateway.billing.stripe.settings import StripeSettings
from billing_gateway.billing.stripe.webhook import MAX_WEBHOOK_BODY
from litestar.testing import TestClient

from .stripe_payloads import SECRET, body, customer, event, sign

OLD_SECRET = "whsec_old_secret_9876543210"
URL = "/api/v1/stripe/webhook"


@pytest.fixture
def client(store: BillingStore) -> Iterator[TestClient]:  # type: ignore[type-arg]
    runtime = StripeRuntime(StripeSettings(webhook_secrets=(OLD_SECRET, SECRET)))
    with TestClient(create_app(store, runtime)) as c:
        yield c


def post(client: TestClient, payload: bytes, signature: str | None) -> int:  # type: ignore[type-arg]
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return int(client.post(URL, content=payload, headers=headers).status_code)


def stored(store: BillingStore) -> list[str]:
    return [r.event_id for r in inbox.list_rows(store, limit=1000)]


def test_a_signed_event_is_stored_once(client: TestClient, store: BillingStore) -> None:  # type: ignore[type-arg]
    evt = event("customer.created", customer("cus_A"))
    payload = body(evt)
    answer = client.post(URL, content=payload, headers={"Stripe-Signature": sign(payload)})
    assert answer.status_code == 200 and answer.json() == {"received": True, "duplicate": False}
    again = client.post(URL, content=payload, headers={"Stripe-Signature": sign(payload)})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    (row,) = inbox.list_rows(store)
    assert (row.event_id, row.event_type, row.object_id, row.status) == (
        evt["id"], "customer.created", "cus_A", "pending",
    )  # fmt: skip


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "tampered body", "expired", "future", "missing header", "garbage header", "no v1"],
)
def test_a_bad_signature_is_400_and_stores_nothing(
    client: TestClient,
    store: BillingStore,
    case: str,  # type: ignore[type-arg]
) -> None:
    payload = body(event("customer.created", customer("cus_B")))
    now = int(time.time())
    signature: str | None = {
        "wrong secret": sign(payload, "whsec_someone_else"),
        "tampered body": sign(payload),
        "expired": sign(payload, timestamp=now - 301),
        "future": sign(payload, timestamp=now + 301),
        "missing header": None,
        "garbage header": "nonsense",
        "no v1": sign(payload).replace("v1=", "v0="),
    }[case]
    sent = payload.replace(b'"Acme"', b'"Evil"') if case == "tampered body" else payload
    assert post(client, sent, signature) == 400
    assert stored(store) == []


def test_rotation_any_configured_secret_and_any_v1_entry(client: TestClient, store: BillingStore) -> None:  # type: ignore[type-arg]
    old = body(event("customer.created", customer("cus_old")))
    assert post(client, old, sign(old, OLD_SECRET)) == 200, "the secret being rotated out still works"
    both = body(event("customer.created", customer("cus_both")))
    stale, fresh = sign(both, "whsec_retired"), sign(both)
    header = f"{fresh.split(',')[0]},{stale.split(',')[1]},{fresh.split(',')[1]}"  # t=..,v1=bad,v1=good
    assert post(client, both, header) == 200, "Stripe sends one v1 per secret while rolling"
    assert len(stored(store)) == 2


def test_an_oversized_body_is_400_and_stores_nothing(client: TestClient, store: BillingStore) -> None:  # type: ignore[type-arg]
    evt = event("customer.created", customer("cus_big", name="x" * (MAX_WEBHOOK_BODY + 1)))
    payload = body(evt)
    assert post(client, payload, sign(payload)) == 400
    assert stored(store) == []


def test_signed_but_not_an_event_is_400(client: TestClient, store: BillingStore) -> None:  # type: ignore[type-arg]
    hostile = [
        event("customer.created", customer("cus_1"), event_id="evt_" + "x" * 300),
        event("customer.created", customer("cus_1"), event_id="evt_\u0000nul"),
        event("customer.created", customer("cus_1"), created=2**63),
        event("customer.created", customer("cus_" + "y" * 300)),
        event("customer.created\n", customer("cus_1")),
    ]
    for payload in (b"[1, 2]", b'{"id": "evt_1"}', b"not json", *(body(e) for e in hostile)):
        answer = client.post(URL, content=payload, headers={"Stripe-Signature": sign(payload)})
        assert answer.status_code == 400 and "not a Stripe event" in answer.json()["detail"], answer.text
    assert stored(store) == []


def test_without_a_webhook_secret_the_endpoint_says_so(store: BillingStore) -> None:
    with TestClient(create_app(store, StripeRuntime())) as c:
        payload = body(event("customer.created", customer("cus_C")))
        answer = c.post(URL, content=payload, headers={"Stripe-Signature": sign(payload)})
    assert answer.status_code == 503 and "STRIPE_WEBHOOK_SECRET" in answer.json()["detail"]
    assert stored(store) == []
