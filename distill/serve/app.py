"""The HTTP server (aiohttp.web): `/v1/chat/completions`, `/v1/models`, `/health` and `/metrics`.

A request is answered only after its traffic line is written (distill/serve/traffic.py). Headers say how it
was answered: X-Distill-Answered-By (student or teacher), X-Distill-Confidence (the student's), X-Distill-Escalated
(why a cascade asked the teacher), X-Distill-Warning (e.g. the teacher was down), X-Request-Id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from distill.serve.backends import BackendFailed, Reply
from distill.serve.metrics import ServeMetrics
from distill.serve.relay import Assembled
from distill.serve.router import Outcome, Pending, Router
from distill.serve.traffic import LogWriteError, TrafficLog, now
from distill.serve.wire import (
    DONE,
    BadRequest,
    Input,
    completion,
    error_event,
    error_response,
    event,
    read_input,
    stream_events,
)
from teacher.client import Answer, parse_response

ROUTER = web.AppKey("router", Router)
LOG = web.AppKey("log", TrafficLog)
METRICS = web.AppKey("metrics", ServeMetrics)
MODEL = web.AppKey("model", str)
_decode = msgspec.json.Decoder().decode
STREAM_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


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
    if asked.stream and router.teacher is not None and router.plan.mode in ("teacher", "cascade"):
        first = await router.before_teacher(asked.text)
        if isinstance(first, Pending):
            return await _relay(request, asked, first, request_id, start)
        outcome = first
    else:
        outcome = await router.route(asked.text)
    return await _finish(request, asked, outcome, request_id, start)


def _log(app: web.Application, request_id: str, text: str, outcome: Outcome, start: float) -> str | None:
    """Write the request's lines and count it; the error where the log could not be written."""
    seconds = time.perf_counter() - start
    try:
        app[LOG].write(_record(request_id, text, app[ROUTER], outcome, seconds * 1000), _teacher_pair(outcome))
    except LogWriteError as exc:
        app[METRICS].errors.labels("log").inc()
        return f"traffic log not written, so no answer is given: {exc}"
    _count(app[METRICS], app[ROUTER], outcome, seconds)
    return None


async def _finish(request: web.Request, asked: Input, outcome: Outcome, request_id: str, start: float
                  ) -> web.StreamResponse:
    failure = _log(request.app, request_id, asked.text, outcome, start)
    if failure is not None:
        return error_response(500, failure, "server_error")
    headers = _headers(outcome, request_id)
    if outcome.answered_by is None:
        return _no_answer(outcome, headers)
    return await _answer(request, asked, outcome, request_id, headers)


async def _relay(request: web.Request, asked: Input, pending: Pending, request_id: str, start: float
                 ) -> web.StreamResponse:
    """The teacher's tokens to the client as they come; the log line once the whole answer is in, before the
    stream's end is sent. A teacher that fails before its first token is handled like any failed teacher."""
    router = request.app[ROUTER]
    assert router.teacher is not None
    sent = router.teacher.body(router.teacher_request(asked.text))
    chunks, teacher_start = router.teacher.stream(sent), time.perf_counter()
    try:
        try:
            first = await anext(chunks)
        except (BackendFailed, StopAsyncIteration) as exc:
            failed = router.teacher_asked(Reply(sent, Answer(error=str(exc) or "teacher: empty stream")))
            return await _finish(request, asked, router.after_teacher(pending, failed), request_id, start)
        headers = _headers(Outcome("teacher", None, pending.student, escalated=pending.escalated), request_id)
        response = web.StreamResponse(headers={**headers, **STREAM_HEADERS})
        await response.prepare(request)
        ids, whole = (request_id, int(time.time()), request.app[MODEL]), Assembled()
        try:
            await _pass_through(response, ids, whole, first, chunks)
            error = None
        except BackendFailed as exc:
            error = str(exc)
        teacher = router.teacher_asked(_streamed_reply(sent, whole, error, teacher_start))
        # Tokens already sent cannot be taken back: a stream that broke off is no answer, never the student's.
        outcome = (router.after_teacher(pending, teacher) if error is None
                   else Outcome(None, None, pending.student, teacher, pending.escalated))
        await _end_stream(response, ids, whole, asked, _log(request.app, request_id, asked.text, outcome, start)
                          or error)
        return response
    finally:
        await chunks.aclose()  # a client gone mid-stream: the teacher's slot and connection are freed now


def _streamed_reply(sent: dict[str, Any], whole: Assembled, error: str | None, start: float) -> Reply:
    answer = parse_response(whole.response()) if error is None else Answer(error=error)
    answer.latency_ms = round((time.perf_counter() - start) * 1000, 3)
    return Reply(sent, answer, whole.response() if error is None else None)


async def _pass_through(response: web.StreamResponse, ids: tuple[str, int, str], whole: Assembled,
                        first: dict[str, Any], chunks: Any) -> None:
    text = whole.add(first)
    await response.write(event(*ids, {"role": "assistant", "content": text}))
    async for chunk in chunks:
        if text := whole.add(chunk):
            await response.write(event(*ids, {"content": text}))


async def _end_stream(response: web.StreamResponse, ids: tuple[str, int, str], whole: Assembled, asked: Input,
                      error: str | None) -> None:
    """The finish (and usage) once the answer is logged, or an error event where it could not be finished."""
    if error is not None:
        await response.write(error_event(error))
    else:
        await response.write(event(*ids, finish=whole.finish_reason or "stop"))
        if asked.include_usage:
            await response.write(event(*ids, usage=whole.usage or {}))
        await response.write(DONE)
    await response.write_eof()


def _no_answer(outcome: Outcome, headers: dict[str, str]) -> web.Response:
    errors = [a.reply.answer.error for a in (outcome.student, outcome.teacher) if a is not None and a.reply.failed]
    return error_response(503, f"no backend answered: {'; '.join(e for e in errors if e)}", "server_error", headers)


async def _answer(request: web.Request, asked: Input, outcome: Outcome, request_id: str, headers: dict[str, str]
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
    response = web.StreamResponse(headers={**headers, **STREAM_HEADERS})
    await response.prepare(request)
    for piece in stream_events(request_id, created, model, outcome.content, usage, asked.include_usage):
        await response.write(piece)
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
            try:
                await asyncio.to_thread(app[LOG].sync)
            except OSError as exc:  # the lines are written, but may not survive a machine crash: say so
                app[METRICS].errors.labels("log_sync").inc()
                print(f"warning: traffic log not synced to disk: {exc}", file=sys.stderr, flush=True)

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
