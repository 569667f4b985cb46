import io
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

import tests.bench.mlp_cell  # noqa: F401  registers the tiny_mlp cell kind


@pytest.fixture
def write_spec(tmp_path):
    """write_spec(toml_text, name="spec") -> path of a spec file whose store is inside tmp_path."""

    def write(text: str, name: str = "spec") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(textwrap.dedent(text).replace("STORE", str(tmp_path / "store").replace("\\", "/")))
        return path

    return write


@pytest.fixture
def quiet():
    return Console(file=io.StringIO(), width=200)

# fixtures of the search and scale tests (storage URLs, the tiny_mlp search space)
from tests.bench.workers import mlp_space, pg_url, storage_url, unique  # noqa: E402,F401
