"""FATE names, checked where they enter, and the one check that a server-side path stays inside
its directory.

FATE Flow names files and directories after components, tables, models and parties, so taskhub
takes FATE's character set for them (letters, digits, `_`, `-`, `.`; model ids also `#`, which
FATE puts in the ids it generates: `guest-9999#host-10000#model`) and nothing that can separate
or climb a path: no `/`, `\\`, NUL, and never `.` or `..` alone.
"""
from __future__ import annotations

import os
import re

from .. import errors

MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_MODEL_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-#]*")
ROLES = ("guest", "host", "arbiter", "local")


def _check(value, what: str, pattern: re.Pattern, allowed: str) -> str:
    if not isinstance(value, str) or not value:
        raise errors.InvalidArgument(f"{what} must be a non-empty string")
    if len(value) > MAX_NAME or not pattern.fullmatch(value):
        raise errors.InvalidArgument(f"{what} {value[:60]!r} is not allowed: use at most {MAX_NAME} of {allowed},"
                                     " not starting with '.' or '-'")
    return value


def check_name(value, what: str) -> str:
    """A component name, table name or table namespace."""
    return _check(value, what, _NAME, "letters, digits, '_', '-', '.'")


def check_model(model_id: str, model_version: str) -> None:
    _check(model_id, "model_id", _MODEL_ID, "letters, digits, '_', '-', '.', '#'")
    check_name(model_version, "model_version")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise errors.InvalidArgument(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def inside(directory: str, path: str, what: str, label: str = "directory") -> str:
    """`path` (relative paths are taken from `directory`) with symlinks resolved, if that is inside
    `directory` (also resolved); else PermissionDenied."""
    root = os.path.realpath(directory)
    full = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([full, root]) != root or full == root:
        raise errors.PermissionDenied(f"{what} {path!r} is outside the server's {label} {root}")
    return full
