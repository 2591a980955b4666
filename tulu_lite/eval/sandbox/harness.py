"""The harness and the candidate: the test runs here, the program in the candidate, and only the harness judges.

`harness(settings)` forks the candidate (`Candidate`), reads the job from stdin, runs the test against the
candidate's function (`judge`) and prints the verdict. The candidate (`serve`) executes the program text and
answers calls and lookups; the test calls its functions through `Remote`. Messages go through `wire`; the
candidate's isolation is `isolation`'s.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import signal
import sys
import time

from compiling import compile_program
from isolation import isolate, kill_descendants, limit_resources, os_calls
from wire import Gone, Timeout, decode, describe, encode, receive, send

EXITED = "exited before the end of the tests"


# ---- the candidate: runs the program, answers calls ------------------------------------------------------------


def serve(rfd: int, wfd: int) -> None:
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    source = receive(rfd)["source"]
    try:
        exec(compile_program(source), namespace)
    except SystemExit:
        return send(wfd, {"exited": True})
    except BaseException as exc:  # noqa: BLE001 - whatever the program raised is its failure
        return send(wfd, {"raised": describe(exc)})
    send(wfd, {"ready": True})
    while True:
        try:
            request = receive(rfd)
        except Gone:
            return
        send(wfd, _answer(request, namespace))


def _answer(request: dict, namespace: dict) -> dict:
    """A call ({"name", "args"}) or a lookup ({"name"}: a function, or a value the test can use?)."""
    name = request.get("name")
    if name not in namespace:
        return {"missing": True}
    value = namespace[name]
    if "args" not in request and callable(value):
        return {"callable": True}
    if "args" in request:
        try:
            value = value(*decode(request["args"]))
        except SystemExit:
            return {"exited": True}
        except BaseException as exc:  # noqa: BLE001 - the function's failure, reported to the test
            return {"raised": describe(exc)}
    try:
        return {"value": encode(value)}
    except (TypeError, ValueError, RecursionError) as exc:
        return {"unsupported": str(exc)}


# ---- the harness: runs the test against the candidate -----------------------------------------------------------


class CandidateError(Exception):
    """The candidate's function raised (the message is what it raised: ``ValueError: boom``)."""


class CandidateExited(Exception):
    """The candidate exited or died before the test finished."""


class Remote:
    """A function of the candidate, called by the test like a local one."""

    def __init__(self, candidate: Candidate, name: str):
        self.candidate, self.__name__ = candidate, name

    def __call__(self, *args):
        reply = self.candidate.ask({"name": self.__name__, "args": encode(list(args))})
        if "value" in reply:
            return decode(reply["value"])
        if "raised" in reply:
            raise CandidateError(reply["raised"])
        if "unsupported" in reply:
            raise TypeError(f"{self.__name__} returned {reply['unsupported']}")
        raise CandidateExited


class Candidate:
    """The sandboxed process that will run the program (see `isolation.isolate`), forked before the job is read."""

    def __init__(self, settings: dict, deadline: float):
        self.deadline = deadline
        request_r, self.requests = os.pipe()
        self.replies, reply_w = os.pipe()
        harness = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # the launcher, then the candidate; never returns
            os.close(self.requests)
            os.close(self.replies)
            _launch_or_report(settings, request_r, reply_w, harness)
        os.close(request_r)
        os.close(reply_w)

    def ask(self, request: dict) -> dict:
        try:
            send(self.requests, request, self.deadline)
            return receive(self.replies, self.deadline)
        except (Gone, BrokenPipeError):
            raise CandidateExited from None

    def load(self, source: str) -> dict:
        return self.ask({"source": source})

    def kill(self) -> None:
        """Kill the candidate's process group, then every process left behind (we are their subreaper)."""
        for fd in (self.requests, self.replies):
            os.close(fd)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        kill_descendants()


def harness(settings: dict) -> None:
    """`settings` (folder, isolate, timeout, limits) come from the command line; the job from stdin.

    The candidate is forked first, so its copy of this process has never held the test: what it runs later
    cannot find the expected answers in its memory.
    """
    deadline = time.monotonic() + settings["timeout"]
    limit_resources(settings, processes=None)
    os_calls().protect_harness()
    candidate = Candidate(settings, deadline)
    try:
        verdict = judge(json.loads(sys.stdin.buffer.read()), candidate)
    finally:
        candidate.kill()
    sys.stdout.write(json.dumps(verdict) + "\n")
    sys.stdout.flush()


