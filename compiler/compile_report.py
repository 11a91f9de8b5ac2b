"""The report of ``vitrt compile``: ``report.json`` (data), ``report.md`` (text), ``report.html`` (one
self-contained file: inline CSS, the plots as base64 ``data:`` PNGs, no external URL) and ``plots/*.png``.

``report.json`` keys (``REPORT_FORMAT`` 1; a key is never renamed within a format, new keys may appear):

- ``format``, ``vitrt_version``, ``status`` ("ok" or "failed"), ``error`` (null, or {"stage", "message"}),
  ``started`` (local ISO time), ``seconds`` (the whole run);
- ``model``: the input: {"kind": "model", "source", "name", "checkpoint", "fusion", "attention", "img_size",
  "num_classes"} or {"kind": "onnx", "file"};
- ``options``: target, precision, lowering, runtime, calib_data, calib_samples, eval_data, eval_samples,
  convert_channels, iterations;
- ``stages``: one entry per stage in order: {"name", "status" ("ran", "cached", "skipped", "failed"),
  "seconds" (this run), "built_seconds" (when it ran), "folder" (relative to OUTDIR), "key", "note"};
- ``files``: paths (relative to OUTDIR) of "fp32_onnx", "final_onnx" (the file built) and "artifact";
- ``sizes``: "fp32_onnx_bytes", "final_onnx_bytes", "artifact_bytes";
- ``precision``: the precision stage's result (null for fp32): INT8 form, layers INT8 / float, calibration
  agreement;
- ``build``: kind ("cpu", "engine", "bundle"), path, runtime, runtime_version, files {name: bytes}, bytes,
  note;
- ``accuracy``: eval_data, samples, labelled, reference, ran_on, reference_top1 and top1 (fractions; null
  without labels), top1_agreement, mean_cosine, min_cosine, max_abs_error (logits vs the reference);
- ``latency``: artifact and pytorch_eager (latency statistics in ms: iterations, min, max, mean, median, p90,
  p95, p99, std; pytorch_eager null for an ONNX input), ratio_vs_eager (artifact median / eager median),
  iterations, batch, torch_threads, runtime; null when not profiled (a bundle);
- ``plots``: {name: path relative to OUTDIR} of the PNGs;
- ``summary``: the lines ``vitrt compile`` prints at the end.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

from vitrt.deploy.module_groups import part_totals
from vitrt.fileio import atomic_write_bytes

REPORT_FORMAT = 1
PLOTS_DIR = "plots"


def _rel(path: str | None, outdir: Path) -> str | None:
    return os.path.relpath(path, outdir) if path else None


def report_data(
    *,
    outdir: Path,
    entries: list[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    model: dict[str, Any],
    options: dict[str, Any],
    started: str,
    seconds: float,
    error: dict[str, Any] | None,
) -> dict[str, Any]:
    """``report.json``'s content (module docstring) from the stage log and the stages' results."""
    from .stage_cache import vitrt_version

    fp32, final = results.get("fp32", {}), results.get("final_onnx", {})
    build = results.get("build")
    data: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "vitrt_version": vitrt_version(),
        "status": "failed" if error else "ok",
        "error": error,
        "started": started,
        "seconds": round(seconds, 3),
        "model": model,
        "options": options,
        "stages": entries,
        "files": {
            "fp32_onnx": _rel(fp32.get("path"), outdir),
            "final_onnx": _rel(final.get("path"), outdir),
            "artifact": _rel(results.get("artifact_path", {}).get("path"), outdir),
        },
        "sizes": {
            "fp32_onnx_bytes": fp32.get("bytes"),
            "final_onnx_bytes": final.get("bytes"),
            "artifact_bytes": build.get("bytes") if build else None,
        },
        "precision": results.get("precision"),
        "build": build,
        "accuracy": results.get("verify"),
        "latency": results.get("profile"),
        "plots": {},
    }
    data["summary"] = summary_lines(data, outdir)
    return data


def summary_lines(data: dict[str, Any], outdir: Path) -> list[str]:
    """What the run found, in a few lines: accuracy, latency, the artifact and where the report is."""
    lines: list[str] = []
    precision = data["options"]["precision"].upper()
    acc, lat, build = data.get("accuracy"), data.get("latency"), data.get("build")
    if data["status"] == "failed":
        lines.append(f"FAILED: {data['error']['message']}")
    if acc:
        where = f"{acc['samples']} samples of {acc['eval_data']}"
        if acc.get("top1") is not None:
            lines.append(
                f"top-1 on {where}: FP32 {100 * acc['reference_top1']:.1f} % -> {precision} "
                f"{100 * acc['top1']:.1f} % (top-1 agreement {100 * acc['top1_agreement']:.1f} %, mean "
                "cosine "
                f"{acc['mean_cosine']:.5f})"
            )
        else:
            lines.append(
                f"{precision} vs FP32 on {where}: top-1 agreement {100 * acc['top1_agreement']:.1f} %, mean "
                f"cosine {acc['mean_cosine']:.5f}, max abs error {acc['max_abs_error']:.3g}"
            )
    if lat:
        text = (
            f"latency (batch {lat['batch']}): {precision} on {lat['runtime']} "
            f"{lat['artifact']['median']:.2f} ms median"
        )
        if lat.get("pytorch_eager"):
            text += (
                f" vs PyTorch eager FP32 {lat['pytorch_eager']['median']:.2f} ms in the same run "
                f"({lat['ratio_vs_eager']:.2f}x eager)"
            )
        lines.append(text)
    if build:
        lines.append(
            f"{build['kind']} artifact: {os.path.join(str(outdir), data['files']['artifact'] or '')}"
        )
        if build.get("note"):
            lines.append(build["note"])
    lines.append(f"report: {outdir / 'report.html'} (also report.md, report.json)")
    return lines


def _summary_without_html(data: dict[str, Any], outdir: Path) -> None:
    """The summary's last line for a report written without report.html: name only the files written."""
    if data["summary"] and data["summary"][-1].startswith("report: "):
        data["summary"][-1] = f"report: {outdir / 'report.md'} (also report.json)"


