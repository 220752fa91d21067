"""The comparison report: markdown, self-contained HTML with plots, and a short terminal table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifacts import write_text
from distill.present import duration, fmt, html_page, new_figure, quality_name, render, to_png, with_interval

COLUMN_NAMES = {"teacher": "teacher", "adapter": "student (adapter)", "merged": "student (merged)",
                "baseline": "base, prompted"}


def models(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every model compare measured or tried, teacher first, by column name."""
    found = {"teacher": metrics["teacher"], **metrics.get("students", {"adapter": metrics["student"]})}
    if metrics.get("baseline"):
        found["baseline"] = metrics["baseline"]
    return {COLUMN_NAMES[name]: summary for name, summary in found.items()}


def measured(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: m for name, m in models(metrics).items() if m.get("status", "measured") == "measured"}


# Type-specific numbers shown when the task reports them: (metrics key, row title).
DETAIL_ROWS = (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"), ("field_accuracy", "field accuracy (mean)"),
               ("empty_answered_empty", "empty where gold is empty"), ("rouge1", "ROUGE-1 F1"),
               ("rouge2", "ROUGE-2 F1"), ("rougeL", "ROUGE-L F1"))


def table_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    columns = measured(metrics)
    shown = [(key, title) for key, title in DETAIL_ROWS if any(m.get(key) is not None for m in columns.values())]
    rows = [
        ["served as", *[m["served_as"] for m in columns.values()]],
        [f"{quality_name(metrics)} vs gold [95% CI]",
         *[with_interval(m["quality"], m.get("quality_ci")) for m in columns.values()]],
        *[[title, *[fmt(m.get(key)) for m in columns.values()]] for key, title in shown],
        ["agreement with the teacher", *[fmt(m.get("agreement_with_teacher")) for m in columns.values()]],
        ["valid answers (label set / schema / format)", *[fmt(m.get("valid_rate")) for m in columns.values()]],
        ["costed at (requests in flight)", *[fmt(m.get("concurrency")) + (" (still rising)" if m.get("still_rising")
                                                                           else "") for m in columns.values()]],
        ["queries/s at saturation", *[fmt(m.get("queries_per_s"), 2) for m in columns.values()]],
        ["timed", *[f"reused, measured {m['timed_at']}" if m.get("timed_at") else "this run"
                    for m in columns.values()]],
        ["latency p50 / p95 (ms)", *[f"{m['latency_ms']['p50']:.0f} / {m['latency_ms']['p95']:.0f}"
                                     for m in columns.values()]],
        ["prompt tokens / query", *[fmt(m["prompt_tokens_per_query"], 1) for m in columns.values()]],
        ["cost per 1k queries ($)", *[("at most " if m.get("still_rising") else "") + fmt(m["cost_per_1k_queries"], 5)
                                      for m in columns.values()]],
    ]
    return list(columns), rows


