"""bench/serve_overhead.py against the real router: the study it writes is served, and its direct side sends the
student the very body the router sends (a bench the suite never runs would drift from both unseen)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import httpx
import msgspec
from test_serve import serving

from distill.layout import RunLayout
from fake_openai import FakeEndpoint
from helpers import REPO
from teacher.client import Target


def _bench():  # a script, not a package: loaded from its file
    spec = importlib.util.spec_from_file_location("serve_overhead", REPO / "bench" / "serve_overhead.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves its annotations there
    spec.loader.exec_module(module)
    return module


def test_serve_overhead_direct_side_sends_the_students_request_as_the_router_does(tmp_path: Path) -> None:
    bench = _bench()
    text = bench.inbox_texts(1)[0]
    with FakeEndpoint(script=lambda prompt: ("billing", -0.05)) as student:
        config = bench.write_study(tmp_path, student.url)
        with serving(config, RunLayout(tmp_path / "run")) as (_, url):
            reply = httpx.post(url + "/chat/completions", content=bench.chat_requests([text])[0],
                               headers={"Content-Type": "application/json"})
        direct = bench.router_bodies(config, Target((student.url,), "student"), [text])
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-distill-answered-by"] == "student", "the scripted student is above the threshold"
    assert student.requests == [msgspec.json.decode(direct[0])]
