"""Shadow mode's agreement on live traffic vs the agreement compare measured, on the demo's test queries.

    DISTILL_DEMO_RUN=runs/demo .venv/bin/python bench/serve_shadow.py   # about 2 min on 2 cores
    .venv/bin/python bench/serve_shadow.py                               # runs the demo first (about 5 min more)

`distill serve --mode shadow` on a finished demo run (`DISTILL_DEMO_RUN`, else `distill run -c configs/demo.yaml`
into a temporary folder) starts the student compare chose and the teacher, and every test query compare answered
is sent to it through the official openai client, 16 in flight. Shadow asks both and logs whether they agree;
compare scored the same pairs offline. The run folder is never written: its stage folders are linked into a
scratch folder, where serve writes its log. The last line is one JSON object: both agreements, compare's exact 95%
interval, n, and `within` (shadow's agreement inside compare's interval: the issue's goal); also how many of the
student's and the teacher's live answers are the very answers compare recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = REPO / "configs" / "demo.yaml"
IN_FLIGHT = 16
STAGES = ("generate", "filter", "train", "compare")


def demo_run(scratch: Path, env: dict[str, str]) -> Path:
    given = os.environ.get("DISTILL_DEMO_RUN")
    if given:
        return Path(given).resolve()
    run = scratch / "demo-run"
    subprocess.run([sys.executable, "-m", "distill.cli", "run", "-c", str(CONFIG), "--run-dir", str(run)],
                   env=env, cwd=REPO, check=True)
    return run


def linked_copy(run: Path, scratch: Path) -> Path:
    """The run's stage folders linked, not copied (the merged student is hundreds of MB): serve's own folder is
    made in the copy, so the run itself is left as it was."""
    copy = scratch / "shadow-run"
    copy.mkdir()
    for stage in STAGES:
        (copy / stage).symlink_to(run / stage, target_is_directory=True)
    return copy


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 900) -> None:
    """Until `url` answers 200 (the default leaves time for two vLLM servers to start first)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: its process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"{url}: not ready in {timeout_s:.0f} s")


def ask_all(base_url: str, texts: list[str]) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=300)

    def one(text: str) -> None:
        client.chat.completions.create(model="demo", messages=[{"role": "user", "content": text}])

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        list(pool.map(one, texts))


def shadow(run: Path, texts: list[str], env: dict[str, str]) -> list[dict]:
    """The traffic log of `distill serve --mode shadow` answering `texts`."""
    from teacher.server import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "distill.cli", "serve", "-c", str(CONFIG), "--run-dir",
                               str(run), "--mode", "shadow", "--port", str(port)], env=env, cwd=REPO)
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", server)
        ask_all(f"http://127.0.0.1:{port}/v1", texts)
    finally:
        server.terminate()  # SIGTERM stops the vLLM servers it started
        server.wait()
    return [json.loads(line) for line in (run / "serve" / "traffic.jsonl").read_text().splitlines()]


def main() -> None:
    from distill.artifacts import read_rows
    from distill.stats import exact_interval

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        run = demo_run(scratch, env)
        metrics = json.loads((run / "compare" / "metrics.json").read_text())
        compared = read_rows(run / "compare" / "answers.parquet")
        log = shadow(linked_copy(run, scratch), [row["text"] for row in compared], env)
    by_text = {record["text"]: record for record in log}
    agree = [by_text[row["text"]]["agree"] for row in compared]
    if None in agree:  # a failed backend: no pair to score
        raise SystemExit(f"{agree.count(None)} of {len(agree)} queries lack an answer of both (see serve's messages)")
    low, high = exact_interval(sum(agree), len(agree))
    ci = metrics["agreement_ci"]
    headline = metrics["headline"]  # the student compare scored agreement with, and serve asks
    shadow_agreement = sum(agree) / len(agree)
    print(json.dumps({
        "agreement_shadow": round(shadow_agreement, 4), "agreement_shadow_ci": [round(float(low), 4),
                                                                                round(float(high), 4)],
        "agreement_compare": round(metrics["agreement"], 4), "agreement_compare_ci": [round(x, 4) for x in ci],
        "n": len(agree), "n_compare": metrics["n_queries"], "within": ci[0] <= shadow_agreement <= ci[1],
        "student": headline,
        "same_student_answers": sum(by_text[r["text"]]["student"]["answer"] == r[headline] for r in compared),
        "same_teacher_answers": sum(by_text[r["text"]]["teacher"]["answer"] == r["teacher"] for r in compared),
        "answered": len(log)}))


if __name__ == "__main__":
    main()
