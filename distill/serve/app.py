"""The HTTP server (aiohttp.web): `/v1/chat/completions`, `/v1/models`, `/health` and `/metrics`.

A request is answered only after its traffic line is written (distill/serve/traffic.py). Headers say how it
was answered: X-Distill-Answered-By (student or teacher), X-Distill-Confidence (the student's), X-Distill-Escalated
(why a cascade asked the teacher), X-Distill-Warning (e.g. the teacher was down), X-Request-Id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from distill.serve.metrics import ServeMetrics
from distill.serve.router import Outcome, Router
from distill.serve.traffic import LogWriteError, TrafficLog, now
from distill.serve.wire import BadRequest, completion, error_response, read_input, stream_events

ROUTER = web.AppKey("router", Router)
LOG = web.AppKey("log", TrafficLog)
METRICS = web.AppKey("metrics", ServeMetrics)
MODEL = web.AppKey("model", str)
_decode = msgspec.json.Decoder().decode


def _headers(outcome: Outcome, request_id: str) -> dict[str, str]:
    headers = {"X-Request-Id": request_id}
    if outcome.answered_by:
        headers["X-Distill-Answered-By"] = outcome.answered_by
    if outcome.student is not None and outcome.student.confidence is not None:
        headers["X-Distill-Confidence"] = f"{outcome.student.confidence:.6g}"
    if outcome.escalated:
        headers["X-Distill-Escalated"] = outcome.escalated
    if outcome.warnings:
        headers["X-Distill-Warning"] = "; ".join(outcome.warnings)
    return headers


def _record(request_id: str, text: str, router: Router, outcome: Outcome, latency_ms: float) -> dict[str, Any]:
    chosen = outcome.chosen
    return {"id": request_id, "time": now(), "mode": router.plan.mode, "text": text,
            "answered_by": outcome.answered_by, "answer": outcome.content,
            "valid": chosen is not None and chosen.value is not None,
            "confidence": outcome.student.confidence if outcome.student else None,
            "threshold": router.plan.threshold, "escalated": outcome.escalated, "degraded": outcome.degraded,
            "agree": router.agreement(outcome), "latency_ms": round(latency_ms, 3),
            "student": outcome.student.record() if outcome.student else None,
            "teacher": outcome.teacher.record() if outcome.teacher else None}


def _teacher_pair(outcome: Outcome) -> dict[str, Any] | None:
    """The teacher's answer as a gateway records it, where one was paid for."""
    teacher = outcome.teacher
    if teacher is None or teacher.reply.response is None:
        return None
    return {"request": teacher.reply.request, "response": teacher.reply.response}


def _count(metrics: ServeMetrics, router: Router, outcome: Outcome, seconds: float) -> None:
    for name, asked in (("student", outcome.student), ("teacher", outcome.teacher)):
        if asked is not None and asked.reply.failed:
            metrics.backend_errors.labels(name).inc()
        elif asked is not None and asked.value is None:
            metrics.invalid.labels(name).inc()
    if outcome.escalated:
        metrics.escalations.labels(outcome.escalated).inc()
    if outcome.degraded:
        metrics.degraded.inc()
    if router.plan.mode == "shadow" and (agree := router.agreement(outcome)) is not None:
        metrics.shadow.labels("yes" if agree == 1 else "no").inc()
    if outcome.answered_by is None:
        metrics.errors.labels("backend").inc()
        return
    metrics.answers.labels(outcome.answered_by).inc()
    metrics.latency.labels(outcome.answered_by).observe(seconds)


async def chat(request: web.Request) -> web.StreamResponse:
    router, metrics = request.app[ROUTER], request.app[METRICS]
    metrics.requests.labels(router.plan.mode).inc()
    try:
        asked = read_input(_decode(await request.read()))
    except (BadRequest, msgspec.DecodeError) as exc:
        metrics.errors.labels("bad_request").inc()
        return error_response(400, str(exc), "invalid_request_error")
    request_id, start = f"chatcmpl-{uuid.uuid4().hex}", time.perf_counter()
    outcome = await router.route(asked.text)
    seconds = time.perf_counter() - start
    try:
        request.app[LOG].write(_record(request_id, asked.text, router, outcome, seconds * 1000),
                               _teacher_pair(outcome))
    except LogWriteError as exc:
        metrics.errors.labels("log").inc()
        return error_response(500, f"traffic log not written, so no answer is given: {exc}", "server_error")
    _count(metrics, router, outcome, seconds)
    headers = _headers(outcome, request_id)
    if outcome.answered_by is None:
        return _no_answer(outcome, headers)
    return await _answer(request, asked, outcome, request_id, headers)


def _no_answer(outcome: Outcome, headers: dict[str, str]) -> web.Response:
    errors = [a.reply.answer.error for a in (outcome.student, outcome.teacher) if a is not None and a.reply.failed]
    return error_response(503, f"no backend answered: {'; '.join(e for e in errors if e)}", "server_error", headers)


async def _answer(request: web.Request, asked: Any, outcome: Outcome, request_id: str, headers: dict[str, str]
                  ) -> web.StreamResponse:
    chosen = outcome.chosen
    assert chosen is not None
    if chosen.value is None:
        outcome.warnings.append(f"the {outcome.answered_by}'s answer is not valid for the task")
        headers = _headers(outcome, request_id)
    answer = chosen.reply.answer
    usage = {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
             "total_tokens": answer.prompt_tokens + answer.completion_tokens}
    model, created = request.app[MODEL], int(time.time())
    if not asked.stream:
        return web.Response(body=completion(request_id, created, model, outcome.content, usage),
                            content_type="application/json", headers=headers)
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)
    for event in stream_events(request_id, created, model, outcome.content, usage, asked.include_usage):
        await response.write(event)
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [
        {"id": request.app[MODEL], "object": "model", "created": 0, "owned_by": "distill"}]})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "mode": request.app[ROUTER].plan.mode})


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": ServeMetrics.content_type})


def _auth(token: str | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Callable[..., Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if token is not None and request.path != "/health" and not hmac.compare_digest(given, expected):
            request.app[METRICS].errors.labels("unauthorized").inc()
            return error_response(401, "missing or wrong bearer token (Authorization: Bearer ...)",
                                  "authentication_error")
        return await handler(request)

    return check


async def _syncing(app: web.Application) -> Any:
    """Backends open and close with the server; the logs are fsynced every second (see traffic.py)."""
    router = app[ROUTER]
    backends = [b for b in (router.student, router.teacher) if b is not None]
    for backend in backends:
        await backend.start()

    async def sync_forever() -> None:
        while True:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(app[LOG].sync)

    task = asyncio.create_task(sync_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for backend in backends:
        await backend.close()
    app[LOG].close()


def build_app(router: Router, log: TrafficLog, model: str, token: str | None) -> web.Application:
    app = web.Application(middlewares=[_auth(token)], client_max_size=8 * 1024 * 1024)
    app[ROUTER], app[LOG], app[METRICS], app[MODEL] = router, log, ServeMetrics(), model
    app.cleanup_ctx.append(_syncing)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_page)
    return app
