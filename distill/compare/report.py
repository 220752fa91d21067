"""The comparison report: markdown, self-contained HTML with plots, and a short terminal table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifacts import write_text
from distill.present import duration, fmt, html_page, new_figure, to_png, with_interval

COLUMN_NAMES = {"teacher": "teacher", "adapter": "student (adapter)", "merged": "student (merged)",
                "baseline": "base, prompted"}


def models(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every measured model, teacher first, by column name."""
    found = {"teacher": metrics["teacher"], **metrics.get("students", {"adapter": metrics["student"]})}
    if metrics.get("baseline"):
        found["baseline"] = metrics["baseline"]
    return {COLUMN_NAMES[name]: summary for name, summary in found.items()}


def quality_name(metrics: dict[str, Any]) -> str:
    return metrics.get("task", {}).get("quality", "accuracy")


# Type-specific numbers shown when the task reports them: (metrics key, row title).
DETAIL_ROWS = (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("field_accuracy", "field accuracy (mean)"),
               ("empty_answered_empty", "empty where gold is empty"), ("rouge1", "ROUGE-1 F1"),
               ("rouge2", "ROUGE-2 F1"), ("rougeL", "ROUGE-L F1"))


def table_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = models(metrics)
    shown = [(key, title) for key, title in DETAIL_ROWS if any(m.get(key) is not None for m in columns.values())]
    rows = [
        ["served as", *[m["served_as"] for m in columns.values()]],
        [f"{quality_name(metrics)} vs gold [95% CI]",
         *[with_interval(m["accuracy"], m.get("accuracy_ci")) for m in columns.values()]],
        *[[title, *[fmt(m.get(key)) for m in columns.values()]] for key, title in shown],
        ["valid answers (label set / schema / format)", *[fmt(m.get("valid_rate")) for m in columns.values()]],
        ["queries/s", *[fmt(m["queries_per_s"], 2) for m in columns.values()]],
        ["latency p50 / p95 (ms)", *[f"{m['latency_ms']['p50']:.0f} / {m['latency_ms']['p95']:.0f}"
                                     for m in columns.values()]],
        ["prompt tokens / query", *[fmt(m["prompt_tokens_per_query"], 1) for m in columns.values()]],
        ["cost per 1k queries ($)", *[fmt(m["cost_per_1k_queries"], 5) for m in columns.values()]],
    ]
    return list(columns), rows


def headline(metrics: dict[str, Any]) -> str:
    ratio, even = metrics["cost_ratio"], metrics["break_even_queries"]
    interval = metrics.get("agreement_ci")
    span = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
    cost_part = f"the student costs {ratio:.3f}x the teacher per query" if ratio is not None else "no cost ratio"
    even_part = (f"labelling + training (${metrics['one_off_cost']['total']:.4f}) pays for itself after "
                 f"{even:,.0f} queries" if even is not None else "training never pays for itself")
    return (f"On {metrics['n_queries']} held-out queries the student agrees with the teacher on "
            f"{metrics['agreement']:.3f}{span}; {cost_part}; {even_part}.")