def write_json(outdir: Path, data: dict[str, Any]) -> Path:
    return atomic_write_bytes(outdir / "report.json", (json.dumps(data, indent=1) + "\n").encode())


def write_report(outdir: Path, data: dict[str, Any], *, html: bool = True) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md``, and with ``html`` the plots and ``report.html``; returns the
    paths by name. ``data["plots"]`` is filled with the plots written; a plot an earlier run left in
    ``plots/`` that this one does not write (no data for it: a failed run, a bundle) is removed, so the
    folder never shows another run's numbers."""
    from .compile_plots import PLOTS

    written: dict[str, Path] = {}
    if not html:
        _summary_without_html(data, outdir)
    if html and not _have_matplotlib():
        data["summary"].append("no plots: matplotlib is not installed (pip install 'vitrt[report]')")
    elif html:
        (outdir / PLOTS_DIR).mkdir(exist_ok=True)
        for name, plot in PLOTS.items():
            path = plot(data, outdir / PLOTS_DIR / f"{name}.png")
            if path is not None:
                data["plots"][name] = f"{PLOTS_DIR}/{name}.png"
                written[name] = path
    for name in PLOTS:
        if name not in written:
            (outdir / PLOTS_DIR / f"{name}.png").unlink(missing_ok=True)
    written["json"] = write_json(outdir, data)
    written["md"] = atomic_write_bytes(outdir / "report.md", markdown(data).encode())
    if html:
        written["html"] = atomic_write_bytes(outdir / "report.html", render_html(data, outdir).encode())
    else:
        (outdir / "report.html").unlink(missing_ok=True)  # an earlier run's: the summary names no html now
    return written


def _have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _stats_row(label: str, st: dict[str, Any]) -> list[str]:
    return [
        label,
        *(f"{st[k]:.3f}" for k in ("min", "median", "mean", "p90", "p95", "p99", "std")),
        str(st["iterations"]),
    ]


