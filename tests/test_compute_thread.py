"""The app's one compute thread (models.ComputeThread): every model call in one thread, the caller's context with
it, and warm-up work only between requests."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from zsc_core.models import ComputeThread

WHO = contextvars.ContextVar("who", default="nobody")


def test_calls_from_any_thread_run_in_one_thread_with_the_callers_context():
    compute = ComputeThread()
    seen = []

    def work(x):
        seen.append((threading.get_ident(), WHO.get()))
        return x * 2

    def caller(name):
        WHO.set(name)
        assert compute.run(work, 21) == 42

    threads = [threading.Thread(target=caller, args=(f"request {i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({ident for ident, _ in seen}) == 1 and threading.get_ident() not in {i for i, _ in seen}
    assert sorted(who for _, who in seen) == [f"request {i}" for i in range(4)]  # e.g. Gradio's progress
    # a call made from the compute thread runs inline (no deadlock), and errors reach the caller
    assert compute.run(lambda: compute.run(work, 1)) == 2
    with pytest.raises(ZeroDivisionError):
        compute.run(lambda: 1 / 0)


def test_warm_up_jobs_wait_for_requests_and_a_failing_job_is_skipped():
    compute = ComputeThread()
    order = []
    started = threading.Event()

    def request():
        started.set()
        time.sleep(0.3)
        order.append("request")

    t = threading.Thread(target=compute.run, args=(request,))
    t.start()
    started.wait()
    compute.when_idle([lambda: order.append("warm 1"), lambda: 1 / 0, lambda: order.append("warm 2")])
    t.join()
    deadline = time.time() + 5
    while len(order) < 3 and time.time() < deadline:
        time.sleep(0.02)
    assert order == ["request", "warm 1", "warm 2"]
