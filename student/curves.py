"""Training curves from the Trainer's log: loss on train and eval, and the task metric on eval."""

from __future__ import annotations

from typing import Any

from distill.artifacts import finite
from distill.present import new_figure, to_png
from student.evaluate import SCORE_KEY


def curves(log_history: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Losses as logged; a diverged (NaN or infinite) loss becomes null, as strict JSON has no such number."""
    train = [{"step": e["step"], "epoch": e.get("epoch"), "loss": finite(e["loss"])}
             for e in log_history if "loss" in e]
    evaluation = [{"step": e["step"], "epoch": e.get("epoch"), "loss": finite(e.get("eval_loss")),
                   SCORE_KEY: e.get(f"eval_{SCORE_KEY}"), "valid_rate": e.get("eval_task_valid_rate")}
                  for e in log_history if "eval_loss" in e]
    return {"train": train, "eval": evaluation}


def still_rising(data: dict[str, list[dict[str, float]]]) -> bool:
    """Whether the task score peaked at the last evaluation after rising: training ended before the peak."""
    scores = [p[SCORE_KEY] for p in data["eval"] if p[SCORE_KEY] is not None]
    return len(scores) >= 2 and scores[-1] >= max(scores) and scores[-1] > scores[0]


def plot_curves(data: dict[str, list[dict[str, float]]], quality_name: str, best_step: int | None) -> bytes:
    fig, (loss_ax, score_ax) = new_figure(10, 3.6, columns=2)
    loss_ax.plot([p["step"] for p in data["train"]], [p["loss"] for p in data["train"]], label="train")
    loss_ax.plot([p["step"] for p in data["eval"]], [p["loss"] for p in data["eval"]], "o-", label="eval")
    loss_ax.set(xlabel="step", ylabel="loss (answer tokens)", title="Loss")
    loss_ax.legend(fontsize=8)
    scored = [p for p in data["eval"] if p[SCORE_KEY] is not None]
    score_ax.plot([p["step"] for p in scored], [p[SCORE_KEY] for p in scored], "o-", color="tab:green")
    if best_step is not None:
        score_ax.axvline(best_step, color="grey", linestyle="--", label=f"kept: step {best_step}")
        score_ax.legend(fontsize=8)
    score_ax.set(xlabel="step", ylabel=f"{quality_name} vs teacher", ylim=(-0.02, 1.02),
                 title="Task metric on the eval split")
    if still_rising(data):
        last = (scored[-1]["step"], scored[-1][SCORE_KEY])
        score_ax.annotate("still rising at the end:\nmore epochs may help", xy=last, xytext=(0.35, 0.12),
                          textcoords="axes fraction", fontsize=8, color="tab:red",
                          arrowprops={"arrowstyle": "->", "color": "tab:red"})
    for ax in (loss_ax, score_ax):
        ax.grid(alpha=0.3)
    return to_png(fig)