def judge(job: dict, candidate: Candidate) -> dict:
    """Run the job's test against its candidate; the verdict {"status": passed|failed|timed out, "detail": ...}."""
    try:
        candidate_source, test_source, entry_point = plan(job)
        loaded = candidate.load(candidate_source)
        if "ready" not in loaded:
            return _failure(loaded)
        if test_source is None:  # a plain script: passing is running to the end
            return {"status": "passed", "detail": ""}
        check = test_namespace(test_source, entry_point, candidate, from_program=job.get("source") is not None)
        check(Remote(candidate, entry_point))
        return {"status": "passed", "detail": ""}
    except Timeout:
        return {"status": "timed out", "detail": ""}
    except CandidateExited:
        return {"status": "failed", "detail": EXITED}
    except (CandidateError, ProgramError) as exc:
        return {"status": "failed", "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - the test failed (AssertionError, TypeError, ...)
        return {"status": "failed", "detail": describe(exc)}


class ProgramError(Exception):
    """The program text cannot be scored (it does not parse, or its test cannot be told apart)."""


def _failure(reply: dict) -> dict:
    if "setup_error" in reply:
        return {"status": "failed", "detail": f"sandbox: {reply['setup_error']}", "setup_error": True}
    return {"status": "failed", "detail": reply.get("raised", EXITED)}


_CHECK_CALL = re.compile(r"check\(([A-Za-z_]\w*)\)\s*")


def plan(job: dict) -> tuple[str, str | None, str | None]:
    """(program the candidate runs, test the harness runs, the function under test).

    A structured job gives the three. A single program text ``PROMPT COMPLETION TEST check(NAME)`` (the
    HumanEval layout) is split at its last top-level ``def check``: everything before it is the program, the
    definition is the test. The completion, in the middle, cannot move that boundary: the trusted test that
    follows it starts at column 0, and what could swallow it (an open bracket or string) makes the text fail to
    parse; a decorator put in front of it is refused. Text without a final ``check(NAME)`` is a plain script.
    """
    if job.get("source") is None:
        return job["candidate"], job["test"], job["entry_point"]
    source = job["source"].replace("\r\n", "\n").replace("\r", "\n")
    lines = source.rstrip("\n").split("\n")
    call = _CHECK_CALL.fullmatch(lines[-1])
    if call is None:
        return source, None, None
    try:
        body = ast.parse(source).body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ProgramError(f"the program does not parse ({type(exc).__name__}: {getattr(exc, 'msg', exc)})") from None
    definition, final = (body[-2], body[-1]) if len(body) >= 2 else (None, None)
    if not (isinstance(definition, ast.FunctionDef) and definition.name == "check" and not definition.decorator_list
            and isinstance(final, ast.Expr) and final.lineno == len(lines)):
        raise ProgramError("cannot tell the test from the program (the text before check(...) must end with an "
                           "undecorated def check)")
    start = definition.lineno - 1
    return "\n".join(lines[:start]) + "\n", "\n".join(lines[start:-1]) + "\n", call.group(1)


def test_namespace(test_source: str, entry_point: str, candidate: Candidate, *, from_program: bool):
    """Execute the test in a fresh namespace of the harness; return its ``check``.

    The function under test (under its own name too: some tests call it by name) is the candidate's, through
    `Remote`. A test split out of one program text may also use the program's helpers (``poly`` in
    HumanEval/32): those come from the candidate too, as calls or plain values; a structured job's test brings
    its own (the prompt, which the completion cannot change).
    """
    namespace: dict = {"__name__": "__test__", "__builtins__": builtins}
    exec(compile(test_source, "test.py", "exec"), namespace)
    if from_program:
        code = ast.parse(test_source)
        wanted = {node.id for node in ast.walk(code) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}
        for name in sorted(wanted - set(namespace) - set(dir(builtins))):
            reply = candidate.ask({"name": name})
            if "callable" in reply:
                namespace[name] = Remote(candidate, name)
            elif "value" in reply:
                namespace[name] = decode(reply["value"])
    namespace[entry_point] = Remote(candidate, entry_point)
    if not callable(namespace.get("check")):
        raise ValueError("the test defines no check(candidate)")
    return namespace["check"]


# ---- the launcher: from the harness's fork to the candidate serving ------------------------------------------


def _launch_or_report(settings: dict, rfd: int, wfd: int, harness_pid: int) -> None:
    try:
        isolate(settings, rfd, wfd, harness_pid)
        serve(rfd, wfd)
    except BaseException as exc:  # noqa: BLE001 - tell the harness why instead of dying silently
        try:
            receive(rfd)  # the harness sends the program first; answer it with the reason
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else describe(exc)
            send(wfd, {"setup_error": reason})
        finally:
            os._exit(127)
    os._exit(0)
