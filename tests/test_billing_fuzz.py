"""The Billing API's OpenAPI schema, fuzzed with schemathesis on SQLite and PostgreSQL
(which refuses NUL bytes and over-long strings that SQLite stores): no 5xx, and every
answer matches the schema it documents."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from billing_gateway import to_micros
from billing_gateway.billing.api import create_app
from billing_gateway.billing.store import BillingStore
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from .conftest import POSTGRES_URL, require_service


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def billing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, str]]:
    if request.param == "sqlite":
        store = BillingStore.open(str(tmp_path_factory.mktemp("fuzz") / "billing.db"))
    else:
        require_service("PostgreSQL", "127.0.0.1", 5432)
        schema = f"fuzz_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        store = BillingStore.open(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    store.create_plan(plan_id="plan_pro", name="Pro", currency="USD", included_budget=to_micros(10), price=0)
    customer = store.create_customer("Fuzz", "fuzz@x.io")
    store.create_subscription(customer.id, "plan_pro")
    _, key = store.create_api_key(["billing:*"])
    yield create_app(store), key
    store.engine.dispose()
    if request.param == "postgresql":
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(scope="module")
def api_schema(billing: tuple[Any, str]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", billing[0])


def test_no_server_errors_and_documented_answers(api_schema: Any, billing: tuple[Any, str]) -> None:
    headers = {"Authorization": f"Bearer {billing[1]}"}
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 19
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=checks)

        fuzz()


def test_the_schema_covers_every_route(api_schema: Any) -> None:
    paths = set(api_schema.raw_schema["paths"])
    assert paths == {
        "/api/v1/customers",
        "/api/v1/customers/{customer_id}",
        "/api/v1/plans",
        "/api/v1/subscriptions",
        "/api/v1/subscriptions/{subscription_id}",
        "/api/v1/usage-records",
        "/api/v1/invoices",
        "/api/v1/invoices/{invoice_id}/pay",
        "/api/v1/invoices/{invoice_id}/payment-failed",
        "/api/v1/invoices/{invoice_id}/void",
        "/api/v1/events",
        "/api/v1/budgets",
        "/api/v1/routing-policies",
        "/api/v1/routing-policies/{policy_id}",
    }
