"""A study rendered: `study.md` and `study.html` (its table of students against the teacher, the learning curve
and the labels it says are needed, and their plots), from the results distill/study/run.py gathered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifacts import write_text
from distill.present import fmt, html_page, new_figure, to_png, with_interval


def write_study_report(study: dict[str, Any], name: str, root: Path) -> None:
    """`study.md` and `study.html` in the run folder `root`."""
    curve, quality = study["learning_curve"], study["quality_name"]
    markdown_text = study_markdown(study, name) + (curve_markdown(curve, quality) if curve else "")
    plots = {"Students against the teacher": study_plot(study),
             "Learning curve": curve_plot(curve, quality) if curve else None}
    write_text(root / "study.md", markdown_text)
    write_text(root / "study.html", html_page(markdown_text, f"{name}: study", plots))


def study_markdown(study: dict[str, Any], name: str) -> str:
    teacher, quality = study["teacher"], study.get("quality_name", "quality")
    lines = [f"# {name}: student settings compared", "",
             f"Teacher {teacher['model']}: {quality} {fmt(teacher['quality'])}, "
             f"${fmt(teacher['cost_per_1k_queries'], 5)} per 1k queries at {fmt(teacher.get('concurrency'))} "
             "requests in flight.", "",
             f"| variant | student | settings | training rows | served as | verdict | {quality} [95% CI] | "
             "student - teacher [95% CI] | agreement [95% CI] | queries/s | cost per 1k ($) | break-even queries |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in study["variants"]:
        diff = row.get("quality_diff_ci")
        lines.append(f"| {row['variant']} | {row['student_model']} | {row['settings']} | "
                     f"{fmt(row.get('train_rows'), 0)} | {row['served_as']} | "
                     f"{row.get('verdict', 'n/a')} | {with_interval(row['quality'], row['quality_ci'])} | "
                     f"{f'[{diff[0]:+.3f}, {diff[1]:+.3f}]' if diff else 'n/a'} | "
                     f"{with_interval(row['agreement'], row.get('agreement_ci'))} | "
                     f"{fmt(row['queries_per_s'], 2)} | {fmt(row['cost_per_1k_queries'], 5)} | "
                     f"{fmt(row['break_even_queries'], 0)} |")
    return "\n".join(lines) + "\n"


def study_plot(study: dict[str, Any]) -> bytes:
    use_quality = all(row["quality"] is not None for row in study["variants"])
    fig, ax = new_figure()
    points = [("teacher", study["teacher"]["cost_per_1k_queries"],
               study["teacher"]["quality"] if use_quality else 1.0)]
    points += [(row["variant"], row["cost_per_1k_queries"], row["quality"] if use_quality else row["agreement"])
               for row in study["variants"]]
    for label, cost, quality in points:
        if cost is None or quality is None:
            continue
        ax.scatter(cost, quality, s=40, zorder=3)
        ax.annotate(label, (cost, quality), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xlabel="cost per 1k queries ($)",
           ylabel=study.get("quality_name", "quality") if use_quality else "agreement with the teacher",
           title="Students against the teacher")
    ax.grid(alpha=0.3)
    return to_png(fig)


def _unfitted(measure: str, measured: int, no_gold: bool) -> str:
    """Why a measure has no fitted curve: too few points measured, or none (without gold, for a gold measure)."""
    if measured:
        why = f"too few points to fit ({measured} measured; three or more are needed)"
    elif no_gold:
        why = ("not measured: the test queries have no gold answers (data.gold_column), so the rule decides on "
               "agreement with the teacher")
    else:
        why = "not measured at any point (see each point's compare report)"
    return f"- {measure}: {why}.\n"


def _needed_sentence(fit: dict[str, Any], measure: str) -> str:
    needed, cost = fit["labels_needed"], fit["labelling_cost"]
    chance = f"{fit['power']:.0%}"
    if needed["median"] is None:
        text = (f"- {measure}: the fitted curve does not reach {fit['target']:+.3f}, where the rule (bar "
                f"{fit['bar']:+.3f}) would pass with {chance} probability on {fit['test_queries']:,} test queries "
                f"(reached in {needed['reached_share']:.0%} of bootstrap refits).")
    else:
        span = (f"90% range {fmt(needed['low'], 0)} to {fmt(needed['high'], 0)}" if needed["high"] is not None
                else f"at least {fmt(needed['low'], 0)}; the upper end is not reached in every refit")
        text = (f"- {measure}: about {fmt(needed['median'], 0)} kept labels ({span}) make the rule (bar "
                f"{fit['bar']:+.3f}) say distil with {chance} probability on {fit['test_queries']:,} test queries "
                f"(the fitted value {fit['target']:+.3f} there)"
                + (f", about ${cost['median']:,.2f} of teacher labelling." if cost["median"] is not None else "."))
    if fit["min_test_queries"] is not None:
        text += (f" However many labels, the rule needs about {fit['min_test_queries']:,} test queries at the "
                 f"fitted ceiling ({fit['ceiling']:+.3f}).")
    return text + (" The curve is still rising at its last point.\n" if fit["still_rising"] else "\n")


def curve_markdown(curve: dict[str, Any], quality_name: str) -> str:
    points = curve["points"]
    no_gold = not any(p.get("against_gold") for p in points)
    sentences = []
    for key, fitted, measure, needs_gold in (("quality_diff", "quality", f"{quality_name}, student - teacher", True),
                                             ("agreement", "agreement", "agreement", False)):
        fit = curve[fitted]
        sentences.append(_needed_sentence(fit, measure) if fit is not None
                         else _unfitted(measure, sum(p[key] is not None for p in points), needs_gold and no_gold))
    lines = ["", "## Learning curve", "",
             f"| kept labels | {quality_name} [95% CI] | agreement [95% CI] | verdict |", "|---|---|---|---|",
             *[f"| {p['labels']:,} | {with_interval(p['quality'], p['quality_ci'])} | "
               f"{with_interval(p['agreement'], p['agreement_ci'])} | {p['verdict']} |" for p in points],
             "", "Labels needed, from a power-law fit with a bootstrap over the points:", "",
             *[sentence.rstrip() for sentence in sentences]]
    return "\n".join(lines) + "\n"


def curve_plot(curve: dict[str, Any], quality_name: str) -> bytes:
    fig, ax = new_figure()
    for measure, label, color in (("quality", quality_name, "tab:blue"), ("agreement", "agreement", "tab:orange")):
        points = [p for p in curve["points"] if p[measure] is not None]
        if not points:
            continue
        low = [p[measure] - (p[f"{measure}_ci"] or [p[measure]] * 2)[0] for p in points]
        high = [(p[f"{measure}_ci"] or [p[measure]] * 2)[1] - p[measure] for p in points]
        ax.errorbar([p["labels"] for p in points], [p[measure] for p in points], yerr=[low, high], fmt="o-",
                    capsize=3, color=color, label=label)
        if measure == "agreement" and curve[measure] is not None:  # quality's bar is on the difference
            ax.axhline(curve[measure]["bar"], color=color, linestyle=":", label=f"{label} bar")
    ax.set(xscale="log", xlabel="kept teacher labels", ylabel="score", ylim=(-0.02, 1.02),
           title="Student quality against labels")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return to_png(fig)

