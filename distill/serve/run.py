"""`distill serve -c CONFIG`: start the backends the mode needs (the student compare chose, the teacher), then
answer on HOST:PORT until stopped; the vLLM servers started here stop with it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from distill.config import Config
from distill.errors import UserError
from distill.layout import RunLayout
from distill.serve.backends import Backend
from distill.serve.plan import Plan, load_plan
from distill.serve.router import Router
from distill.serve.traffic import TrafficLog
from distill.tasks import make_task
from teacher.client import Target


def bearer_token(config: Config) -> str | None:
    variable = config.serve.token_env
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise UserError(f"environment variable {variable} (serve.token_env) is not set: set it to the bearer token "
                        "clients must send, or remove serve.token_env")
    return token


@contextmanager
def student_target(config: Config, layout: RunLayout, plan: Plan) -> Iterator[Target]:
    """The student at `serve.student_url`, or served here as compare served the one it chose."""
    from student.serve import serve_adapter, serve_merged

    if config.serve.student_url:
        yield Target((config.serve.student_url,), config.serve.student_model_name)
        return
    log = layout.serve.server_log("student")
    if plan.headline == "merged":
        with serve_merged(config, layout, log) as target:
            yield target
        return
    with serve_adapter(config, layout, log) as targets:
        yield targets[0]


def make_router(config: Config, plan: Plan, student: Target | None, teacher: Target | None) -> Router:
    serve = config.serve
    return Router(config, make_task(config.task), plan,
                  Backend("student", student, "/completions", serve.student_concurrency, serve.student_timeout_s)
                  if student else None,
                  Backend("teacher", teacher, "/chat/completions",
                          serve.teacher_concurrency or config.teacher.concurrency, serve.teacher_timeout_s)
                  if teacher else None)


def build(config: Config, layout: RunLayout, stack: ExitStack, mode: str | None = None) -> Any:
    """The server's app, with the backends its mode needs started on `stack` (stopped when it closes)."""
    from distill.serve.app import build_app
    from teacher.server import open_teacher

    plan = load_plan(config, layout, mode)
    token = bearer_token(config)
    student = stack.enter_context(student_target(config, layout, plan)) if plan.uses_student else None
    teacher = (stack.enter_context(open_teacher(config.teacher, layout.serve.server_log("teacher")))
               if plan.uses_teacher else None)
    log = TrafficLog(layout.serve, config.data, int(config.serve.log_rotate_mb * 1024 * 1024))
    return build_app(make_router(config, plan, student, teacher), log, config.name, token)


def serve(config: Config, layout: RunLayout, host: str, port: int, mode: str | None = None) -> None:
    from aiohttp import web

    from distill.serve.app import ROUTER

    with ExitStack() as stack:
        app = build(config, layout, stack, mode)
        plan = app[ROUTER].plan
        threshold = f", threshold {plan.threshold:.4g} on {plan.confidence}" if plan.mode == "cascade" else ""
        print(f"serving {config.name} ({plan.mode}{threshold}) on http://{host}:{port}/v1; traffic log "
              f"{layout.serve.traffic}", file=sys.stderr, flush=True)
        web.run_app(app, host=host, port=port, print=None, access_log=None, loop=_event_loop())


def _event_loop() -> Any:
    """uvloop where installed (vLLM brings it): the router's own latency is mostly event-loop and socket work."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
