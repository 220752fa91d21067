"""Presentation shared by every report: number and interval formatting, durations, figures, one-file HTML pages."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def with_interval(value: float | None, interval: list[float] | None, digits: int = 3, signed: bool = False) -> str:
    """`0.750 [0.612, 0.861]`; `signed` writes differences with their sign (`-0.042 [-0.120, +0.031]`)."""
    if value is None:
        return "n/a"
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{value:{spec}}" + (f" [{interval[0]:{spec}}, {interval[1]:{spec}}]" if interval else "")


def duration(days: float | None) -> str:
    """A payback time in words a reader takes in at once."""
    if days is None:
        return "never"
    hours = days * 24
    if hours < 1:
        return "under an hour"
    if days < 1:
        return f"{hours:.0f} hour" + ("" if round(hours) == 1 else "s")
    return f"{days:,.1f} days"


def new_figure(width: float = 6.5, height: float = 3.8, columns: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(width, height), dpi=100)


def to_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def html_page(markdown_text: str, title: str, images: dict[str, bytes | None]) -> str:
    """The markdown's content as HTML (tables included) with every image embedded: one file, no network."""
    import markdown as md

    body = md.markdown(markdown_text, extensions=["tables"])
    figures = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for caption, png in images.items() if png)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin:1rem 0}}th,td{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
figure{{margin:1.5rem 0}}img{{max-width:100%}}</style>
</head><body>{body}{"<h2>Plots</h2>" if figures else ""}{figures}</body></html>
"""


HEADLINES = {"distil": "Distil: the student can replace the teacher.",
             "cascade": "Distil with a cascade: the student answers what it is sure of, the teacher the rest.",
             "keep_teacher": "Keep the teacher.",
             "insufficient_evidence": "Not enough evidence to decide yet."}


def quality_name(metrics: dict[str, Any]) -> str:
    return metrics.get("task", {}).get("quality_name", "quality")


def render(rec: dict[str, Any]) -> str:
    """The recommendation in plain words, from `metrics.json`'s `recommendation`: verdict and rule first, then the
    quality difference against the bar, then cost and payback."""
    parts = [f"{HEADLINES[rec['verdict']]} Why: {rec['reason']}. Rule: {rec['rule']}."]
    if rec["quality_diff"] is not None:
        parts.append(f"On {rec['n_queries']} test queries the student's {rec['measure']} differs from the teacher's "
                     f"by {with_interval(rec['quality_diff'], rec['quality_diff_ci'], signed=True)} (95% interval), "
                     f"against a bar of {rec['bar']:+.3f}.")
    elif rec["agreement"] is not None:
        parts.append(f"On {rec['n_queries']} test queries the student agrees with the teacher on "
                     f"{with_interval(rec['agreement'], rec['agreement_ci'])} (95% interval), against a bar of "
                     f"{rec['bar']:g}.")
    if rec["queries_needed"] is not None:
        parts.append(f"If the observed rates hold, about {rec['queries_needed']:,} test queries would decide it "
                     f"({max(0, rec['queries_needed'] - rec['n_queries']):,} more than now).")
    cascade = rec.get("cascade")
    if cascade and rec["verdict"] == "cascade":
        share = cascade["student_share"]
        span = (f" [{cascade['student_share_ci'][0]:.0%}, {cascade['student_share_ci'][1]:.0%}]"
                if cascade.get("student_share_ci") else "")
        parts.append(f"The cascade keeps {share:.0%}{span} of queries with the student (out of sample, 95% interval) "
                     f"at ${fmt(cascade['cost_per_1k'], 5)} per 1k queries.")
    if rec["student_cost_per_1k"] is not None and rec["teacher_cost_per_1k"] is not None:
        parts.append(f"At saturation the student costs ${fmt(rec['student_cost_per_1k'], 5)} per 1k queries, the "
                     f"teacher ${fmt(rec['teacher_cost_per_1k'], 5)}; labelling and training pay back in "
                     f"{duration(rec['payback_days'])}.")
    return " ".join(parts)
