"""Errors the `avatar obs` command reports as one line."""

from __future__ import annotations


class NodeUnavailable(Exception):
    """A control was asked for while no node session is running."""


class SetupError(Exception):
    """The command cannot start as configured; the message says what to change."""
