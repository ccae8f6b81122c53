"""Errors the `avatar obs` command reports as one line."""

from __future__ import annotations


class NodeUnavailable(Exception):
    """A control was asked for while no node session is running."""


class SetupError(Exception):
    """The command cannot start as configured; the message says what to change."""


class SettingsError(SetupError):
    """What the command line asks for cannot work here (a port taken, a device that is not there):
    the user's own mistake, exit status 2 like any other usage error."""
