"""The `serve` section of a config: how `distill serve` routes, limits and logs (the rest comes from compare)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.strict import Strict


class ServeConfig(Strict):
    student_url: str | None = Field(
        None, description="A running OpenAI-compatible server of the student (e.g. `vllm serve runs/<name>/train/"
        "merged`); default: distill starts one as compare did, merged or adapter as compare chose.")
    student_model_name: str = Field("student", description="Model name at `student_url`.")
    student_concurrency: int = Field(64, ge=1, description="Requests in flight to the student; more wait.")
    teacher_concurrency: int | None = Field(None, ge=1, description="Requests in flight to the teacher; more "
                                            "wait. Default: teacher.concurrency.")
    student_timeout_s: float = Field(30, gt=0, description="Longest wait (queue included) for a student answer; "
                                     "past it a cascade asks the teacher.")
    teacher_timeout_s: float = Field(120, gt=0, description="Longest wait (queue included) for a teacher answer.")
    teacher_down: Literal["student", "fail"] = Field(
        "student", description="When the teacher fails or times out: student: answer with the student's (valid) "
        "answer, with an X-Distill-Warning header and the distill_serve_degraded_total metric; fail: HTTP 503.")
    shadow_answers: Literal["teacher", "student"] = Field(
        "teacher", description="In shadow mode, whose answer the client gets (both are asked and logged).")
    token_env: str | None = Field(None, description="Environment variable holding a bearer token that every "
                                  "request must carry (Authorization: Bearer ...); /health stays open.")
    log_rotate_mb: float = Field(64, gt=0, description="Rotate serve/traffic.jsonl past this size (MB).")