def print_summary(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t, s = metrics["teacher"], metrics["student"]
    table = Table(title="teacher vs student")
    for column in ("", "teacher", "student"):
        table.add_column(column)
    for row in (
        ("model", t["model"], s["model"]),
        ("served as", t["served_as"], s["served_as"]),
        (f"{quality_name(metrics)} vs gold", fmt(t.get("quality")), fmt(s.get("quality"))),
        ("agreement with teacher", "1", fmt(metrics["agreement"])),
        ("costed at (requests in flight)", fmt(t.get("concurrency")), fmt(s.get("concurrency"))),
        ("queries/s", fmt(t.get("queries_per_s"), 2), fmt(s.get("queries_per_s"), 2)),
        ("cost per 1k queries ($)", fmt(t.get("cost_per_1k_queries"), 5), fmt(s.get("cost_per_1k_queries"), 5)),
        ("payback", "", duration(metrics.get("payback_days"))),
    ):
        table.add_row(*row)
    console = Console()
    console.print(table)
    console.print(f"[bold]{metrics['recommendation']['verdict']}[/bold]: {render(metrics['recommendation'])}")


def plot_cost_vs_volume(metrics: dict[str, Any]) -> bytes | None:
    """Total cost against queries served: teacher alone, and student with its one-off cost."""
    t, s = metrics["teacher"].get("cost_per_1k_queries"), metrics["student"].get("cost_per_1k_queries")
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
    cascade = metrics["cascade"] or {"measure": quality_name(metrics), "curve": []}
    gold = metrics["recommendation"]["against_gold"]
    key = "quality" if gold else "agreement_with_teacher"
    fig, ax = new_figure()
    for name, summary in measured(metrics).items():
        quality, cost = summary.get(key), summary["cost_per_1k_queries"]
        if quality is None or cost is None:
            continue
        ax.scatter(cost, quality, s=40, zorder=3)
        ax.annotate(name, (cost, quality), textcoords="offset points", xytext=(5, 4), fontsize=8)
    curve = cascade["curve"]
    if curve:
        ax.plot([p["cost_per_1k"] for p in curve], [p["quality"] for p in curve], color="grey", linewidth=1,
                label="cascade (student first, in sample)")
        ax.legend(fontsize=8)
    ax.set(xlabel="cost per 1k queries ($)", ylabel=cascade["measure"], title="Quality against cost")
    ax.grid(alpha=0.3)
    return to_png(fig)


def plot_latency(latencies: dict[str, list[float]]) -> bytes:
    fig, ax = new_figure()
    names = [COLUMN_NAMES[n] for n in latencies]
    ax.boxplot(list(latencies.values()), tick_labels=names, showfliers=True)
    ax.set(ylabel="latency (ms)", title="Latency per query, each model at its costed concurrency")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    return to_png(fig)


def plot_cascade(metrics: dict[str, Any]) -> bytes | None:
    cascade = metrics["cascade"]
    if not cascade:
        return None
    curve = cascade["curve"]
    fig, ax = new_figure()
    shares = [p["student_share"] for p in curve]
    ax.plot(shares, [p["quality"] for p in curve], color="tab:blue", label=cascade["measure"])
    ax.set(xlabel="share of queries the student answers", ylabel=cascade["measure"],
           title="Cascade (in sample; the verdict uses cross-fitted thresholds)")
    other = ax.twinx()
    other.plot(shares, [p["cost_per_1k"] for p in curve], color="tab:orange", label="cost per 1k ($)")
    other.set_ylabel("cost per 1k queries ($)")
    if cascade["threshold"] is not None:
        ax.axvline(cascade["student_share"], color="grey", linestyle="--", linewidth=1)
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


def _verdict_section(metrics: dict[str, Any], name: str) -> list[str]:
    rec = metrics["recommendation"]
    return [f"# {name}: teacher vs student", "",
            f"**Verdict (`{rec['verdict']}`).** {render(rec)}", ""]


def _quality_section(metrics: dict[str, Any]) -> list[str]:
    columns, rows = table_rows(metrics)
    rec = metrics["recommendation"]
    lines = ["## Quality", ""]
    if metrics.get("quality_diff") is not None:
        lines.append(f"Paired difference in {quality_name(metrics)} (student - teacher, same {metrics['n_queries']} "
                     f"queries): {with_interval(metrics['quality_diff'], metrics['quality_diff_ci'], signed=True)} "
                     f"against the bar {rec['bar']:+.3f}.")
    if metrics.get("agreement") is not None:
        lines.append(f"Agreement with the teacher: {with_interval(metrics['agreement'], metrics['agreement_ci'])}"
                     + ("" if rec["against_gold"] else f" against the bar {rec['bar']:g}") + ".")
    if metrics.get("mcnemar"):
        test = metrics["mcnemar"]
        lines.append(f"Paired test (McNemar, exact): only the student right on {test['only_student_right']}, only "
                     f"the teacher on {test['only_teacher_right']}, p = {test['p_value']:.3g}.")
    if metrics.get("adapter_merged_agreement") is not None:
        lines.append(f"Adapter and merged student agree on {metrics['adapter_merged_agreement']:.3f} of queries.")
    lines += ["", "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|",
              *["| " + " | ".join(row) + " |" for row in rows], ""]
    for column, model in models(metrics).items():
        if model.get("status", "measured") != "measured":
            lines.append(f"- {column}: {model['status']}, not compared: {model['reason']}")
    return lines


def _rising(metrics: dict[str, Any]) -> str:
    rising = [column for column, m in measured(metrics).items() if m.get("still_rising")]
    if not rising:
        return ""
    return (f" Still rising at compare.max_concurrency, so not shown saturated: {', '.join(rising)}; a higher "
            "max_concurrency may serve more queries per second, and their cost per query is at most the one given.")


def _fleet(prices: dict[str, Any]) -> str:
    """The teacher's hourly price as used: per accelerator, times the accelerators serving it; none for a teacher
    priced per token (its prices follow)."""
    if prices["teacher_input_per_1m"] is not None and prices["teacher_output_per_1m"] is not None:
        return "per token"
    gpus = prices.get("teacher_gpus") or 1
    fleet = prices.get("teacher_fleet_per_hour", prices["teacher_price_per_hour"] * gpus)
    return f"${prices['teacher_price_per_hour']}/h per accelerator x {gpus} = ${fleet:g}/h for its fleet"


def _cost_section(metrics: dict[str, Any]) -> list[str]:
    prices, monthly, one_off = metrics["prices"], metrics["monthly"], metrics["one_off_cost"]
    costed = ", ".join(f"{column} at {fmt(m.get('concurrency'))}" for column, m in measured(metrics).items())
    return ["", "## Cost at saturation", "",
            f"Measured on {metrics['hardware']}, one model at a time; each costed where more requests in flight "
            f"stopped raising queries/s by more than 5%: {costed}. Headline student: "
            f"{metrics['student']['served_as']}." + _rising(metrics),
            f"One-off: labelling ${one_off['labelling']:.5f} ({one_off.get('labelling_basis', 'this run')}), "
            f"training ${one_off['training']:.5f}.",
            f"At {monthly['queries']:,} queries a month: teacher ${fmt(monthly['teacher'], 2)}, student "
            f"${fmt(monthly['student'], 2)}; payback {duration(metrics.get('payback_days'))}.",
            f"Prices used: teacher {_fleet(prices)}, "
            f"student ${prices['student_price_per_hour']}/h, training ${prices['train_price_per_hour']}/h"
            + _token_prices(metrics) + ".", "",
            "## Payback", "",
            "| teacher price | monthly queries | break-even queries | payback |", "|---|---|---|---|",
            *[f"| x{r['teacher_price_factor']:g} | {r['monthly_queries']:,.0f} | {fmt(r['break_even_queries'], 0)} "
              f"| {duration(r['payback_days'])} |" for r in metrics["sensitivity"]]]


def _token_prices(metrics: dict[str, Any]) -> str:
    """The per-token prices as billed, with the share of the teacher's prompt tokens its provider served cached."""
    prices = metrics["prices"]
    if prices["teacher_input_per_1m"] is None:
        return ""
    cached_price = prices.get("teacher_cached_input_per_1m")
    text = (f", teacher tokens ${prices['teacher_input_per_1m']} per 1M input"
            + (f" (${cached_price} cached)" if cached_price is not None else "")
            + f", ${prices['teacher_output_per_1m']} per 1M output")
    teacher = metrics.get("teacher") or {}
    prompt, cached = teacher.get("prompt_tokens_per_query"), teacher.get("cached_tokens_per_query")
    if prompt and cached is not None:
        text += f"; {cached / prompt:.0%} of the teacher's prompt tokens were served from its provider's cache"
    return text


def _cascade_section(metrics: dict[str, Any]) -> list[str]:
    cascade, rec = metrics.get("cascade"), metrics["recommendation"].get("cascade")
    if not cascade or cascade["threshold"] is None or not rec:
        return []
    signed = metrics["recommendation"]["against_gold"]  # a difference against the teacher, else agreement
    return ["", "## Cascade", "",
            f"The student answers when its {cascade['confidence'].replace('_', ' ')} is at least "
            f"{cascade['threshold']:.3f}, the teacher otherwise. Out of sample ({cascade['folds']}-fold cross-fitted "
            f"thresholds, each chosen so that the rule's lower bound clears the bar on the other folds) it kept "
            f"{with_interval(cascade['student_share'], cascade.get('student_share_ci'))} of queries with the student, "
            f"{cascade['measure']} "
            f"{with_interval(rec['estimate'], rec['interval'], signed=signed)}, at ${fmt(cascade['cost_per_1k'], 5)} "
            f"per 1k; it {'passes' if rec['passes'] else 'does not pass'} "
            "the rule."]


def _details_section(metrics: dict[str, Any]) -> list[str]:
    lines: list[str] = []
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
    return lines


def _markdown(metrics: dict[str, Any], name: str) -> str:
    """Verdict and rule first, then quality against the bar, cost at saturation, payback, and the details."""
    sections = (_verdict_section(metrics, name), _quality_section(metrics), _cost_section(metrics),
                _cascade_section(metrics), _details_section(metrics))
    return "\n".join(line for section in sections for line in section) + "\n"


def write_reports(metrics: dict[str, Any], latencies: dict[str, list[float]], stage_dir: Path, name: str) -> None:
    markdown_text = _markdown(metrics, name)
    plots = {
        "Quality against cost": plot_quality_vs_cost(metrics),
        "Cost against volume, with the break-even point": plot_cost_vs_volume(metrics),
        "Cascade: share answered by the student, quality and cost": plot_cascade(metrics),
        "Latency distribution at the costed concurrency": plot_latency(latencies) if latencies else None,
        "Confusion matrix": plot_confusion(metrics),
    }
    write_text(stage_dir / "report.md", markdown_text)
    write_text(stage_dir / "report.html", html_page(markdown_text, f"{name}: teacher vs student", plots))
