"""API keys: created with their scopes (only the secret's hash is kept), looked up by secret."""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa

from billing_gateway.billing.domain import NotFound
from billing_gateway.billing.schema import api_keys, customers

from .base import StoreBase, new_id
from .records import Principal

__all__ = ["ApiKeys"]


def _hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys(StoreBase):
    def create_api_key(self, scopes: list[str], customer_id: str | None = None) -> tuple[str, str]:
        """A new key: ``(key_id, secret)``. Only the secret's hash is stored."""
        key_id = new_id("key")
        secret = f"bgk_{secrets.token_urlsafe(32)}"
        with self.transaction() as conn:
            if customer_id is not None and self._find(conn, customers, customer_id) is None:
                raise NotFound(f"customer {customer_id} not found")
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    key_hash=_hash_key(secret),
                    scopes=" ".join(sorted(set(scopes))),
                    customer_id=customer_id,
                    created_at=self.clock(),
                )
            )
        return key_id, secret

    def authenticate(self, secret: str) -> Principal | None:
        query = sa.select(api_keys.c.id, api_keys.c.scopes, api_keys.c.customer_id)
        with self._reading() as conn:
            row = conn.execute(query.where(api_keys.c.key_hash == _hash_key(secret))).first()
        if row is None:
            return None
        key_id, scopes, customer_id = row
        return Principal(key_id, frozenset(scopes.split()), customer_id)
