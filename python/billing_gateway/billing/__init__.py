"""The billing side: the source of truth the gateways replicate.

A reference Billing service (REST API over SQLite or PostgreSQL) whose every state
change writes its event to a transactional outbox, a dispatcher that publishes the
outbox to NATS JetStream, a scheduler that closes billing cycles, and the ingestion
of gateway usage.
"""
