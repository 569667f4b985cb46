"""Checks that need something outside Python (a PostgreSQL server, a Chromium browser).

On a developer's machine a missing one skips its tests, saying why. Under CI (.ci/run sets DCT_CI=1) a
skip would let CI go green without the check, so the test fails instead, unless DCT_ALLOW_SKIP=1.
"""

from __future__ import annotations

import os

import pytest


def missing(why: str):
    """Skip, or under CI fail, because `why` (what is missing and how to get it)."""
    if os.environ.get("DCT_CI") == "1" and os.environ.get("DCT_ALLOW_SKIP") != "1":
        pytest.fail(f"{why}; CI (DCT_CI=1) requires this check to run (DCT_ALLOW_SKIP=1 allows the skip)",
                    pytrace=False)
    pytest.skip(why)
