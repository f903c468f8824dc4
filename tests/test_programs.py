"""Programs' background thread: each program it compiles is executed once there (``first_run_fn``) before a step
can take it, so a first ``generate`` does not pay first-execution costs (on the CPU: building each YNNPACK
fusion's runtime); a failed first run reaches the step that needs the program, as a failed compile does."""

from __future__ import annotations

import threading

from jaxllm.runner.buckets import Bucket
from jaxllm.runner.programs import ForwardKey, Programs

KEYS = [ForwardKey(Bucket(t, min(t, 4))) for t in (8, 16, 32)]


def test_background_programs_are_run_once_before_a_step_gets_them():
    events, main = [], threading.get_ident()

    def first_run(key, fn):
        events.append(("run", key, fn, threading.get_ident() != main))

    programs = Programs(lambda key: f"exe-{key.bucket.num_tokens}", first_run)
    programs.compile_all(KEYS[:1], on_error=lambda key, error: False)  # start-up: the runner runs these itself
    programs.compile_in_background(KEYS)
    assert programs.get(KEYS[2]) == "exe-32"
    assert ("run", KEYS[2], "exe-32", True) in events  # on the background thread, before get returned it
    programs.wait_background()
    assert events == [("run", k, f"exe-{k.bucket.num_tokens}", True) for k in KEYS[1:]]
    assert programs.get(KEYS[1]) == "exe-16" and len(events) == 2  # served as compiled: no second run


def test_a_failed_first_run_is_never_ready_and_the_step_that_needs_the_program_compiles_it_again():
    """(On a GPU a background first run can fail for memory a step held; the step's own run meets a lasting error.)"""
    compiles = []

    def first_run(key, fn):
        if key == KEYS[1]:
            raise RuntimeError(f"first run of {key} failed")

    programs = Programs(lambda key: compiles.append(key) or f"exe-{key.bucket.num_tokens}", first_run)
    programs.compile_in_background(KEYS)
    programs.get(KEYS[2])  # the queue is done
    assert not programs.ready(KEYS[1]) and programs.ready(KEYS[0])
    assert programs.get(KEYS[1]) == "exe-16" and compiles.count(KEYS[1]) == 2
    assert programs.ready(KEYS[1])


def test_without_first_run_fn_background_programs_are_only_compiled():
    programs = Programs(lambda key: f"exe-{key.bucket.num_tokens}")
    programs.compile_in_background(KEYS)
    programs.wait_background()
    assert [programs.get(k) for k in KEYS] == ["exe-8", "exe-16", "exe-32"]


def test_before_runs_on_the_background_thread_first_and_is_held_weakly():
    class Runner:
        def __init__(self):
            self.events = []

        def warm(self):
            self.events.append(("before", threading.get_ident()))

        def compile(self, key):
            self.events.append(("compile", key))
            return key

    runner = Runner()
    programs = Programs(runner.compile)
    programs.compile_in_background(KEYS[:2], before=runner.warm)
    programs.wait_background()
    assert runner.events[0][0] == "before" and runner.events[0][1] != threading.get_ident()
    assert runner.events[1:] == [("compile", k) for k in KEYS[:2]]
