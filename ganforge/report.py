"""``ganforge report``: one self-contained HTML page for a run, to open anywhere.

Loss and metric curves (inline SVG), the sample grids over training and every traversal grid
(PNG embedded as data URIs), the latest evaluations with how each figure was made, and the resolved
recipe. No script, no stylesheet or font from elsewhere: the page loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from .errors import UsageError
from .outputs import read_json_lines

PLOT_WIDTH, PLOT_HEIGHT, MARGIN = 640, 220, 40
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.name { text-align: left; } pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
figure { display: inline-block; margin: 0.5em; text-align: center; } img { image-rendering: pixelated; }
.legend span { margin-right: 1em; } .provenance { font-size: 0.8em; color: #555; }
"""


def svg_plot(records: list[dict], names: list[str], title: str) -> str:
    """Curves of ``names`` against the step, as an inline SVG with a legend."""
    series = {name: [(r["step"], r[name]) for r in records if isinstance(r.get(name), (int, float))] for name in names}
    series = {name: points for name, points in series.items() if points}
    if not series:
        return ""
    steps = [step for points in series.values() for step, _ in points]
    values = [value for points in series.values() for _, value in points]
    low, high = min(values), max(values)
    high = high if high > low else low + 1
    first, last = min(steps), max(steps)
    last = last if last > first else first + 1

    def x(step):
        return MARGIN + (step - first) / (last - first) * (PLOT_WIDTH - 2 * MARGIN)

    def y(value):
        return PLOT_HEIGHT - MARGIN + (low - value) / (high - low) * (PLOT_HEIGHT - 2 * MARGIN)

    lines = [f'<svg width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" role="img"'
             f' aria-label="{html.escape(title)}">',
             f'<rect width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" fill="white" stroke="#ccc"/>',
             f'<text x="{MARGIN}" y="20" font-size="13">{html.escape(title)}</text>',
             f'<text x="4" y="{MARGIN + 4}" font-size="10">{high:.3g}</text>',
             f'<text x="4" y="{PLOT_HEIGHT - MARGIN}" font-size="10">{low:.3g}</text>',
             f'<text x="{MARGIN}" y="{PLOT_HEIGHT - 12}" font-size="10">step {first}</text>',
             f'<text x="{PLOT_WIDTH - MARGIN - 60}" y="{PLOT_HEIGHT - 12}" font-size="10">step {last}</text>']
    legend = []
    for index, (name, points) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{x(step):.1f},{y(value):.1f}" for step, value in points)
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        legend.append(f'<span style="color:{colour}">&#9632; {html.escape(name)}</span>')
    lines.append("</svg>")
    return "\n".join(lines) + f'\n<div class="legend">{"".join(legend)}</div>'


def embedded_png(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def step_of(path: Path) -> int:
    found = re.search(r"(\d+)\.png$", path.name)
    return int(found.group(1)) if found else -1


def evaluation_section(evaluations: list[dict]) -> str:
    if not evaluations:
        return "<p>No evaluation yet: <code>ganforge eval RUN_DIR</code> adds one.</p>"
    parts = []
    for record in evaluations[-3:]:
        rows = "".join(f'<tr><td class="name">{html.escape(name)}</td><td>{value:.4f}</td></tr>'
                       for name, value in record.get("results", {}).items())
        provenance = "".join(
            f"<li><b>{html.escape(metric)}</b>: " + html.escape(", ".join(f"{k} {v}" for k, v in facts.items())) + "</li>"
            for metric, facts in record.get("provenance", {}).items())
        parts.append(f"<h3>{html.escape(str(record.get('checkpoint')))} at step {record.get('step')}, on"
                     f" {record.get('images')} {html.escape(str(record.get('on')))} images</h3>"
                     f"<table><tr><th>figure</th><th>value</th></tr>{rows}</table>"
                     f'<ul class="provenance">{provenance}</ul>')
    return "\n".join(parts)


def write_report(run_directory: Path, out: Path | None = None) -> Path:
    """Write ``report.html`` for the run (or ``out``); returns its path."""
    run_directory = Path(run_directory)
    recipe_path = run_directory / "recipe.toml"
    if not recipe_path.is_file():
        raise UsageError(f"{run_directory} is not a run directory (it has no recipe.toml)")
    metrics = read_json_lines(run_directory / "metrics.jsonl")
    names = list(dict.fromkeys(name for record in metrics for name in record if name not in ("step", "images")))
    plots = [svg_plot(metrics, [n for n in names if n.startswith("loss/D/")], "discriminator losses"),
             svg_plot(metrics, [n for n in names if n.startswith("loss/G/")], "generator losses"),
             svg_plot(metrics, [n for n in names if not n.startswith(("loss/", "eval")) and n != "images_per_s"],
                      "other logged figures"),
             svg_plot(metrics, ["images_per_s"], "images per second")]
    # The [eval] figures, one plot each: an FID and an accuracy share no scale.
    scored = [svg_plot(metrics, [name], name.removeprefix("eval/")) for name in names if name.startswith("eval/")]
    samples = sorted((run_directory / "samples").glob("step_*.png"), key=step_of)
    traversals = sorted((run_directory / "samples").glob("traverse_*.png"), key=lambda p: (p.name.rsplit("_", 1)[0], step_of(p)))
    last = metrics[-1] if metrics else {}
    sections = [
        f"<h1>ganforge run {html.escape(run_directory.name)}</h1>",
        f"<p>{last.get('step', 0)} steps, {last.get('images', 0):,} images seen.</p>",
        "<h2>Evaluation</h2>", evaluation_section(read_json_lines(run_directory / "evaluations.jsonl")),
        "<h2>Training curves</h2>", *[plot for plot in plots if plot],
        *(["<h2>Metrics during training</h2>", *scored] if scored else []),
        "<h2>Samples over training</h2>", *[embedded_png(p, f"step {step_of(p)}") for p in samples],
        "<h2>Traversals</h2>",
        *[embedded_png(p, p.stem.removeprefix("traverse_").replace("_", " at step ", 1)) for p in traversals],
        "<h2>Recipe</h2>", f"<pre>{html.escape(recipe_path.read_text())}</pre>",
    ]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(run_directory.name)}'
            f" - ganforge report</title><style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n")
    out = Path(out) if out else run_directory / "report.html"
    out.write_text(page)
    return out
