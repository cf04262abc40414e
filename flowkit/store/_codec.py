"""Decoding Redis replies (flowkit's clients return bytes)."""

from __future__ import annotations


def decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    """A hash reply as text (undecodable bytes replaced)."""
    return {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
