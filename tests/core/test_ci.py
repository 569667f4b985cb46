"""CI does not go green on skipped checks that matter: .ci/run fails, saying why, when it cannot provide
Chromium or PostgreSQL, and under CI a test missing one fails instead of skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


@pytest.fixture
def ci(tmp_path):
    """.ci/run in a copy of the repo's .ci folder, on a PATH of stubs: no chromium unless a test adds one,
    an apt-get that fails, a postgres.sh that fails unless told otherwise, and a venv whose pytest records
    the environment the test command would get."""
    root = tmp_path / "repo"
    (root / ".ci").mkdir(parents=True)
    shutil.copy(REPO / ".ci" / "run", root / ".ci" / "run")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "dirname", "id", "cat", "env"):
        os.symlink(shutil.which(tool), bin_ / tool)
    _stub(bin_ / "apt-get", 'echo "E: Unable to locate package $*" >&2; exit 100')
    _stub(bin_ / "python3", "exit 0")  # `python3 -m venv .venv`: the venv below is already there
    (root / ".venv" / "bin").mkdir(parents=True)
    _stub(root / ".venv" / "bin" / "pip", "exit 0")
    _stub(root / ".venv" / "bin" / "pytest", f"env > {tmp_path}/tests-ran")
    _stub(root / ".ci" / "postgres.sh", 'echo "postgres.sh: PostgreSQL is not installed and installing it needs root" '
                                        '>&2; exit 1')

    def run(**env):
        full = {"PATH": str(bin_), "HOME": str(tmp_path), **env}
        done = subprocess.run(["/bin/bash", str(root / ".ci" / "run")], env=full, capture_output=True, text=True,
                              timeout=60)
        ran = tmp_path / "tests-ran"
        return done, (ran.read_text() if ran.is_file() else None)

    run.bin, run.root = bin_, root
    return run


def test_ci_fails_saying_why_when_chromium_cannot_be_installed(ci):
    done, ran = ci()
    assert done.returncode == 1 and ran is None
    assert "CI failed: chromium is not installed" in done.stderr and "DCT_ALLOW_SKIP=1" in done.stderr


def test_ci_fails_saying_why_when_postgresql_cannot_start(ci):
    _stub(ci.bin / "chromium", "exit 0")
    done, ran = ci()
    assert done.returncode == 1 and ran is None
    assert "CI failed: PostgreSQL could not be started" in done.stderr


def test_ci_runs_the_tests_with_both_and_tells_them_they_are_in_ci(ci):
    _stub(ci.bin / "chromium", "exit 0")
    _stub(ci.root / ".ci" / "postgres.sh",
          'if [ "$1" = start ]; then echo "DCT_TEST_PG_URL=postgresql://dct:pw@127.0.0.1:1/dct" > "$2"; '
          'else echo stopped > "$2.stopped"; fi')
    done, ran = ci(TMPDIR=str(ci.root))
    assert done.returncode == 0, done.stderr
    assert "DCT_CI=1" in ran.splitlines() and "DCT_TEST_PG_URL=postgresql://dct:pw@127.0.0.1:1/dct" in ran
    assert (ci.root / "dct-postgres.env.stopped").is_file()  # the server is stopped on the way out


def test_a_laptop_may_allow_the_skips(ci):
    done, ran = ci(DCT_ALLOW_SKIP="1")
    assert done.returncode == 0, done.stderr
    assert "DCT_CI=1" in ran.splitlines() and "DCT_ALLOW_SKIP=1" in ran.splitlines()
    assert "skipped" in done.stderr


MISSING_TEST = """
from tests.required import missing

def test_needs_a_server():
    missing("no PostgreSQL server here")
"""


@pytest.mark.parametrize("env, outcome", [({}, "1 skipped"), ({"DCT_CI": "1"}, "1 failed"),
                                          ({"DCT_CI": "1", "DCT_ALLOW_SKIP": "1"}, "1 skipped")])
def test_a_missing_requirement_fails_under_ci_and_skips_elsewhere(tmp_path, env, outcome):
    (tmp_path / "test_needs.py").write_text(MISSING_TEST)
    base = {k: v for k, v in os.environ.items() if k not in ("DCT_CI", "DCT_ALLOW_SKIP")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs",
                           str(tmp_path / "test_needs.py")], cwd=tmp_path, capture_output=True, text=True,
                          env={**base, "PYTHONPATH": str(REPO), **env}, timeout=120)
    assert outcome in done.stdout, done.stdout
    assert "no PostgreSQL server here" in done.stdout
