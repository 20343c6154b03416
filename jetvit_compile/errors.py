"""Errors a user can act on. Each carries the CLI exit code it maps to.

Messages name the problem and the fix; the CLI prints them on one line, never with a traceback.
"""
from __future__ import annotations


class JetViTError(Exception):
    """Base class of every error the user is meant to read."""

    exit_code = 1


class UsageError(JetViTError):
    """Bad arguments: a layout that does not parse, a shape string, a missing file."""

    exit_code = 2


class UnsupportedModelError(JetViTError):
    """The model cannot be handled, e.g. no attention was found or its grid cannot be inferred."""

    exit_code = 3


class RewriteError(JetViTError):
    """A rewrite or build step failed."""

    exit_code = 4


class VerificationError(JetViTError):
    """The rewritten or compiled model does not agree with the reference numerically."""

    exit_code = 5
