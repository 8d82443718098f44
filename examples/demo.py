"""The whole system on one machine, driven by the official ``openai`` client (``make demo``).

Started here, each as a real process, all in one temporary data directory: the embedded
broker (nats-server with JetStream), the billing service (SQLite, with its outbox
dispatcher and usage ingestion), the LLM proxy, and two fake OpenAI-compatible upstreams
(an expensive model and a cheap one). Then a scripted session: a subscription created
through the billing API reaches the proxy; chat requests draw the budget down; a policy
moves the tenant to the cheap model when little budget is left; an upstream fails and
traffic fails over; the budget runs out (402); a plan upgrade lifts the limit at once;
the usage flows back to billing and shows on the invoice.

    python examples/demo.py [--keep-running]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import sqlalchemy as sa
from billing_gateway import from_micros
from billing_gateway.billing import BillingClient
from billing_gateway.billing.schema.tables import usage_records
from billing_gateway.billing.store import BillingStore
from billing_gateway.natsd import free_port

CLI = [sys.executable, "-m", "billing_gateway.cli"]
EXPENSIVE = {"model": "gpt-large", "input_price": "10.00", "output_price": "30.00", "tokens": 400}
CHEAP = {"model": "gpt-small", "input_price": "0.50", "output_price": "6.00", "tokens": 400}
API_KEY = "sk-demo-acme"
QUESTION = [{"role": "user", "content": "Summarise our Q3 numbers in one paragraph."}]


def money(value: Decimal | str | int) -> str:
    amount = from_micros(value) if isinstance(value, int) else Decimal(value)
    return f"${amount:.4f}"


def step(title: str) -> None:
    print(f"\n\033[1m{title}\033[0m")


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: {what} did not happen within {timeout:.0f}s")
        time.sleep(0.005)


class System:
    """The processes of the demo, stopped in reverse order at the end."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self, *args: str) -> str:
        done = subprocess.run([*CLI, "--data-dir", str(self.data), *args], capture_output=True, check=True)
        return done.stdout.decode().strip()

    def start(self, name: str, *args: str) -> None:
        log = open(self.data / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        command = [*CLI, "--data-dir", str(self.data), *args]
        self.processes.append((name, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))

    def __enter__(self) -> System:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        for _, process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        with contextlib.suppress(subprocess.CalledProcessError):
            self.run("broker", "stop")


def toml(doc: dict[str, Any]) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in doc.items() if not isinstance(v, dict | list)]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines += [f"[{key}]", *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())]
        elif isinstance(value, list):
            for item in value:
                lines += [f"[[{key}]]", *(f"{k} = {json.dumps(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


def proxy_config(port: int, tenant: str, upstreams: dict[str, int]) -> str:
    targets = [
        {"name": name, "base_url": f"http://127.0.0.1:{p}/v1", "api_key": "sk-up", "model": spec["model"],
         "input_price": spec["input_price"], "output_price": spec["output_price"]}
        for name, p, spec in (("expensive", upstreams["expensive"], EXPENSIVE),
                              ("cheap", upstreams["cheap"], CHEAP))
    ]  # fmt: skip
    policies = [
        {"id": "low-budget-goes-cheap", "priority": 10, "strategy": "failover", "targets": ["cheap"],
         "match": "has(budget.remaining_fraction) && budget.remaining_fraction < 0.3"},
        {"id": "default", "priority": 100, "match": "true", "strategy": "failover",
         "targets": ["expensive", "cheap"]},
    ]  # fmt: skip
    return toml({
        "listen": f"127.0.0.1:{port}", "default_max_tokens": 500, "cooldown_s": 2,
        "events": {"snapshot": "proxy.snap", "usage_every_s": 0.5},
        "tenants": {API_KEY: tenant}, "targets": targets, "policies": policies,
    })  # fmt: skip


class Session:
    """The scripted traffic, one printed line per request."""

    def __init__(self, proxy_url: str, tenant: str) -> None:
        self.proxy_url = proxy_url
        self.tenant = tenant
        self.client = openai.OpenAI(base_url=f"{proxy_url}/v1", api_key=API_KEY, max_retries=0)
        self.count = 0

    def ask(self, *, stream: bool = False) -> bool:
        """One request; prints what happened; False when it was refused."""
        self.count += 1
        label = f"   #{self.count:<3}{'stream' if stream else 'chat':<7}"
        spent_before = self.budget()["spent"]
        try:
            if stream:
                with self.client.chat.completions.with_streaming_response.create(
                    model="gpt-large", messages=QUESTION, stream=True, stream_options={"include_usage": True}
                ) as r:
                    chunks = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
                    headers, usage = r.headers, chunks[-1]["usage"]
            else:
                raw = self.client.chat.completions.with_raw_response.create(
                    model="gpt-large", messages=QUESTION
                )
                headers, done = raw.headers, raw.parse()
                assert done.usage is not None
                usage = done.usage.model_dump()
        except openai.APIStatusError as exc:
            left = money(exc.response.headers.get("x-budget-remaining", "0"))
            print(f"{label}HTTP {exc.status_code} {exc.code}: left {left}")
            return False
        tokens = f"{usage['prompt_tokens']}+{usage['completion_tokens']} tokens"
        budget = wait_for("the charge", self.settled)
        charged, left = money(budget["spent"] - spent_before), money(budget["remaining"])
        print(f"{label}200 via {headers['x-route-target']:<10} policy {headers['x-route-policy']:<22}"
              f"{tokens:<15} charged {charged}, left {left}")  # fmt: skip
        return True

    def settled(self) -> dict[str, Any] | None:
        """The budget once no hold is outstanding (a stream is charged right after its end)."""
        budget = self.budget()
        return budget if budget["reserved"] == 0 else None

    def budget(self) -> dict[str, Any]:
        """The tenant's row at the proxy (404 answers an error body without ``tenant_id``)."""
        result: dict[str, Any] = httpx.get(f"{self.proxy_url}/v1/budgets/{self.tenant}").json()
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep-running", action="store_true", help="leave everything running at the end")
    args = parser.parse_args()
    started = time.monotonic()
    data = Path(tempfile.mkdtemp(prefix="billing-gateway-demo-"))
    ports = {"billing": free_port(), "proxy": free_port(), "expensive": free_port(), "cheap": free_port()}
    with System(data) as system:
        broker_url = system.run("broker", "start").split()[0]
        admin = system.run("billing", "keys", "create", "--scope", "billing:*")
        system.start("billing", "billing", "serve", "--http", f"127.0.0.1:{ports['billing']}")
        for name, spec in (("expensive", EXPENSIVE), ("cheap", CHEAP)):
            address = f"127.0.0.1:{ports[name]}"
            system.start(name, "fake-upstream", "--http", address, "--model", spec["model"],
                         "--tokens", str(spec["tokens"]))  # fmt: skip
        billing_url = f"http://127.0.0.1:{ports['billing']}"
        proxy_url = f"http://127.0.0.1:{ports['proxy']}"
        print("billing-gateway: the whole system on this machine")
        print(f"   data directory  {data}")
        print(f"   broker          {broker_url} (embedded nats-server, JetStream)")
        print(f"   billing API     {billing_url}/api/v1 (SQLite; outbox dispatcher, usage ingestion)")
        print(f"   LLM proxy       {proxy_url}/v1 (OpenAI-compatible)")
        for name, spec in (("expensive", EXPENSIVE), ("cheap", CHEAP)):
            print(f"   upstream {name:<10} {spec['model']} at http://127.0.0.1:{ports[name]}/v1: "
                  f"${spec['input_price']} in / ${spec['output_price']} out per million tokens")  # fmt: skip
        auth = {"Authorization": f"Bearer {admin}"}
        wait_for("the billing API", lambda: httpx.get(f"{billing_url}/api/v1/plans", headers=auth).is_success)
        billing = BillingClient(billing_url, admin)
        starter = billing.create_plan(name="Starter", currency="USD", included_budget="0.10", price="9.00")
        pro = billing.create_plan(name="Pro", currency="USD", included_budget="5.00", price="49.00")
        customer = billing.create_customer("Acme Corp", "ops@acme.example")
        (data / "proxy.toml").write_text(proxy_config(ports["proxy"], customer.id, ports))
        system.start("proxy", "proxy", "--config", str(data / "proxy.toml"))
        session = Session(proxy_url, customer.id)
        wait_for("the proxy", lambda: httpx.get(f"{proxy_url}/readyz").is_success)

        step(f"1. Billing API: {customer.id} subscribes to Starter (budget {money(starter.included_budget)})")
        t0 = time.monotonic()
        sub = billing.create_subscription(customer.id, starter.id)
        wait_for("the subscription at the proxy", lambda: session.budget().get("tenant_id"))
        print(
            f"   the proxy had the budget {(time.monotonic() - t0) * 1000:.0f} ms after the API call returned"
        )

        step("2. Chat requests, streaming and not: each holds its worst case, then pays its usage")
        for i in range(3):
            session.ask(stream=i == 1)

        step("3. The expensive upstream fails (503, Retry-After: 2): the request fails over to the cheap one")
        httpx.post(f"http://127.0.0.1:{ports['expensive']}/_fake/config",
                   json={"fail_status": 503, "fail_count": 1, "retry_after": 2})  # fmt: skip
        session.ask()
        print("   (the expensive target is skipped until its Retry-After has passed)")
        time.sleep(2.1)

        step(
            "4. Spending on: under 30% of the budget left, policy low-budget-goes-cheap picks the cheap model"
        )
        while session.ask(stream=session.count % 3 == 0):
            pass
        print("   the budget is spent: requests get 402 (insufficient_quota), no upstream is called")

        step(
            f"5. Upgrade to Pro through the billing API (budget {money(pro.included_budget)}): lifted at once"
        )
        billing.update_subscription(sub.id, plan_id=pro.id, total_budget=pro.included_budget)
        wait_for("the upgrade at the proxy", lambda: session.budget()["plan_id"] == pro.id)
        session.ask()
        session.ask(stream=True)

        step("6. Usage flows back to billing (usage.reported events); closing the period invoices it")
        spent = session.budget()["spent"]
        store = BillingStore.open(str(data / "billing.db"))
        wait_for("the usage in billing", lambda: _usage_recorded(store, sub.id) == spent)
        print(
            f"   billing recorded {money(spent)} of usage for {sub.id}, the proxy's spend to the micro-unit"
        )
        period_end = billing.get_subscription(sub.id).period_end
        (invoice,) = store.close_due_cycles(now=period_end + timedelta(seconds=1))
        print(f"   invoice {invoice.id} ({invoice.status}), total {money(invoice.total)}:")
        for line in invoice.lines:
            print(f"     {line.kind:<6} {line.description:<56} {money(line.amount)}")
        store.engine.dispose()
        billing.close()

        print(f"\ndone in {time.monotonic() - started:.1f}s.")
        if not args.keep_running:
            print("Run `python examples/demo.py --keep-running` to keep it up and try it yourself.")
            return 0
        print(f"\nStill running (Ctrl-C stops it). Try:\n"
              f"   curl -s {proxy_url}/v1/chat/completions -H 'Authorization: Bearer {API_KEY}' \\\n"
              f"        -H 'Content-Type: application/json' -d '{{\"model\": \"gpt-large\", \"messages\": "
              f"[{{\"role\": \"user\", \"content\": \"hi\"}}]}}'\n"
              f"   curl -s {proxy_url}/v1/budgets/{customer.id}      # the budget, live\n"
              f"   curl -s {proxy_url}/metrics                       # Prometheus\n"
              f"   billing API: {billing_url}/api/v1 with 'Authorization: Bearer {admin}'\n"
              f"   logs: {data}/*.log")  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


def _usage_recorded(store: BillingStore, subscription_id: str) -> int:
    with store.engine.connect() as conn:
        amounts = conn.execute(
            sa.select(usage_records.c.amount).where(usage_records.c.subscription_id == subscription_id)
        ).scalars()
        return sum(amounts)


if __name__ == "__main__":
    sys.exit(main())
