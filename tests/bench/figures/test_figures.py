"""Figures and the report, from a small REAL store: four DCT cells run by the grid runner on a tiny random
pipeline with two tiny random classifiers (depth 1 and 2, a block-checkpointing cell, a cell guided by the
second classifier, every cell also scored by both classifiers), plus one cell that runs out of memory
(tests/bench/figures/figure_cells.py) recorded by the runner as a real `oom` row. The grid takes about a minute
on two cores, so the store, the figures and the report are built once per session."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
import textwrap
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import tests.bench.figures.figure_cells as figure_cells
from bench import columns as C
from bench.figures import draw as F
from bench.figures import data as D
from bench.figures.cli import figures_app, report_app
from bench.grid import run_grid
from bench.figures.report import build_report
from bench.store import CELLS_DIR, load_cells
from dct.errors import ConfigError, DCTError
from tests.required import missing

# Tests that use `store`: its tiny grid takes one to two minutes on two shared cores.
slow = pytest.mark.slow

TRAIN = """
fid = false
classes = [0, 1]
steps = 3
eval_steps = 2
eval_seeds = 2
max_epochs = 3
images_per_update = 2
rollout_batch = 2
"""


def _timm_classifier(folder, seed: int):
    import timm
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    model = timm.create_model("test_resnet", num_classes=10, pretrained=False)
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    cfg = {"architecture": "test_resnet", "num_classes": 10, "label_names": [f"c{i}" for i in range(10)],
           "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3,
                              "interpolation": "bilinear", "crop_pct": 1.0, "num_classes": 10}}
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="session")
def store(tmp_path_factory, tiny_sd_dir, tiny_timm_dir):
    root = tmp_path_factory.mktemp("figure-store")
    clf0 = f"timm:{tiny_timm_dir}"
    clf1 = f"timm:{_timm_classifier(root / 'clf1', seed=1)}"
    fixed = textwrap.dedent(f"""
        [fixed]
        model = "{tiny_sd_dir}"
        classifier = "{clf0}"
        judge = "{clf0}"
        eval_classifiers = ["{clf0}", "{clf1}"]
        """) + TRAIN
    dct_spec = root / "tiny-depth.toml"
    dct_spec.write_text(textwrap.dedent("""
        [experiment]
        name = "tiny-depth"
        cell = "dct"
        """) + fixed + textwrap.dedent(f"""
        [axes]
        depth = [1, 2]

        [[include]]
        depth = 2
        checkpointing = "block"

        [[include]]
        depth = 1
        classifier = "{clf1}"
        """))
    oom_spec = root / "tiny-oom.toml"
    oom_spec.write_text(textwrap.dedent(f"""
        [experiment]
        name = "tiny-depth"
        cell = "{figure_cells.KIND}"
        """) + fixed + "\n[axes]\ndepth = [3]\n")
    quiet = Console(file=io.StringIO())
    folder = root / "store"
    for spec in (dct_spec, oom_spec):
        result = run_grid(spec, store=folder, device="cpu", console=quiet, show_progress=False)
        assert result.interrupted_by is None
    cells = load_cells(folder)
    assert sorted(cells[C.STATUS]) == ["ok"] * 4 + ["oom"], cells[[C.LABEL, C.STATUS, C.ERROR]]
    return folder


@pytest.fixture(scope="session")
def drawn(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return F.draw_figures(store, out=out, formats=("png", "svg"))


@pytest.fixture(scope="session")
def report(store, tmp_path_factory):
    return build_report([store], out=tmp_path_factory.mktemp("report"))


# --- figures ---------------------------------------------------------------------------------------


@slow
def test_every_figure_is_drawn_from_a_real_store(drawn):
    # every figure of a DCT store; the augment and methods experiments' figures need their own stores
    own = ["augment-accuracy-vs-k", "methods-accuracy-vs-cost"]
    assert [s.kind for s in drawn.skipped] == own
    assert {d.kind for d in drawn.drawn} == {k.name for k in F.FIGURES} - set(own)
    assert len([d for d in drawn.drawn if d.kind == "examples"]) == 4  # one image grid per finished cell
    for fig in drawn.drawn:
        assert set(fig.files) == {"png", "svg"}
        png, svg = fig.files["png"], fig.files["svg"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, png
        ET.parse(svg)  # well-formed
        assert fig.title and fig.caption
    index = json.loads((drawn.out / F.INDEX_FILE).read_text())
    assert {f["stem"] for f in index["drawn"]} == {d.stem for d in drawn.drawn}


@slow
def test_out_of_memory_cell_is_marked_where_it_was_asked_for(store, drawn):
    oom = load_cells(store).set_index(C.STATUS).loc[C.STATUS_OOM]
    assert oom[C.ERROR].startswith("MemoryError") and oom[D.DEPTH] == 3
    by_stem = {d.stem: d for d in drawn.drawn}
    for stem in ("memory-vs-depth", "step-time-vs-depth"):
        fig = by_stem[stem]
        assert any(m.startswith("OOM at depth 3") for m in fig.marks), fig.marks
        # SVG text stays text (svg.fonttype none): the label is in the file, next to the x marker
        texts = [t.text for t in ET.parse(fig.files["svg"]).iter() if t.tag.endswith("text") and t.text]
        assert "OOM" in texts
    # an accuracy figure does not mark it: the cell has no accuracy to be missing from
    assert by_stem["accuracy-vs-depth"].marks == []


@slow
def test_transfer_columns_match_what_the_dct_cell_writes(store):
    cells = load_cells(store)
    specs = json.loads(cells[D.EVAL_CLASSIFIERS].iloc[0])
    keys = D.eval_keys(cells)
    assert sorted(keys) == sorted(D.eval_key(s) for s in specs)
    names = D.eval_key_names(cells)
    assert sorted(names.values()) == sorted(D.short_spec(s) for s in specs)
    assert all("/" not in n for n in names.values())  # folders shortened to their names


def _store_of(store, tmp_path, name: str, label: str):
    """A store holding only the cell row of one cell of `store` (no curves, no artifacts)."""
    folder = tmp_path / name
    (folder / CELLS_DIR).mkdir(parents=True)
    row = load_cells(store).set_index(C.LABEL).loc[label]
    part = next((store / CELLS_DIR).glob(f"{row[C.CONFIG_HASH]}-*.parquet"))
    shutil.copy(part, folder / CELLS_DIR / part.name)
    return folder


@slow
def test_figures_a_store_cannot_support_are_skipped_with_a_reason(store, tmp_path):
    one = F.draw_figures(_store_of(store, tmp_path, "one", "depth=2"), out=tmp_path / "o1", formats=("png",))
    assert [d.kind for d in one.drawn] == ["transfer-matrix"]  # one cell scored by two classifiers is enough
    reasons = {s.kind: s.reason for s in one.skipped}
    assert set(reasons) == {k.name for k in F.FIGURES} - {"transfer-matrix"}
    assert "only one depth" in reasons["memory-vs-depth"]
    assert "at least two ok cells" in reasons["pareto-memory-accuracy"]
    assert "only one guiding classifier" in reasons["classifier-comparison"]
    assert "no curves" in reasons["training-curves"]
    assert "example images" in reasons["examples"]

    failed = F.draw_figures(_store_of(store, tmp_path, "failed", "depth=3"), out=tmp_path / "o2")
    assert failed.drawn == [] and "no ok cell" in {s.kind: s.reason for s in failed.skipped}["memory-vs-depth"]

    empty = tmp_path / "empty"
    (empty / CELLS_DIR).mkdir(parents=True)
    assert {s.reason for s in F.draw_figures(empty, out=tmp_path / "o3").skipped} == {"the store has no cells"}


@slow
def test_a_redraw_removes_figures_it_no_longer_makes(store, tmp_path):
    out = tmp_path / "figs"
    F.draw_figures(store, out=out, formats=("png",), only=["memory-vs-depth", "examples"])
    assert len(list(out.glob("examples-*.png"))) == 4
    F.draw_figures(store, out=out, formats=("png",), only=["examples"], example_cells=1)
    assert len(list(out.glob("examples-*.png"))) == 1
    assert (out / "memory-vs-depth.png").is_file()  # other kinds are left alone
    with pytest.raises(ConfigError, match="unknown figure"):
        F.draw_figures(store, out=out, only=["nope"])


def test_full_depth_sits_at_its_number_of_gradient_calls():
    cells = pd.DataFrame({D.DEPTH: [1, 4, "full", "full"], D.GRAD_CALLS: [1, 4, 20, None],
                          C.STATUS: ["ok", "ok", "ok", "oom"]})
    out = D.add_depth(cells)
    assert list(out[D.DEPTH_X]) == [1, 4, 20, 20]  # the failed cell borrows the count of its ok twin
    assert list(out[D.DEPTH_TEXT]) == ["1", "4", "full (20)", "full (20)"]
    only_failed = D.add_depth(pd.DataFrame({D.DEPTH: [2, "full"], C.STATUS: ["ok", "oom"]}))
    assert list(only_failed[D.DEPTH_X]) == [2, 4]  # no count anywhere: one doubling past the deepest


def test_pareto_front_keeps_cells_no_other_beats():
    memory = [1.0, 2.0, 2.0, 3.0, 4.0]
    accuracy = [0.5, 0.7, 0.6, 0.7, 0.9]
    assert D.pareto_front(memory, accuracy) == [True, True, False, False, True]


def test_memory_is_named_by_what_was_measured():
    gpu = pd.DataFrame({C.DEVICE: ["cuda:0"] * 2, C.DEVICE_NAME: ["NVIDIA H100 80GB HBM3, 79.1 GiB, CUDA 12.8"] * 2})
    assert D.memory_kind(gpu) == "CUDA allocated"
    assert D.device_memory_bytes(gpu) == pytest.approx(79.1 * 2**30)  # the dotted capacity line
    cpu = pd.DataFrame({C.DEVICE: ["cpu"], C.DEVICE_NAME: ["AMD EPYC, 2 of 2 cores"]})
    assert D.memory_kind(cpu) == "CPU RSS" and D.device_memory_bytes(cpu) is None
    mixed = pd.concat([gpu, gpu.assign(**{C.DEVICE_NAME: "NVIDIA H200, 139.8 GiB, CUDA 12.8"})])
    assert D.device_memory_bytes(mixed) is None  # two GPU sizes: no single line to draw


def test_short_names_of_classifier_specs():
    assert D.short_spec("timm:/runs/x/clf0") == "timm:clf0"
    assert D.short_spec("hf:google/vit-large-patch16-224") == "hf:google/vit-large-patch16-224"
    assert D.short_spec("world:guide-printed") == "guide-printed"
    assert D.short_spec("ensemble:world:a,timm:/m/b") == "ensemble(a + timm:b)"
    assert D.short_spec(None) == "default guide"


# --- command line ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root_cli():
    # mounted as the root cli.py mounts them
    app = typer.Typer()
    app.add_typer(figures_app, name="figures")
    app.add_typer(report_app, name="report")
    return app


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps lines at the terminal's width


@slow
def test_dct_figures_command(root_cli, store, tmp_path):
    out = tmp_path / "cli"
    done = CliRunner().invoke(root_cli, ["figures", "--results", str(store), "--out", str(out), "--format", "png",
                                         "--only", "memory-vs-depth", "--only", "transfer-matrix"])
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in out.glob("*.png")) == ["memory-vs-depth.png", "transfer-matrix.png"]
    assert "OOM at depth 3" in _flat(done.output)

    listed = CliRunner().invoke(root_cli, ["figures", "--results", str(store), "--list"])
    assert listed.exit_code == 0 and "transfer-matrix" in _flat(listed.output)
    bad = CliRunner().invoke(root_cli, ["figures", "--results", str(store), "--format", "gif"])
    assert bad.exit_code == 2 and "png, svg, pdf" in _flat(bad.output)
    missing = CliRunner().invoke(root_cli, ["figures", "--results", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not a result store" in _flat(missing.output)


@slow
def test_dct_report_command_needs_out_for_several_stores(root_cli, store, tmp_path):
    done = CliRunner().invoke(root_cli, ["report", "--results", str(store), "--results", str(store)])
    assert done.exit_code == 2 and "--out" in _flat(done.output)
    with pytest.raises(DCTError):
        build_report([tmp_path / "nowhere"], out=tmp_path)


# --- report ------------------------------------------------------------------------------------------


@slow
def test_report_html_is_self_contained_with_provenance(store, report):
    page = report.html.read_text()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == report.n_figures > 0
    for src in images:  # every image is inline and decodes as PNG
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # nothing outside the file
    cells = load_cells(store)
    for value in set(cells[C.CONFIG_HASH]) | set(cells[C.SPEC_HASH]) | set(cells[C.GIT_SHA]):
        assert value in page
    assert "Provenance" in page and "version" in page and "MemoryError" in page
    assert "[experiment]" in page  # the spec files' text, from the store's specs/ folder
    assert "n = 12 images" in page  # sample counts in the captions: 2 classes x 3 training runs x 2 seeds


@slow
def test_report_markdown_links_the_png_files(report):
    text = report.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == report.n_figures
    for link in links:
        assert (report.markdown.parent / link).is_file()
    assert "| config hash |" in text and "```toml" in text


@slow
def test_report_of_two_stores_keeps_their_figures_apart(store, tmp_path):
    # two one-cell stores of the same folder name (results/a/depth, results/b/depth)
    a = _store_of(store, tmp_path / "a", "store", "depth=2")
    b = _store_of(store, tmp_path / "b", "store", "depth=1")
    built = build_report([a, b], out=tmp_path / "two")
    assert [s.folder for s in built.stores] == ["store", "store-2"]
    assert (tmp_path / "two" / "figures" / "store-2" / "transfer-matrix.png").is_file()
    page = built.html.read_text()
    assert page.count('<h2 id="store-') == 2 and page.count("<img ") == built.n_figures == 2


def _chromium_dom(html_path, tmp_path) -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing("chromium is not installed (Debian: apt-get install chromium)")
    done = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
                           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000",
                           html_path.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _image_check(dom: str) -> tuple[int, str]:
    body = re.search(r"<body[^>]*>", dom).group(0)
    loaded = re.search(r'data-images-loaded="(\d+)"', body)
    broken = re.search(r'data-images-broken="([^"]*)"', body)
    assert loaded and broken, f"the page's image check did not run: {body}"
    return int(loaded.group(1)), broken.group(1)


@slow
def test_report_renders_in_headless_chromium_without_broken_images(report, tmp_path):
    loaded, broken = _image_check(_chromium_dom(report.html, tmp_path))
    assert (loaded, broken) == (report.n_figures, "")

    # the check itself catches a broken image: corrupt one and look again
    page = report.html.read_text()
    damaged = tmp_path / "damaged.html"
    damaged.write_text(re.sub(r'src="data:image/png;base64,[^"]+" alt="memory-vs-depth"',
                              'src="data:image/png;base64,AAAA" alt="memory-vs-depth"', page, count=1))
    loaded, broken = _image_check(_chromium_dom(damaged, tmp_path))
    assert (loaded, broken) == (report.n_figures - 1, "memory-vs-depth")
