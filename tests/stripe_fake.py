"""A small stateful Stripe, on a local port, for the outbound tests: the stripe library
talks to it through its base-URL setting (``StripeClient(base_addresses={"api": ...})``).

It speaks Stripe's wire format (form-encoded requests with bracketed keys, JSON objects
shaped like Stripe's, Stripe's error bodies and HTTP statuses, idempotency keys replayed or
refused), keeps customers, subscriptions, schedules, payment methods, setup intents, meter
events and portal sessions, and records the webhook events a real Stripe would send
(``events``). ``fail_next(status, error)`` makes the next request fail as Stripe would.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

from billing_gateway.natsd import free_port

from .stripe_payloads import MONTH, customer, event, subscription

API_KEY = "sk_test_fake_0123456789"
DECLINING_CARD = "pm_card_chargeDeclined"


class StripeError(Exception):
    def __init__(
        self, status: int, kind: str, message: str, code: str | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": kind, "message": message, "code": code, "param": param}}


def missing(what: str, object_id: str, param: str = "id", status: int = 404) -> StripeError:
    return StripeError(
        status, "invalid_request_error", f"No such {what}: '{object_id}'", "resource_missing", param
    )


def nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``items[0][price]=p`` -> ``{"items": [{"price": "p"}]}`` (Stripe's form encoding)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node: Any) -> Any:
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [lists(node[k]) for k in sorted(node, key=int)]
            return {k: lists(v) for k, v in node.items()}
        return node

    converted: dict[str, Any] = lists(root)
    return converted


class FakeStripe:
    def __init__(self, now: int) -> None:
        self.now = now
        self.prices = {"price_pro", "price_team"}
        self.customers: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.schedules: dict[str, dict[str, Any]] = {}
        self.payment_methods: dict[str, dict[str, Any]] = {}
        self.meter_events: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any], str | None]] = []
        self._replies: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._failures: list[StripeError] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.url = ""

    def fail_next(self, status: int, kind: str, message: str, code: str | None = None) -> None:
        self._failures.append(StripeError(status, kind, message, code))

    def add_card(self, customer_id: str | None, pm: str | None = None, brand: str = "visa") -> str:
        pm = pm or f"pm_{next(self._ids):08d}"
        self.payment_methods[pm] = {
            "id": pm, "object": "payment_method", "type": "card", "customer": customer_id,
            "created": self.now,
            "card": {"brand": brand, "last4": "4242", "exp_month": 12, "exp_year": 2030, "funding": "credit"},
            "billing_details": {"email": None, "name": None}, "livemode": False, "metadata": {},
        }  # fmt: skip
        return pm

    # ---- the HTTP side -----------------------------------------------------------------

    def handle(
        self, method: str, path: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any]:
        with self._lock:
            key = headers.get("idempotency-key")
            self.requests.append((method, path, params, key))
            if headers.get("authorization") != f"Bearer {API_KEY}":
                return 401, {
                    "error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}
                }
            if self._failures:
                failure = self._failures.pop(0)
                return failure.status, failure.body
            digest = hashlib.sha256(json.dumps([method, path, params], sort_keys=True).encode()).hexdigest()
            if key is not None and key in self._replies:
                seen, status, body = self._replies[key]
                if seen != digest:
                    said = f"Keys for idempotent requests can only be used with the same parameters: {key}"
                    return 400, {"error": {"type": "idempotency_error", "message": said}}
                return status, body
            try:
                status, body = 200, self._route(method, path, params)
            except StripeError as exc:
                status, body = exc.status, exc.body
            if key is not None and method == "POST":
                self._replies[key] = (digest, status, body)
            return status, body

    def _route(self, method: str, path: str, p: dict[str, Any]) -> Any:
        parts = path.strip("/").split("/")[1:]  # without "v1"
        match method, parts:
            case "POST", ["customers"]:
                return self._new_customer(p)
            case "GET", ["customers", cus]:
                return self._customer(cus)
            case "POST", ["customers", cus]:
                found = self._customer(cus)
                default = p.get("invoice_settings", {}).get("default_payment_method")
                if default is not None:
                    found["invoice_settings"]["default_payment_method"] = default
                found |= {k: p[k] for k in ("name", "email") if k in p}
                self._emit("customer.updated", found)
                return found
            case "GET", ["customers", cus, "payment_methods"]:
                self._customer(cus)
                data = [m for m in self.payment_methods.values() if m["customer"] == cus]
                return {"object": "list", "data": data, "has_more": False, "url": path}
            case "POST", ["subscriptions"]:
                return self._new_subscription(p)
            case "GET", ["subscriptions", sub]:
                return self._subscription(sub)
            case "POST", ["subscriptions", sub]:
                return self._update_subscription(sub, p)
            case "DELETE", ["subscriptions", sub]:
                found = self._subscription(sub)
                found |= {"status": "canceled", "canceled_at": self.now, "ended_at": self.now}
                self._emit("customer.subscription.deleted", found)
                return found
            case "POST", ["subscription_schedules"]:
                sub = self._subscription(p["from_subscription"])
                schedule = {"id": f"sub_sched_{next(self._ids):08d}", "object": "subscription_schedule",
                            "subscription": sub["id"], "phases": [], "end_behavior": "release"}  # fmt: skip
                self.schedules[schedule["id"]] = schedule
                return schedule
            case "POST", ["subscription_schedules", sched]:
                if sched not in self.schedules:
                    raise missing("subscription_schedule", sched)
                self.schedules[sched] |= {
                    "phases": p.get("phases", []),
                    "end_behavior": p.get("end_behavior"),
                }
                return self.schedules[sched]
            case "POST", ["billing", "meter_events"]:
                identifier = p.get("identifier") or f"mev_{next(self._ids)}"
                self.meter_events.setdefault(identifier, {"object": "billing.meter_event", **p})
                return self.meter_events[identifier]
            case "POST", ["billing_portal", "sessions"]:
                self._customer(p["customer"])
                sid = f"bps_{next(self._ids):08d}"
                return {"id": sid, "object": "billing_portal.session", "customer": p["customer"],
                        "return_url": p.get("return_url"),
                        "url": f"https://billing.stripe.test/p/session/{sid}"}  # fmt: skip
            case "POST", ["setup_intents"]:
                self._customer(p["customer"])
                sid = f"seti_{next(self._ids):08d}"
                return {"id": sid, "object": "setup_intent", "customer": p["customer"],
                        "client_secret": f"{sid}_secret_fake", "status": "requires_payment_method",
                        "usage": p.get("usage", "off_session")}  # fmt: skip
            case "GET", ["payment_methods", pm]:
                return self._payment_method(pm)
            case "POST", ["payment_methods", pm, "detach"]:
                found = self._payment_method(pm)
                found["customer"] = None
                return found
            case "POST", ["invoices", "create_preview"]:
                return self._preview(p)
            case "GET", ["invoices", inv]:
                raise missing("invoice", inv)
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path})")

    # ---- objects -----------------------------------------------------------------------

    def _emit(self, event_type: str, obj: dict[str, Any]) -> None:
        self.now += 1
        self.events.append(event(event_type, json.loads(json.dumps(obj)), created=self.now))

    def _new_customer(self, p: dict[str, Any]) -> dict[str, Any]:
        cus = f"cus_fake{next(self._ids):08d}"
        found = customer(cus, tenant_id=p.get("metadata", {}).get("tenant_id"), name=p.get("name", ""),
                         email=p.get("email", ""), created=self.now)  # fmt: skip
        self.customers[cus] = found
        self._emit("customer.created", found)
        return found

    def _customer(self, cus: str) -> dict[str, Any]:
        if cus not in self.customers:
            raise missing("customer", cus)
        return self.customers[cus]

    def _subscription(self, sub: str) -> dict[str, Any]:
        if sub not in self.subscriptions:
            raise missing("subscription", sub)
        return self.subscriptions[sub]

    def _payment_method(self, pm: str) -> dict[str, Any]:
        if pm not in self.payment_methods:
            raise missing("payment_method", pm)
        return self.payment_methods[pm]

    def _price(self, price: str, param: str) -> str:
        if price not in self.prices:
            raise missing("price", price, param, status=400)
        return price

    def _new_subscription(self, p: dict[str, Any]) -> dict[str, Any]:
        cus = self._customer(p.get("customer", ""))
        price = self._price(p["items"][0]["price"], "items[0][price]")
        if cus["invoice_settings"]["default_payment_method"] == DECLINING_CARD:
            raise StripeError(402, "card_error", "Your card was declined.", "card_declined")
        trial = int(p.get("trial_period_days", 0))
        sub = f"sub_fake{next(self._ids):08d}"
        end = self.now + (trial * 86_400 if trial else MONTH)
        tenant = p.get("metadata", {}).get("tenant_id")
        found = subscription(sub, cus["id"], status="trialing" if trial else "active", price_id=price,
                             start=self.now, end=end, tenant_id=tenant)  # fmt: skip
        found["created"] = self.now
        self.subscriptions[sub] = found
        self._emit("customer.subscription.created", found)
        return found

    def _update_subscription(self, sub: str, p: dict[str, Any]) -> dict[str, Any]:
        found = self._subscription(sub)
        if found["status"] == "canceled":
            raise StripeError(400, "invalid_request_error", "A canceled subscription can only update its "
                              "cancellation_details and metadata.", "resource_missing")  # fmt: skip
        if "cancel_at_period_end" in p:
            found["cancel_at_period_end"] = p["cancel_at_period_end"] == "true"
        for change in p.get("items", []):
            item = found["items"]["data"][0]
            if change.get("id") != item["id"]:
                raise missing("subscription_item", change.get("id", ""), "items[0][id]", status=400)
            item["price"] = {**item["price"], "id": self._price(change["price"], "items[0][price]")}
        self._emit("customer.subscription.updated", found)
        return found

    def _preview(self, p: dict[str, Any]) -> dict[str, Any]:
        cus = self._customer(p.get("customer", ""))
        subs = [
            s for s in self.subscriptions.values() if s["customer"] == cus["id"] and s["status"] != "canceled"
        ]
        if "subscription" in p:
            subs = [self._subscription(p["subscription"])]
        if not subs:
            raise StripeError(
                404, "invalid_request_error", "No upcoming invoices for customer", "invoice_upcoming_none"
            )
        lines = [{"description": f"1 x {s['items']['data'][0]['price']['id']}", "amount": 2900} for s in subs]
        return {"object": "invoice", "customer": cus["id"], "currency": "usd", "amount_due": 2900 * len(subs),
                "total": 2900 * len(subs), "next_payment_attempt": self.now + MONTH,
                "lines": {"object": "list", "data": lines, "has_more": False}}  # fmt: skip


@contextmanager
def running(now: int) -> Iterator[FakeStripe]:
    """A :class:`FakeStripe` serving on a free local port (``fake.url``)."""
    fake = FakeStripe(now)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            url = urlparse(self.path)
            params = nest(parse_qsl(raw or url.query, keep_blank_values=True))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = fake.handle(self.command, url.path, params, headers)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Request-Id", f"req_fake{len(fake.requests)}")
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
