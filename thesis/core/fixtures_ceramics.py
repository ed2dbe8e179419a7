"""Offline fixtures of the ceramics chapter's sources, in their real on-disk formats (see fixtures.py)."""

from __future__ import annotations
