"""A report of one or more result stores: one self-contained HTML page and its Markdown twin.

    dct report --results results/depth                      # -> results/depth/report/report.html, report.md
    dct report --results results/depth --results results/classifier --out reports/june
    from bench.figures.report import build_report
    built = build_report(["results/depth"], out="reports/depth")

report.html embeds every figure as a base64 PNG, so the one file opens anywhere (mail, a wiki, a laptop
without the store); report.md references the PNG files written next to it under figures/<store>/.
Both hold, per store: the figures with their captions and which figures were skipped and why, a table of
the cells (settings that vary, status, memory, time, accuracy with CIs, sample counts), the failed cells
with their errors, and provenance: git commits, package versions, devices and hosts, the spec files with
their hashes and text, and every config hash.

A small inline script checks, once the page has loaded, that every image decoded (naturalWidth > 0) and
writes the counts to <body data-images-loaded data-images-broken>, and into the page's footer; the tests
read them back from headless Chromium.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib.metadata
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dct.errors import ConfigError

from bench import columns as C
from bench.figures import data as D

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
FIGURES_DIR = "figures"
TOOL_PACKAGES = ("matplotlib", "seaborn", "pandas", "pyarrow")
EXAMPLE_CELLS = 8  # image grids per store in a report; `dct figures` draws one for every cell

IMAGE_CHECK_JS = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  document.body.setAttribute("data-images-loaded", String(imgs.length - broken.length));
  document.body.setAttribute("data-images-broken", broken.map(function (img) { return img.alt; }).join(" | "));
  var note = document.getElementById("image-check");
  if (note) {
    note.textContent = broken.length ? broken.length + " of " + imgs.length + " figures failed to load: " +
      broken.map(function (img) { return img.alt; }).join(", ") : "All " + imgs.length + " figures loaded.";
  }
});
"""

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { margin-top: 1.8rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .92rem; color: #444; max-width: 60rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.status-ok { color: #117733; } .status-oom, .status-error, .status-killed, .status-timeout { color: #AA3377;
  font-weight: bold; }
