"""Prompt safety (`policy.py`) and its default policy (`default_policy.json`)."""
