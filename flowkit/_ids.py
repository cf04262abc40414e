"""Run ids: short, random, safe in Redis keys and URLs."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """A new run id: 16 hex characters, random."""
    return secrets.token_hex(8)
