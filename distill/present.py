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
