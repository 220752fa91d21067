"""Experiment trackers: training curves through the transformers Trainer's `report_to`, and each run's summary
(the config as parameters, the metrics, and for MLflow the report and adapter as artifacts).

MLflow logs where `tracking.mlflow_uri` points; tensorboard writes `<run>/tensorboard/` (train/ for the curves,
summary/ for the run); trackio and wandb write where their own settings say (both work offline).
"""

from __future__ import annotations

import os
from typing import Any

from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout

INSTALL = {"mlflow": "mlflow-skinny", "trackio": "trackio", "wandb": "wandb", "tensorboard": "tensorboard"}


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        flat: dict[str, Any] = {}
        for key, value in obj.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): obj}


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in flatten(metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _require(tracker: str) -> None:
    import importlib.util

    module = "mlflow" if tracker == "mlflow" else tracker
    if importlib.util.find_spec(module) is None:
        raise UserError(f"tracking.report_to has {tracker}, which is not installed: pip install {INSTALL[tracker]}")


def prepare_trackers(config: Config, layout: RunLayout) -> list[str]:
    """Check the trackers of `tracking.report_to` are installed, and set the environment their Trainer callbacks
    read (at the Trainer's creation), so the curves land in this run's experiment and folder."""
    tracking = config.tracking
    for tracker in tracking.report_to:
        _require(tracker)
    os.environ.update({"MLFLOW_EXPERIMENT_NAME": tracking.experiment, "TRACKIO_PROJECT": tracking.experiment,
                       "WANDB_PROJECT": tracking.experiment,
                       "TENSORBOARD_LOGGING_DIR": str(layout.root / "tensorboard" / "train")})
    if tracking.mlflow_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking.mlflow_uri
    return list(tracking.report_to)


def log_summary(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> None:
    """The run's summary to every tracker the config names."""
    loggers = {"mlflow": log_run, "tensorboard": _tensorboard, "trackio": _trackio, "wandb": _wandb}
    for tracker in config.tracking.trackers:
        _require(tracker)
        loggers[tracker](config, layout, metrics)


def log_run(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> str:
    """Log to `tracking.mlflow_uri`; returns the MLflow run id."""
    try:
        import mlflow
    except ImportError as exc:
        raise UserError("tracking.mlflow_uri is set but MLflow is not installed: pip install 'distill[tracking]'"
                        ) from exc
    mlflow.set_tracking_uri(config.tracking.mlflow_uri)
    mlflow.set_experiment(config.tracking.experiment)
    with mlflow.start_run(run_name=config.name) as run:
        mlflow.log_params(_params(config))
        mlflow.log_metrics(numbers(metrics))
        for path in (layout.compare.metrics, layout.compare.report_html, layout.compare.report_md):
            mlflow.log_artifact(str(path), artifact_path="compare")
        mlflow.log_artifacts(str(layout.train.adapter), artifact_path="adapter")
        for student in ("adapter", "merged"):  # the cards with compare's results (train's cards have none)
            if layout.compare.model_card(student).exists():
                mlflow.log_artifact(str(layout.compare.model_card(student)), artifact_path="compare")
        return run.info.run_id


def _params(config: Config) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in flatten(config.model_dump(mode="json")).items()}


def _tensorboard(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(layout.root / "tensorboard" / "summary"))
    try:
        for key, value in numbers(metrics).items():
            writer.add_scalar(key, value, 0)
        writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in _params(config).items()), 0)
    finally:
        writer.close()


def _trackio(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> None:
    import trackio

    trackio.init(project=config.tracking.experiment, name=config.name, config=_params(config))
    trackio.log(numbers(metrics))
    trackio.finish()


def _wandb(config: Config, layout: RunLayout, metrics: dict[str, Any]) -> None:
    import wandb

    run = wandb.init(project=config.tracking.experiment, name=config.name, config=_params(config))
    run.summary.update(numbers(metrics))
    run.finish()
