"""The committed reference stores resume with nothing recomputed: every cell of their spec is found in the
store under the hash the code computes today. A change to hashing, to a default that enters a config,
or to a spec would make `dct bench depth` silently retrain a reference; this test fails first."""

import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from bench.grid import run_grid
from bench.spec import load_spec
from bench.store import done_hashes

REPO = Path(__file__).resolve().parents[2]
# the stores whose committed spec is current (classifier, augment and paper-fidelity are older runs, kept
# with the hashes of their time; the README says which)
CURRENT = {"depth": 12, "world-target": 1, "transfer": 2, "methods": 18}


@pytest.mark.parametrize("name", sorted(CURRENT))
def test_a_reference_store_resumes_with_nothing_recomputed(name, tmp_path):
    store = tmp_path / name
    shutil.copytree(REPO / "results" / "reference" / name, store,
                    ignore=shutil.ignore_patterns("_cache", "artifacts", "figures"))
    spec = load_spec(REPO / "ablations" / f"{name}.toml", store=store)
    done = done_hashes(store)
    missing = [c.label for h, c in spec.cells.items() if h not in done]
    assert not missing, f"cells of ablations/{name}.toml that its reference store does not hold: {missing}"
    result = run_grid(spec, store=store, show_progress=False, console=Console(file=io.StringIO()))
    assert len(result.selected) == CURRENT[name]
    assert result.ran == [] and len(result.skipped) == CURRENT[name] and result.pending == []
