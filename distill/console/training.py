"""Training on the console: one progress display with the latest loss and task metric, in place of the
Trainer's own bar and the raw metric dicts it prints (`{'loss': '0.1036', 'grad_norm': ...}`)."""

from __future__ import annotations

from typing import Any

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from distill.console.progress import Progress, progress


class ConsoleCallback(TrainerCallback):
    """Shows steps, the loss of the last logged steps, and the eval loss and task metric of the last evaluation."""

    def __init__(self, metric_key: str, metric_name: str) -> None:
        self.metric_key, self.metric_name = metric_key, metric_name  # e.g. "eval_task_score", "accuracy"
        self.bar: Progress | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.bar = progress("train", state.max_steps, "step")
            self.bar.update(0, completed=state.global_step)  # a resumed run starts where it stopped

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(0, completed=state.global_step, epoch=round(state.epoch or 0.0, 2))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if self.bar is None or not logs:
            return
        fields = {"loss": logs.get("loss"), "eval loss": logs.get("eval_loss"),
                  self.metric_name: logs.get(self.metric_key)}
        self.bar.update(0, completed=state.global_step, **{k: v for k, v in fields.items() if v is not None})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_console(trainer: Any, metric_key: str, metric_name: str) -> None:
    """Replace the Trainer's console output (its tqdm bar or printed dicts) with one `ConsoleCallback`."""
    for stock in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(stock)
    trainer.add_callback(ConsoleCallback(metric_key, metric_name))
