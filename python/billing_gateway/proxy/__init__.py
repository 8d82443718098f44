"""The OpenAI-compatible LLM proxy (``billing-gateway proxy --config FILE``; the ``[proxy]``
extra): budgets enforced with holds, requests routed by policy, failover, exact charges."""

from __future__ import annotations

from .config import ConfigError, ProxyConfig, TargetConfig, load_config, parse_config

__all__ = ["ConfigError", "ProxyConfig", "TargetConfig", "load_config", "parse_config"]