def _tables(data: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows): shared by the Markdown and the HTML."""
    tables: list[tuple[str, list[str], list[list[str]]]] = []
    opts = data["options"]
    model = data["model"]
    inp = model.get("name") or model.get("file")
    tables.append(
        (
            "Input and options",
            ["what", "value"],
            [
                ["input", f"{inp} ({model['kind']})"],
                *[
                    [k, str(v)]
                    for k, v in model.items()
                    if k not in ("kind", "name", "file") and v is not None
                ],
                *[[k, str(v)] for k, v in opts.items() if v is not None],
            ],
        )
    )
    tables.append(
        (
            "Stages",
            ["stage", "status", "seconds (this run)", "seconds (when it ran)", "folder", "note"],
            [
                [
                    s["name"],
                    s["status"],
                    f"{s['seconds']:.1f}",
                    f"{s['built_seconds']:.1f}",
                    s["folder"] or "",
                    s["note"],
                ]
                for s in data["stages"]
            ],
        )
    )
    acc = data.get("accuracy")
    if acc:
        rows = [
            [
                "evaluation data",
                f"{acc['eval_data']} ({acc['samples']} samples, "
                f"{'labelled' if acc['labelled'] else 'no labels'})",
            ],
            ["reference", acc["reference"]],
            ["ran on", acc["ran_on"]],
        ]
        if acc.get("top1") is not None:
            rows += [
                ["top-1 FP32 reference", f"{100 * acc['reference_top1']:.2f} %"],
                [f"top-1 {opts['precision'].upper()}", f"{100 * acc['top1']:.2f} %"],
            ]
        rows += [
            ["top-1 agreement", f"{100 * acc['top1_agreement']:.2f} %"],
            ["mean / min cosine", f"{acc['mean_cosine']:.5f} / {acc['min_cosine']:.5f}"],
            ["max abs logit error", f"{acc['max_abs_error']:.4g}"],
        ]
        tables.append(("Accuracy", ["measure", "value"], rows))
    lat = data.get("latency")
    if lat:
        header = ["runtime", "min", "median", "mean", "p90", "p95", "p99", "std", "runs"]
        rows = [_stats_row(f"{opts['precision'].upper()} artifact ({lat['runtime']})", lat["artifact"])]
        if lat.get("pytorch_eager"):
            rows.append(_stats_row("PyTorch eager FP32", lat["pytorch_eager"]))
        title = (
            f"Latency (ms, batch {lat['batch']}, interleaved in one run; torch threads "
            f"{lat['torch_threads']})"
        )
        if lat.get("ratio_vs_eager") is not None:
            title += f": {lat['ratio_vs_eager']:.2f}x eager"
        tables.append((title, header, rows))
        prof = lat.get("profile") or {}
        if prof.get("layers"):
            # the artifact's per-block split (vitrt profile's per-layer run), largest first, the ten largest
            blocks = sorted(prof["layers"].items(), key=lambda kv: -kv[1])
            total = sum(ms for _, ms in blocks) or 1.0
            tables.append(
                (
                    "Time per part, summed over the blocks (ms per inference, from the same per-layer run)",
                    ["part", "ms", "share"],
                    [
                        [label, f"{ms:.4f}", f"{100 * ms / total:.1f} %"]
                        for label, ms in part_totals(prof["layers"]).items()
                    ],
                )
            )
            tables.append(
                (
                    "Time per block (ms per inference, from a per-layer run: read the split, not the total)",
                    ["block", "ms", "share"],
                    [[label, f"{ms:.4f}", f"{100 * ms / total:.1f} %"] for label, ms in blocks[:10]],
                )
            )
    sizes = data["sizes"]
    tables.append(
        (
            "Sizes on disk",
            ["file", "bytes", "path"],
            [
                ["FP32 ONNX", str(sizes["fp32_onnx_bytes"]), data["files"]["fp32_onnx"] or ""],
                [
                    f"{opts['precision'].upper()} ONNX",
                    str(sizes["final_onnx_bytes"]),
                    data["files"]["final_onnx"] or "",
                ],
                ["artifact", str(sizes["artifact_bytes"]), data["files"]["artifact"] or ""],
            ],
        )
    )
    return tables


def _title(data: dict[str, Any]) -> str:
    model = data["model"]
    name = model.get("name") or Path(model.get("file") or "?").name
    return f"vitrt compile: {name} -> {data['options']['target']} {data['options']['precision'].upper()}"


def markdown(data: dict[str, Any]) -> str:
    """``report.md``: the summary, the tables and links to the plots."""
    out = [
        f"# {_title(data)}",
        "",
        f"status: **{data['status']}**, {data['seconds']:.1f} s, vitrt {data['vitrt_version']}",
        "",
    ]
    out += [f"- {line}" for line in data["summary"]]
    for title, header, rows in _tables(data):
        out += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    if data["plots"]:
        out += ["", "## Plots", ""] + [f"![{name}]({path})" for name, path in data["plots"].items()]
    return "\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 980px;
       color: #1c2833; line-height: 1.4; }
h1 { font-size: 1.5em; border-bottom: 2px solid #2e86c1; padding-bottom: .2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #d5dbdb; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eaf2f8; }
.status-ok { color: #1e8449; } .status-failed { color: #c0392b; }
ul.summary li { margin: .2em 0; }
.plots img { max-width: 470px; margin: .3em; border: 1px solid #eaeded; }
"""


def render_html(data: dict[str, Any], outdir: Path) -> str:
    """``report.html``: one file with inline CSS and the plots embedded as base64 PNG ``data:`` URIs."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(_title(data))}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{esc(_title(data))}</h1>",
        f'<p>status: <b class="status-{esc(data["status"])}">{esc(data["status"])}</b>, '
        f"{data['seconds']:.1f} s, "
        f"vitrt {esc(data['vitrt_version'])}</p>",
        '<ul class="summary">',
        *[f"<li>{esc(line)}</li>" for line in data["summary"]],
        "</ul>",
    ]
    for title, header, rows in _tables(data):
        parts.append(
            f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</table>")
    if data["plots"]:
        parts.append('<h2>Plots</h2><div class="plots">')
        for name, rel in data["plots"].items():
            encoded = base64.b64encode((outdir / rel).read_bytes()).decode("ascii")
            parts.append(f'<img alt="{esc(name)}" src="data:image/png;base64,{encoded}">')
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
