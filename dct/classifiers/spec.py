"""Parsing of classifier spec strings: `<family>:<target>`, and the path / hub-id tests the families share.

Parsing is pure string and file-system work, so a bad spec fails in milliseconds, before any model is built.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dct.errors import ClassifierSpecError, ModelNotFoundError

_PREFIX = re.compile(r"[a-z][a-z0-9_-]*")
# A hub id is "owner/name" (one slash, no spaces); anything else with a slash is a path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def split_spec(spec: str, accepted: list[str]) -> tuple[str, str]:
    """`"timm:resnet18"` -> `("timm", "resnet18")`; ClassifierSpecError naming the spec and the accepted prefixes."""
    if not isinstance(spec, str):
        raise ClassifierSpecError(f"classifier spec must be a string like 'timm:resnet18', got {spec!r}")
    prefix, sep, target = spec.strip().partition(":")
    prefix = prefix.strip().lower()
    listing = ", ".join(f"'{p}:'" for p in accepted)
    if not sep or not prefix:
        raise ClassifierSpecError(
            f"classifier spec {spec!r} has no family prefix; write '<family>:<target>' with one of {listing}")
    if prefix not in accepted:
        raise ClassifierSpecError(f"unknown classifier family {prefix!r} in spec {spec!r}; accepted: {listing}")
    target = target.strip()
    if not target:
        raise ClassifierSpecError(f"classifier spec {spec!r} names no model after '{prefix}:'")
    return prefix, target


def split_ensemble(target: str) -> list[str]:
    """Split `a:x,b:y` at the commas that start a new `<family>:` member, so that a path holding a comma
    (but not ",word:") survives; unknown families among the members are then reported by split_spec."""
    return [p.strip() for p in re.split(r",\s*(?=[A-Za-z][\w-]*:)", target)]


def split_weights(target: str) -> tuple[str, str | None]:
    """`name@file` -> `(name, file)`; the file may itself hold '@', so split at the first one only."""
    name, sep, weights = target.partition("@")
    if sep and not weights.strip():
        raise ClassifierSpecError(f"'{target}' has an '@' but no weights file after it")
    return name.strip(), (weights.strip() if sep else None)


def looks_like_path(target: str) -> bool:
    return target.startswith((".", "/", "~")) or "/" in target or os.sep in target


def local_path(target: str) -> Path:
    return Path(target).expanduser().resolve()


def existing_file(target: str, what: str) -> Path:
    path = local_path(target)
    if not path.is_file():
        raise ModelNotFoundError(f"{what} {target!r} not found (looked for {path})")
    return path


def existing_dir(target: str, what: str) -> Path:
    path = local_path(target)
    if not path.is_dir():
        hint = " (it is a file: to load a weights file use '<family>:<name>@<file>')" if path.is_file() else ""
        raise ModelNotFoundError(f"{what} {target!r} not found (looked for folder {path}){hint}")
    return path


def folder_or_hub_id(target: str, what: str) -> tuple[str, Path | None]:
    """An existing folder wins (as in transformers); else an 'owner/name' hub id; else a missing folder."""
    path = local_path(target)
    if path.is_dir():
        return str(path), path
    if _HUB_ID.fullmatch(target) or not looks_like_path(target):
        return target, None
    raise ModelNotFoundError(f"{what} {target!r} is neither an existing folder ({path}) nor a hub id 'owner/name'")