pre { background: #f7f7f7; padding: .6rem; overflow-x: auto; font-size: .8rem; }
.scroll { overflow-x: auto; max-width: 100%; }
.muted { color: #666; font-size: .9rem; } details { margin: .4rem 0; } code { font-size: .85rem; }
"""


@dataclass
class StoreReport:
    data: D.StoreData
    figures: object  # bench.figures.draw.FigureSet
    folder: str  # figures/<folder>/ under the report's folder


@dataclass
class BuiltReport:
    html: Path
    markdown: Path
    stores: list[StoreReport] = field(default_factory=list)

    @property
    def n_figures(self) -> int:
        return sum(len(s.figures.drawn) for s in self.stores)


# --- values as text ----------------------------------------------------------------------------------


def _missing(v) -> bool:
    if v is None or isinstance(v, (str, list, dict)):
        return v is None
    return bool(pd.isna(v))


def _bytes(v) -> str:
    if _missing(v):
        return "–"
    scale, unit = D.memory_unit(float(v))
    return f"{float(v) / scale:.2f} {unit}" if unit == "GiB" else f"{float(v) / scale:.0f} {unit}"


def _seconds(v) -> str:
    if _missing(v):
        return "–"
    return f"{float(v) * 1000:.0f} ms" if float(v) < 1 else f"{float(v):.3g} s"


def _acc(row, col: str) -> str:
    v = row.get(col)
    if _missing(v):
        return "–"
    lo, hi = row.get(f"{col}_lo"), row.get(f"{col}_hi")
    ci = "" if _missing(lo) or _missing(hi) else f" [{float(lo) * 100:.0f}, {float(hi) * 100:.0f}]"
    return f"{float(v) * 100:.1f}%{ci}"


def _gain(row) -> str:
    col = C.metric_col("acc_gain")
    v = row.get(col)
    if _missing(v):
        return "–"
    lo, hi = row.get(f"{col}_lo"), row.get(f"{col}_hi")
    ci = "" if _missing(lo) or _missing(hi) else f" [{float(lo) * 100:+.0f}, {float(hi) * 100:+.0f}]"
    return f"{float(v) * 100:+.1f} pp{ci}"


def _n_cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


def _plain(v) -> str:
    if _missing(v):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _first_line(text) -> str:
    if _missing(text):
        return ""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= 200 else line[:199] + "…"


# --- tables ------------------------------------------------------------------------------------------

# (header, function of a row -> text, numeric?, column that must exist for the table to show it)
def _cell_columns(cells: pd.DataFrame) -> list[tuple[str, object, bool]]:
    varying = D.varying_settings(cells)
    cols: list[tuple[str, object, bool]] = [
        ("config hash", lambda r: str(r[C.CONFIG_HASH]), False),
        ("status", lambda r: str(r[C.STATUS]), False),
    ]
    if C.ORIGIN in cells.columns and (cells[C.ORIGIN].astype(str) == "include").any():
        # an [[include]] cell's label ("reference sd15") says what its settings alone do not
        cols.append(("label", lambda r: D.short_label(r[C.LABEL]) if str(r.get(C.ORIGIN)) == "include" else "",
                     False))
    cols += [(D.setting_name(c), (lambda r, c=c: D.short_value(c, r[c])), False) for c in varying]
    if C.SEED in cells.columns and cells[C.SEED].nunique() > 1:
        cols.append(("seed", lambda r: _plain(r.get(C.SEED)), True))
    optional = [
        (C.COST_PEAK_BYTES, "peak memory", lambda r: _bytes(r.get(C.COST_PEAK_BYTES)), True),
        (C.STEP_TIME_MEDIAN_S, "step time (median)", lambda r: _seconds(r.get(C.STEP_TIME_MEDIAN_S)), True),
        (C.STEPS_TIMED, "steps timed", lambda r: _plain(r.get(C.STEPS_TIMED)), True),
        (D.ACC, "judge acc [95% CI]", lambda r: _acc(r, D.ACC), True),
        (D.PLAIN_ACC, "plain acc [95% CI]", lambda r: _acc(r, D.PLAIN_ACC), True),
        (C.metric_col("acc_gain"), "gain [95% CI]", _gain, True),
        (D.N_CLASSES, "classes", lambda r: _plain(r.get(D.N_CLASSES)), True),
        (D.EVAL_PER_CLASS, "eval images / class", lambda r: _plain(r.get(D.EVAL_PER_CLASS)), True),
        (D.EPOCHS_MEAN, "epochs (mean)", lambda r: _plain(r.get(D.EPOCHS_MEAN)), True),
        (C.metric_col("fid"), "FID", lambda r: _plain(r.get(C.metric_col("fid"))), True),
        (C.WALL_S, "cell wall time", lambda r: _seconds(r.get(C.WALL_S)), True),
    ]
    for col, header, fn, num in optional:
        if col in cells.columns and cells[col].notna().any():
            cols.append((header, fn, num))
    return cols


def cells_table(cells: pd.DataFrame) -> tuple[list[str], list[list[str]], list[bool]]:
    cols = _cell_columns(cells)
    order = cells.sort_values([c for c in (D.DEPTH_X, C.LABEL) if c in cells.columns], kind="stable")
    rows = [[fn(r) for _, fn, _ in cols] for _, r in order.iterrows()]
    return [h for h, _, _ in cols], rows, [n for _, _, n in cols]


def failures_table(cells: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    failed = cells[cells[C.STATUS] != C.STATUS_OK]
    rows = [[str(r[C.CONFIG_HASH]), str(r[C.LABEL]), str(r[C.STATUS]), _first_line(r.get(C.ERROR))]
            for _, r in failed.iterrows()]
    return ["config hash", "label", "status", "error"], rows


def _counts(series: pd.Series) -> list[tuple[str, int]]:
    values = series.map(lambda v: "–" if _missing(v) else str(v))
    return list(values.value_counts(sort=False).items())


def provenance(data: D.StoreData) -> dict:
    """What produced the store's rows, as lists of (value, number of cells), plus spec files and configs."""
    cells = data.cells
    out: dict = {}
    if C.GIT_SHA in cells.columns:
        sha = cells[C.GIT_SHA].map(lambda v: "–" if _missing(v) else str(v))
        dirty = (cells[C.GIT_DIRTY] if C.GIT_DIRTY in cells.columns
                 else pd.Series([None] * len(cells), index=cells.index))
        out["git"] = [(s, int((sha == s).sum()), bool(dirty[sha == s].fillna(False).astype(bool).any()))
                      for s in dict.fromkeys(sha)]
    out["packages"] = {c[len(C.VERSION_PREFIX):]: _counts(cells[c]) for c in cells.columns
                       if c.startswith(C.VERSION_PREFIX)}
    for key, col in (("devices", C.DEVICE_NAME), ("device kinds", C.DEVICE), ("hosts", C.HOSTNAME),
                     ("python", C.PYTHON_VERSION), ("cuda", C.CUDA_VERSION), ("cell kinds", C.CELL_KIND),
                     ("experiments", C.EXPERIMENT)):
        if col in cells.columns and cells[col].notna().any():
            out[key] = _counts(cells[col])
    specs = []
    if C.SPEC_HASH in cells.columns:
        for spec_hash, group in cells.groupby(cells[C.SPEC_HASH].fillna("–"), sort=False):
            files = sorted({str(v) for v in group.get(C.SPEC_FILE, pd.Series(dtype=object)).dropna()})
            saved = data.path / "specs" / f"{spec_hash}.toml"
            specs.append({"hash": spec_hash, "files": files, "cells": len(group),
                          "text": saved.read_text() if saved.is_file() else None})
    out["specs"] = specs
    configs = []
    for _, r in cells.iterrows():
        configs.append({"hash": str(r[C.CONFIG_HASH]), "label": str(r[C.LABEL]), "status": str(r[C.STATUS]),
                        "attempt": _plain(r.get(C.ATTEMPT_ID)), "started": _plain(r.get(C.STARTED_AT)),
                        "git": _plain(r.get(C.GIT_SHA))[:10], "config": _plain(r.get(C.CONFIG_JSON))})
    out["configs"] = configs
    times = [t for col in (C.STARTED_AT, C.FINISHED_AT) if col in cells.columns for t in cells[col].dropna()]
    out["time range"] = (min(times), max(times)) if times else None
    return out


def _tool_versions() -> list[tuple[str, str]]:
    out = []
    for name in TOOL_PACKAGES:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return out


# --- HTML --------------------------------------------------------------------------------------------


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _html_table(headers: list[str], rows: list[list[str]], numeric: list[bool] | None = None,
                status_col: int | None = None) -> str:
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            cls = "num" if numeric[i] else ""
            if status_col is not None and i == status_col:
                cls = f"status-{value}"
            cells.append(f'<td class="{cls}">{_e(value)}</td>' if cls else f"<td>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # wide tables scroll inside their box instead of widening the page
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            "</div>")


def _pairs_html(pairs) -> str:
    return ", ".join(f"<code>{_e(v)}</code>" + (f" ({_n_cells(n)})" if len(pairs) > 1 else "") for v, n in pairs)


def _examples_note(sr: StoreReport) -> str:
    shown = sum(1 for f in sr.figures.drawn if f.kind == "examples")
    finished = len(sr.data.ok)
    if shown and finished > shown:
        return (f"Example images are shown for {shown} of the {finished} finished cells, spread from the least to "
                f"the most accurate; `dct figures --results {sr.data.path}` draws them for every cell.")
    return ""


def contrasts_table(cells: pd.DataFrame) -> tuple[list[str], list[list[str]], str]:
    """The paired contrasts (bench.contrasts) as table rows, and their caption; no rows when there are none."""
    from bench import contrasts as K

    frame = K.contrasts(cells)
    headers = ["contrast", "level", "baseline", "difference [95% CI]", "n (classes x runs x seeds)", "reads"]
    rows = [[f"{r['axis']} {r['level']} - {r['baseline']}" + (f" ({r['others']})" if r["others"] else ""),
             f"{100 * r['level_acc']:.1f}%", f"{100 * r['baseline_acc']:.1f}%",
             f"{100 * r['diff']:+.1f} [{100 * r['lo']:+.1f}, {100 * r['hi']:+.1f}]",
             f"{r['n_classes']} x {r['n_runs']} x {r['n_images_per_run']}", K.verdict(r)]
            for _, r in frame.iterrows()]
    return headers, rows, K.caption(frame)


def _store_html(sr: StoreReport, anchor: str) -> str:
    data, figs = sr.data, sr.figures
    cells = data.cells
    parts = [f'<h2 id="{anchor}">Store <code>{_e(data.name)}</code></h2>',
             f'<p class="muted">{_e(data.path.resolve())}</p>']
    status = ", ".join(f"{n} {_e(s)}" for s, n in _counts(cells[C.STATUS])) if not cells.empty else "no cells"
    parts.append(f"<p><b>{len(cells)} cell(s)</b>: {status}.</p>")
    parts.append("<h3>Figures</h3>")
    for fig in figs.drawn:
        png = fig.files.get("png")
        data_uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        marks = ("<br>" + "; ".join(_e(m) for m in fig.marks)) if fig.marks else ""
        parts.append(f'<figure id="{anchor}-{_e(fig.stem)}"><img src="{data_uri}" alt="{_e(fig.stem)}">'
                     f"<figcaption><b>{_e(fig.title)}.</b> {_e(fig.caption)}{marks}</figcaption></figure>")
    note = _examples_note(sr)
    if note:
        parts.append(f'<p class="muted">{_e(note)}</p>')
    if figs.skipped:
        items = "".join(f"<li><b>{_e(s.kind)}</b>: {_e(s.reason)}</li>" for s in figs.skipped)
        parts.append(f"<p>Not drawn for this store:</p><ul>{items}</ul>")
    if not cells.empty:
        headers, rows, numeric = cells_table(cells)
        parts.append("<h3>Cells</h3>")
        parts.append('<p class="muted">Accuracy: judge top-1 on images from unseen seeds with a bootstrap 95% CI; '
                     "gain: token minus plain prompt on the same seeds (paired bootstrap), in percentage points; "
                     "settings shown are those that differ between cells.</p>")
        parts.append(_html_table(headers, rows, numeric, status_col=headers.index("status")))
        k_headers, k_rows, k_caption = contrasts_table(cells)
        if k_rows:
            parts.append("<h3>Paired contrasts</h3>")
            parts.append(f'<p class="muted">{_e(k_caption)}</p>')
            parts.append(_html_table(k_headers, k_rows))
        f_headers, f_rows = failures_table(cells)
        if f_rows:
            parts.append("<h3>Cells that did not finish</h3>")
            parts.append(_html_table(f_headers, f_rows, status_col=2))
    parts.append(_provenance_html(provenance(data)))
    return "\n".join(parts)


def _provenance_html(prov: dict) -> str:
    parts = ["<h3>Provenance</h3>", "<table><tbody>"]
    if prov.get("git"):
        text = "<br>".join(f"<code>{_e(s)}</code> ({_n_cells(n)}{', uncommitted changes' if dirty else ''})"
                           for s, n, dirty in prov["git"])
        parts.append(f"<tr><th>git commit</th><td>{text}</td></tr>")
    for key in ("experiments", "cell kinds", "device kinds", "devices", "hosts", "python", "cuda"):
        if key in prov:
            parts.append(f"<tr><th>{_e(key)}</th><td>{_pairs_html(prov[key])}</td></tr>")
    if prov.get("time range"):
        a, b = prov["time range"]
        parts.append(f"<tr><th>ran</th><td>{_e(a)} – {_e(b)} (UTC)</td></tr>")
    parts.append("</tbody></table>")
    if prov.get("packages"):
        rows = [[name, "; ".join(v if len(pairs) == 1 else f"{v} ({_n_cells(n)})" for v, n in pairs)]
                for name, pairs in prov["packages"].items()]
        parts.append("<p><b>Packages</b> (as recorded by each cell's runner)</p>"
                     + _html_table(["package", "version"], rows))
    for spec in prov.get("specs", []):
        files = ", ".join(f"<code>{_e(f)}</code>" for f in spec["files"]) or "unknown file"
        body = f"<pre>{_e(spec['text'])}</pre>" if spec["text"] else "<p class='muted'>(not saved in the store)</p>"
        parts.append(f"<details><summary>spec <code>{_e(spec['hash'])}</code>: {files}, {spec['cells']} cell(s)"
                     f"</summary>{body}</details>")
    rows = [[c["hash"], c["label"], c["status"], c["attempt"], c["started"], c["git"]] for c in prov["configs"]]
    parts.append("<details><summary>config hashes of all cells</summary>"
                 + _html_table(["config hash", "label", "status", "attempt", "started", "git"], rows, status_col=2)
                 + "".join(f"<details><summary><code>{_e(c['hash'])}</code> config</summary><pre>"
                           f"{_e(_pretty_json(c['config']))}</pre></details>" for c in prov["configs"])
                 + "</details>")
    return "\n".join(parts)


def _pretty_json(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=1, sort_keys=True)
    except (TypeError, ValueError):
        return text


def render_html(stores: list[StoreReport], *, title: str) -> str:
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    from bench.provenance import git_state

    sha, dirty = git_state()
    anchors = [f"store-{i}" for i in range(len(stores))]
    toc = "".join(f'<li><a href="#{a}">{_e(s.data.name)}</a> ({len(s.data.cells)} cells, '
                  f"{len(s.figures.drawn)} figures)</li>" for a, s in zip(anchors, stores))
    tools = ", ".join(f"{n} {v}" for n, v in _tool_versions())
    body = "\n".join(_store_html(s, a) for a, s in zip(anchors, stores))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="muted">Generated {_e(generated)} by <code>dct report</code> from checkout <code>{_e(sha or 'unknown')}</code>
{'(uncommitted changes)' if dirty else ''}; drawn with {_e(tools)}.</p>
<ul>{toc}</ul>
{body}
<hr>
<p id="image-check" class="muted">Figures are embedded in this file; a script checks that they loaded.</p>
<script>{IMAGE_CHECK_JS}</script>
</body>
</html>
"""


# --- Markdown ----------------------------------------------------------------------------------------


def _md_escape(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_escape(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _store_md(sr: StoreReport, report_dir: Path) -> str:
    data, figs = sr.data, sr.figures
    cells = data.cells
    out = [f"## Store `{data.name}`", "", f"`{data.path.resolve()}`", ""]
    status = ", ".join(f"{n} {s}" for s, n in _counts(cells[C.STATUS])) if not cells.empty else "no cells"
    out += [f"**{len(cells)} cell(s)**: {status}.", "", "### Figures", ""]
    for fig in figs.drawn:
        rel = fig.files["png"].relative_to(report_dir).as_posix()
        out += [f"![{fig.stem}]({rel})", "", f"**{fig.title}.** {fig.caption}"
                + (" " + "; ".join(fig.marks) if fig.marks else ""), ""]
    note = _examples_note(sr)
    if note:
        out += [f"*{note}*", ""]
    if figs.skipped:
        out += ["Not drawn for this store:", ""] + [f"- **{s.kind}**: {s.reason}" for s in figs.skipped] + [""]
    if not cells.empty:
        headers, rows, _ = cells_table(cells)
        out += ["### Cells", "", _md_table(headers, rows), ""]
        k_headers, k_rows, k_caption = contrasts_table(cells)
        if k_rows:
            out += ["### Paired contrasts", "", k_caption, "", _md_table(k_headers, k_rows), ""]
        f_headers, f_rows = failures_table(cells)
        if f_rows:
            out += ["### Cells that did not finish", "", _md_table(f_headers, f_rows), ""]
    prov = provenance(data)
    out += ["### Provenance", ""]
    for s, n, dirty in prov.get("git", []):
        out.append(f"- git commit `{s}` ({_n_cells(n)}{', uncommitted changes' if dirty else ''})")
    for key in ("experiments", "cell kinds", "device kinds", "devices", "hosts", "python", "cuda"):
        if key in prov:
            out.append(f"- {key}: " + ", ".join(f"`{v}`" + (f" ({_n_cells(n)})" if len(prov[key]) > 1 else "")
                                               for v, n in prov[key]))
    if prov.get("time range"):
        out.append(f"- ran {prov['time range'][0]} – {prov['time range'][1]} (UTC)")
    out.append("")
    if prov.get("packages"):
        rows = [[name, "; ".join(v if len(pairs) == 1 else f"{v} ({_n_cells(n)})" for v, n in pairs)]
                for name, pairs in prov["packages"].items()]
        out += [_md_table(["package", "version"], rows), ""]
    for spec in prov.get("specs", []):
        out += [f"Spec `{spec['hash']}` ({', '.join(spec['files']) or 'unknown file'}, {spec['cells']} cell(s)):", ""]
        out += (["```toml", spec["text"].rstrip(), "```"] if spec["text"] else ["(not saved in the store)"]) + [""]
    rows = [[c["hash"], c["label"], c["status"], c["attempt"], c["git"]] for c in prov["configs"]]
    out += ["Config hashes:", "", _md_table(["config hash", "label", "status", "attempt", "git"], rows), ""]
    return "\n".join(out)


def render_markdown(stores: list[StoreReport], *, title: str, report_dir: Path) -> str:
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tools = ", ".join(f"{n} {v}" for n, v in _tool_versions())
    head = [f"# {title}", "", f"Generated {generated} by `dct report`; drawn with {tools}. The HTML twin "
            f"({REPORT_HTML}) embeds the same figures.", ""]
    return "\n".join(head + [_store_md(s, report_dir) for s in stores]) + "\n"


# --- entry point -------------------------------------------------------------------------------------


def default_out(stores: list[Path]) -> Path:
    if len(stores) != 1:
        raise ConfigError("several stores need --out (the folder for report.html, report.md and figures/)")
    return D.resolve_store(stores[0]) / "report"


def build_report(stores, *, out: str | Path | None = None, title: str | None = None) -> BuiltReport:
    """Draw the figures of every store (PNG, under <out>/figures/<store>/) and write report.html and report.md."""
    from bench.figures.draw import draw_figures

    paths = [D.resolve_store(s) for s in stores]
    if not paths:
        raise ConfigError("no store given: pass at least one --results")
    out = Path(out) if out is not None else default_out(paths)
    out.mkdir(parents=True, exist_ok=True)
    reports, used = [], set()
    for path in paths:
        data = D.load_store(path)
        folder, i = data.name, 2
        while folder in used:  # two stores named alike (results/a/depth, results/b/depth)
            folder, i = f"{data.name}-{i}", i + 1
        used.add(folder)
        figs = draw_figures(data, out=out / FIGURES_DIR / folder, formats=("png",), example_cells=EXAMPLE_CELLS)
        reports.append(StoreReport(data, figs, folder))
    title = title or "DCT results: " + ", ".join(r.data.name for r in reports)
    html_path, md_path = out / REPORT_HTML, out / REPORT_MD
    html_path.write_text(render_html(reports, title=title), encoding="utf-8")
    md_path.write_text(render_markdown(reports, title=title, report_dir=out), encoding="utf-8")
    return BuiltReport(html_path, md_path, reports)