def print_summary(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t, s = metrics["teacher"], metrics["student"]
    table = Table(title="teacher vs student")
    for column in ("", "teacher", "student"):
        table.add_column(column)
    even = metrics["break_even_queries"]
    for row in (
        ("model", t["model"], s["model"]),
        ("served as", t["served_as"], s["served_as"]),
        (f"{quality_name(metrics)} vs gold", fmt(t["accuracy"]), fmt(s["accuracy"])),
        ("agreement with teacher", "1", fmt(metrics["agreement"])),
        ("queries/s", fmt(t["queries_per_s"], 2), fmt(s["queries_per_s"], 2)),
        ("cost per 1k queries ($)", fmt(t["cost_per_1k_queries"], 5), fmt(s["cost_per_1k_queries"], 5)),
        ("break-even volume", "", "never" if even is None else f"{even:,.0f} queries"),
    ):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(metrics["recommendation"])


def plot_cost_vs_volume(metrics: dict[str, Any]) -> bytes | None:
    """Total cost against queries served: teacher alone, and student with its one-off cost."""
    t, s = metrics["teacher"]["cost_per_1k_queries"], metrics["student"]["cost_per_1k_queries"]
    if t is None or s is None:
        return None
    import numpy as np

    one_off, even = metrics["one_off_cost"]["total"], metrics["break_even_queries"]
    volume = np.linspace(0, max(even * 3 if even else 0, 10_000), 200)
    fig, ax = new_figure()
    ax.plot(volume, volume * t / 1000, label="teacher")
    ax.plot(volume, one_off + volume * s / 1000, label="student (incl. labelling + training)")
    if even:
        ax.axvline(even, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"break-even\n{even:,.0f} queries", (even, one_off), textcoords="offset points",
                    xytext=(6, 10), fontsize=8)
    ax.set(xlabel="queries served", ylabel="total cost ($)", title="Cost against volume")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)


def plot_quality_vs_cost(metrics: dict[str, Any]) -> bytes:
    cascade = metrics["cascade"]
    key = "accuracy" if cascade["quality"] == "accuracy" else "agreement_with_teacher"
    fig, ax = new_figure()
    for name, summary in models(metrics).items():
        quality, cost = summary.get(key), summary["cost_per_1k_queries"]
        if quality is None or cost is None:
            continue
        ax.scatter(cost, quality, s=40, zorder=3)
        ax.annotate(name, (cost, quality), textcoords="offset points", xytext=(5, 4), fontsize=8)
    curve = cascade["curve"]
    ax.plot([p["cost_per_1k"] for p in curve], [p["quality"] for p in curve], color="grey", linewidth=1,
            label="cascade (student first)")
    ax.set(xlabel="cost per 1k queries ($)", ylabel=cascade["quality"], title="Quality against cost")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)


def plot_latency(latencies: dict[str, list[float]]) -> bytes:
    fig, ax = new_figure()
    names = [COLUMN_NAMES[n] for n in latencies]
    ax.boxplot(list(latencies.values()), tick_labels=names, showfliers=True)
    ax.set(ylabel="latency (ms)", title="Latency per query, under the same load")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    return to_png(fig)


def plot_cascade(metrics: dict[str, Any]) -> bytes:
    cascade = metrics["cascade"]
    curve = cascade["curve"]
    fig, ax = new_figure()
    shares = [p["student_share"] for p in curve]
    ax.plot(shares, [p["quality"] for p in curve], color="tab:blue", label=cascade["quality"])
    ax.set(xlabel="share of queries the student answers", ylabel=cascade["quality"], title="Cascade")
    other = ax.twinx()
    other.plot(shares, [p["cost_per_1k"] for p in curve], color="tab:orange", label="cost per 1k ($)")
    other.set_ylabel("cost per 1k queries ($)")
    if cascade["best"]:
        ax.axvline(cascade["best"]["student_share"], color="grey", linestyle="--", linewidth=1)
    ax.grid(alpha=0.3)
    fig.legend(loc="lower left", fontsize=8)
    return to_png(fig)


def plot_confusion(metrics: dict[str, Any]) -> bytes | None:
    import numpy as np

    data = metrics.get("confusion")
    if not data:
        return None
    labels = data["labels"]
    matrix = np.asarray(data["matrix"])
    size = min(12.0, 3 + 0.18 * len(labels))
    fig, ax = new_figure(size, size * 0.85)
    ax.imshow(matrix, cmap="Blues", aspect="auto")
    ticks = labels if len(labels) <= 40 else [""] * len(labels)
    ax.set_xticks(range(len(labels) + 1), [*ticks, "invalid"], rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), ticks, fontsize=7)
    ax.set(xlabel="student answer", ylabel=data["reference"], title=f"Student against {data['reference']}")
    return to_png(fig)


