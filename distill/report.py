"""The comparison report: markdown, self-contained HTML with a plot, and a short terminal table."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from distill.artifacts import write_text


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    t, s = metrics["teacher"], metrics["student"]
    return [
        ("model", t["model"], s["model"]),
        ("served as", t["served_as"], s["served_as"]),
        ("accuracy vs gold", _fmt(t["accuracy"]), _fmt(s["accuracy"])),
        ("agreement with teacher", "1", _fmt(metrics["agreement"])),
        ("queries/s", _fmt(t["queries_per_s"], 2), _fmt(s["queries_per_s"], 2)),
        ("latency p50 / p95 (ms)", f"{t['latency_ms']['p50']:.0f} / {t['latency_ms']['p95']:.0f}",
         f"{s['latency_ms']['p50']:.0f} / {s['latency_ms']['p95']:.0f}"),
        ("prompt tokens / query", _fmt(t["prompt_tokens_per_query"], 1), _fmt(s["prompt_tokens_per_query"], 1)),
        ("cost per 1k queries ($)", _fmt(t["cost_per_1k_queries"], 5), _fmt(s["cost_per_1k_queries"], 5)),
    ]


def headline(metrics: dict[str, Any]) -> str:
    ratio, even = metrics["cost_ratio"], metrics["break_even_queries"]
    one_off = metrics["one_off_cost"]["total"]
    cost_part = f"the student costs {ratio:.3f}x the teacher per query" if ratio is not None else "no cost ratio"
    even_part = (f"labelling + training (${one_off:.4f}) pays for itself after {even:,.0f} queries"
                 if even is not None else "the student saves nothing per query, so training never pays for itself")
    return f"On {metrics['n_queries']} held-out queries, {cost_part}; {even_part}."


def print_summary(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="teacher vs student")
    for column in ("", "teacher", "student"):
        table.add_column(column)
    for row in summary_rows(metrics):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(headline(metrics))


def cost_plot_png(metrics: dict[str, Any]) -> bytes | None:
    """Total cost against query volume for teacher alone and for student (one-off cost included)."""
    t, s = metrics["teacher"]["cost_per_1k_queries"], metrics["student"]["cost_per_1k_queries"]
    if t is None or s is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    one_off = metrics["one_off_cost"]["total"]
    even = metrics["break_even_queries"]
    top = max(even * 3 if even else 0, 10_000)
    volume = np.linspace(0, top, 200)
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=110)
    ax.plot(volume, volume * t / 1000, label="teacher")
    ax.plot(volume, one_off + volume * s / 1000, label="student (incl. labelling + training)")
    if even:
        ax.axvline(even, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"break-even\n{even:,.0f} queries", (even, one_off), textcoords="offset points",
                    xytext=(6, 10), fontsize=8)
    ax.set_xlabel("queries served")
    ax.set_ylabel("total cost ($)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _markdown(metrics: dict[str, Any], name: str) -> str:
    prices = metrics["prices"]
    lines = [f"# {name}: teacher vs student", "", headline(metrics), "",
             "| | teacher | student |", "|---|---|---|",
             *[f"| {a} | {b} | {c} |" for a, b, c in summary_rows(metrics)], "",
             f"Measured on {metrics['hardware']} with {metrics['concurrency']} requests in flight, "
             "one model at a time.",
             f"One-off cost: labelling ${metrics['one_off_cost']['labelling']:.5f}, "
             f"training ${metrics['one_off_cost']['training']:.5f}.",
             f"Prices used: teacher ${prices['teacher_price_per_hour']}/h, "
             f"student ${prices['student_price_per_hour']}/h, "
             f"training ${prices['train_price_per_hour']}/h"
             + (f", teacher tokens ${prices['teacher_input_per_1m']}/${prices['teacher_output_per_1m']} per 1M in/out"
                if prices["teacher_input_per_1m"] is not None else "") + "."]
    return "\n".join(lines) + "\n"


def _html(metrics: dict[str, Any], name: str, png: bytes | None) -> str:
    rows = "".join(f"<tr><th>{html.escape(a)}</th><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
                   for a, b, c in summary_rows(metrics))
    image = "<p>No cost plot: a cost per query is missing.</p>"
    if png:
        encoded = base64.b64encode(png).decode()
        image = f'<img alt="total cost against query volume" src="data:image/png;base64,{encoded}">'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}: teacher vs student</title>
<style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style>
</head><body><h1>{html.escape(name)}: teacher vs student</h1>
<p>{html.escape(headline(metrics))}</p>
<table><tr><th></th><th>teacher</th><th>student</th></tr>{rows}</table>
<h2>Cost against volume</h2>{image}
<p>Measured on {html.escape(metrics['hardware'])}; prices: {html.escape(str(metrics['prices']))}.</p>
</body></html>
"""


def write_reports(metrics: dict[str, Any], stage_dir: Path, name: str) -> None:
    png = cost_plot_png(metrics)
    write_text(stage_dir / "report.md", _markdown(metrics, name))
    write_text(stage_dir / "report.html", _html(metrics, name, png))