def _markdown(metrics: dict[str, Any], name: str) -> str:
    columns, rows = table_rows(metrics)
    prices = metrics["prices"]
    monthly = metrics["monthly"]
    lines = [f"# {name}: teacher vs student", "", "**Recommendation.** " + metrics["recommendation"], "",
             headline(metrics), "",
             "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|",
             *["| " + " | ".join(row) + " |" for row in rows], "",
             f"Agreement with the teacher: {with_interval(metrics['agreement'], metrics.get('agreement_ci'))}."]
    if metrics.get("adapter_merged_agreement") is not None:
        lines.append(f"Adapter and merged student agree on {metrics['adapter_merged_agreement']:.3f} of queries.")
    if metrics.get("mcnemar"):
        test = metrics["mcnemar"]
        lines.append(f"Paired test (McNemar, exact): only the student right on {test['only_student_right']}, only "
                     f"the teacher on {test['only_teacher_right']}, p = {test['p_value']:.3g}.")
    lines += ["", "## Cost", "",
              f"Measured on {metrics['hardware']} with {metrics['concurrency']} requests in flight, one model at a "
              "time. Headline student: " + metrics["student"]["served_as"] + ".",
              f"One-off: labelling ${metrics['one_off_cost']['labelling']:.5f}, training "
              f"${metrics['one_off_cost']['training']:.5f}.",
              f"At {monthly['queries']:,} queries a month: teacher ${fmt(monthly['teacher'], 2)}, student "
              f"${fmt(monthly['student'], 2)}.",
              f"Prices used: teacher ${prices['teacher_price_per_hour']}/h, "
              f"student ${prices['student_price_per_hour']}/h, training ${prices['train_price_per_hour']}/h"
              + (f", teacher tokens ${prices['teacher_input_per_1m']}/${prices['teacher_output_per_1m']} per 1M in/out"
                 if prices["teacher_input_per_1m"] is not None else "") + ".", "",
              "| teacher price | monthly queries | break-even queries | payback |", "|---|---|---|---|",
              *[f"| x{r['teacher_price_factor']:g} | {r['monthly_queries']:,.0f} | {fmt(r['break_even_queries'], 0)} "
                f"| {duration(r['payback_days'])} |" for r in metrics["sensitivity"]]]
    best = metrics["cascade"]["best"]
    if best:
        lines += ["", f"Cascade: with the student answering at confidence >= {best['threshold']:.3f}, it handles "
                  f"{best['student_share']:.0%} of queries; {metrics['cascade']['quality']} {best['quality']:.3f} at "
                  f"${best['cost_per_1k']:.5f} per 1k."]
    per_class = metrics["student"].get("per_class")
    if per_class:
        lines += ["", "## Student per class", "",
                  "| label | precision | recall | F1 | support |", "|---|---|---|---|---|",
                  *[f"| {label} | {c['precision']:.2f} | {c['recall']:.2f} | {c['f1']:.2f} | {c['support']} |"
                    for label, c in per_class.items()]]
    per_field = metrics["student"].get("per_field")
    if per_field:
        teacher_fields = metrics["teacher"].get("per_field", {})
        lines += ["", "## Accuracy per field", "", "| field | teacher | student |", "|---|---|---|",
                  *[f"| {field} | {fmt(teacher_fields.get(field))} | {fmt(value)} |"
                    for field, value in per_field.items()]]
    return "\n".join(lines) + "\n"


def write_reports(metrics: dict[str, Any], latencies: dict[str, list[float]], stage_dir: Path, name: str) -> None:
    markdown_text = _markdown(metrics, name)
    plots = {
        "Quality against cost": plot_quality_vs_cost(metrics),
        "Cost against volume, with the break-even point": plot_cost_vs_volume(metrics),
        "Cascade: share answered by the student, quality and cost": plot_cascade(metrics),
        "Latency distribution": plot_latency(latencies),
        "Confusion matrix": plot_confusion(metrics),
    }
    write_text(stage_dir / "report.md", markdown_text)
    write_text(stage_dir / "report.html", html_page(markdown_text, f"{name}: teacher vs student", plots))
