"""The HumanEval sandbox: score a generated program so that it can neither forge its result nor harm the machine.

`tulu_lite.eval.execution` runs this file once per program as ``python -I -S -B sandbox.py SETTINGS`` (standard
library only; nothing from tulu-lite is imported), with the program and its test on stdin. This *harness*:

1. forks the *candidate* before reading the job (so the candidate's memory never held the test), which isolates
   itself (`launch`) and waits for the program text (prompt + completion), executes it and answers calls;
2. runs the test itself. The test calls the candidate's function through a pair of pipes: arguments go over,
   plain data comes back (numbers, strings, lists, tuples, dicts, sets, None, ...);
3. prints one JSON verdict line on its stdout, which only the evaluator reads.

Pass/fail is decided by code that never shares a process with the generated program: printing a success marker,
exiting with status 0, killing its parent, writing to file descriptors, patching ``check`` or returning an object
whose ``__eq__`` always says True cannot make a program pass. A program that dies, raises or hangs fails.

The candidate always runs in its own session with limits on memory, CPU time, file size, processes and core dumps,
no site-packages and an empty environment; the harness is the subreaper of everything it forks and kills all of it
at the end. Where unprivileged user namespaces work (most Linux systems; also as root) it also gets new user,
mount, PID, network, IPC and UTS namespaces: the whole file system is read-only except its own empty folder, there
is no network, it sees only its own processes (so it cannot signal the harness or the evaluator) and the kernel
kills every process it forked when it ends. It runs with a non-root uid, no capabilities and cannot create further
user namespaces. What it can still do: read files your user can read, and use CPU and memory up to its limits
until the deadline.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import resource
import select
import signal
import struct
import sys
import time

MAX_MESSAGE = 16 * 1024**2  # bytes of one value passed between test and program
MAX_ITEMS = 1_000_000  # items taken from an iterator the program returns
EXITED = "exited before the end of the tests"


# ---- the wire format: length-prefixed JSON, with tags for what JSON lacks -------------------------------------------


class Gone(Exception):
    """The other side closed its pipe (the candidate died or exited)."""


class Timeout(Exception):
    """The deadline passed while waiting for the candidate."""


def send(fd: int, message: dict, deadline: float | None = None) -> None:
    data = json.dumps(message).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        _wait(fd, deadline, write=True)
        view = view[os.write(fd, view):]


def _wait(fd: int, deadline: float | None, *, write: bool = False) -> None:
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0 or not any(select.select([], [fd], [], left) if write else select.select([fd], [], [], left)):
        raise Timeout


def receive(fd: int, deadline: float | None = None) -> dict:
    """One message; raises Gone at end of file, Timeout at the deadline, ValueError for a malformed message."""
    (length,) = struct.unpack(">I", _read_exactly(fd, 4, deadline))
    if length > MAX_MESSAGE:
        raise ValueError(f"a value of {length:,} bytes is more than the test accepts ({MAX_MESSAGE:,})")
    message = json.loads(_read_exactly(fd, length, deadline))
    if not isinstance(message, dict):
        raise ValueError("malformed message")
    return message


def _read_exactly(fd: int, count: int, deadline: float | None) -> bytes:
    chunks, missing = [], count
    while missing:
        _wait(fd, deadline)
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            raise Gone
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def encode(value: object) -> object:
    """A plain value as JSON; containers JSON lacks become one-key objects ({"tuple": [...]})."""
    if value is None or isinstance(value, (bool, str, float)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    for kind in (tuple, set, frozenset):
        if isinstance(value, kind):
            return {kind.__name__: [encode(item) for item in value]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, range):
        return {"range": [value.start, value.stop, value.step]}
    if hasattr(value, "__next__") and hasattr(value, "__iter__"):  # generator, map, zip, ...
        items = []
        for item in value:
            if len(items) == MAX_ITEMS:
                raise TypeError(f"an iterator of more than {MAX_ITEMS:,} items")
            items.append(encode(item))
        return {"iterator": items}
    raise TypeError(f"a {type(value).__name__} value cannot be passed between the test and the program")


_DECODERS = {
    "tuple": lambda body: tuple(decode(item) for item in body),
    "set": lambda body: {decode(item) for item in body},
    "frozenset": lambda body: frozenset(decode(item) for item in body),
    "dict": lambda body: {decode(key): decode(value) for key, value in body},
    "bytes": bytes.fromhex,
    "complex": lambda body: complex(float(body[0]), float(body[1])),
    "range": lambda body: range(*(int(part) for part in body)),
    "iterator": lambda body: iter([decode(item) for item in body]),
}


def decode(data: object) -> object:
    """The inverse of `encode`; builds only plain values (anything else raises), never calls program code."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if isinstance(data, dict):
        if len(data) != 1 or next(iter(data)) not in _DECODERS:
            raise ValueError("malformed value")
        (tag, body), = data.items()
        return _DECODERS[tag](body)
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    raise ValueError("malformed value")


def describe(exc: BaseException) -> str:
    """The last line of a traceback: ``ValueError: boom``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}"[:300] if text else type(exc).__name__


# ---- the candidate: runs the program, answers calls -----------------------------------------------------------------


def serve(rfd: int, wfd: int) -> None:
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    source = receive(rfd)["source"]
    try:
        exec(compile(source, "program.py", "exec"), namespace)
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
    """The sandboxed process that will run the program (see `launch`), forked before the job is read."""

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


def kill_descendants() -> None:
    """SIGKILL every child of this process until none is left, reaping them (orphans are re-parented to us)."""
    me = os.getpid()
    for _ in range(1000):
        children = _children(me)
        if not children:
            break
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:  # no /proc (not Linux) or no CONFIG_PROC_CHILDREN: reap what has exited
        try:
            reaped, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return []
        return [] if reaped == 0 else [reaped]


# ---- the launcher: from the harness's fork to the candidate serving ------------------------------------------


def _launch_or_report(settings: dict, rfd: int, wfd: int, harness_pid: int) -> None:
    try:
        launch(settings, rfd, wfd, harness_pid)
    except BaseException as exc:  # noqa: BLE001 - tell the harness why instead of dying silently
        try:
            receive(rfd)  # the harness sends the program first; answer it with the reason
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else describe(exc)
            send(wfd, {"setup_error": reason})
        finally:
            os._exit(127)
    os._exit(0)


def launch(settings: dict, rfd: int, wfd: int, harness_pid: int) -> None:
    """Isolate this (forked) process as `settings` ask, then serve the program."""
    calls = os_calls()
    calls.die_with_parent(harness_pid)
    os.setsid()  # its own session and process group: the harness kills the group
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never the harness's job or verdict pipes
        os.dup2(devnull, fd)
    if settings["isolate"]:
        calls.enter_namespaces()
        alive_r, alive_w = os.pipe()
        child = os.fork()
        if child:  # stays outside the new PID namespace and waits: its death kills the candidate (PDEATHSIG)
            for fd in (alive_r, rfd, wfd):
                os.close(fd)
            _, status = os.waitpid(child, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        os.close(alive_w)
        calls.die_with_parent_pipe(alive_r)  # PID 1 of the namespace: getppid() says nothing
        os.setsid()  # out of the launcher's group too: kill(0, ...) must not reach a process outside
        calls.seal_file_system(settings["folder"])
    limit_resources(settings, processes=64)
    os.chdir(settings["folder"])
    os.environ.clear()
    os.environ.update(PATH="/usr/bin:/bin", HOME=settings["folder"], TMPDIR=settings["folder"], LANG="C.UTF-8")
    keep = sorted({0, 1, 2, rfd, wfd})
    for low, high in zip(keep, [*keep[1:], 65536]):
        os.closerange(low + 1, high)
    calls.no_new_privileges()
    if settings["isolate"]:
        calls.drop_capabilities()
    serve(rfd, wfd)


def limit_resources(settings: dict, processes: int | None) -> None:
    limits = [(resource.RLIMIT_AS, settings["memory_bytes"]), (resource.RLIMIT_CPU, int(settings["timeout"]) + 1),
              (resource.RLIMIT_FSIZE, settings["file_bytes"]), (resource.RLIMIT_CORE, 0)]
    if processes is not None:
        limits.append((resource.RLIMIT_NPROC, processes))  # not enforced by the kernel for uid 0 (root)
    for kind, value in limits:
        _, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


# ---- Linux system calls (ctypes: Python 3.11 has no os.unshare) -------------------------------------------------


class _Linux:
    CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
    CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
    MS_REC, MS_PRIVATE = 16384, 1 << 18
    PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
    SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
    MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 1, 2

    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> None:
        if result != 0:
            errno = self.ctypes.get_errno()
            raise OSError(errno, f"{what}: {os.strerror(errno)}")

    def prctl(self, option: int, value: int) -> None:
        self._check(self.libc.prctl(option, value, 0, 0, 0), "prctl")

    def protect_harness(self) -> None:
        # Not dumpable: processes of the same user cannot read its memory or file descriptors through /proc or
        # ptrace. Subreaper: whatever the candidate forks and orphans is re-parented here, to be killed.
        self.prctl(self.PR_SET_DUMPABLE, 0)
        self.prctl(self.PR_SET_CHILD_SUBREAPER, 1)

    def die_with_parent(self, parent: int) -> None:
        self.prctl(self.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before PDEATHSIG was set
            os._exit(1)

    def die_with_parent_pipe(self, alive_r: int) -> None:
        self.prctl(self.PR_SET_PDEATHSIG, signal.SIGKILL)
        if select.select([alive_r], [], [], 0)[0]:  # end of file: the launcher is already gone
            os._exit(1)

    def no_new_privileges(self) -> None:
        self.prctl(self.PR_SET_NO_NEW_PRIVS, 1)

    def drop_capabilities(self) -> None:
        """Give up every capability (held in the new user namespace since unshare): no mount, no remount."""
        ctypes = self.ctypes
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable; twice (64 capability bits)
        self._check(self.libc.capset(header, data), "capset")

    def enter_namespaces(self) -> None:
        """New user (non-root uid inside), mount, PID, network, IPC and UTS namespaces for the next child."""
        uid, gid = os.geteuid(), os.getegid()
        flags = (self.CLONE_NEWUSER | self.CLONE_NEWNS | self.CLONE_NEWPID | self.CLONE_NEWNET | self.CLONE_NEWIPC
                 | self.CLONE_NEWUTS)
        if self.libc.unshare(flags) != 0:
            errno = self.ctypes.get_errno()
            why = {1: "not permitted (unprivileged user namespaces are switched off, or a security policy forbids "
                      "them)", 22: "not supported by this kernel",
                   28: "no user namespace left (user.max_user_namespaces)"}.get(errno, os.strerror(errno))
            raise OSError(errno, f"unshare: {why}")
        # Inside, the candidate has the same uid (1000 for root): not 0, so it cannot regain the capabilities it
        # drops. Only a dumpable process may write its own maps (the harness is not: its memory stays private).
        self.prctl(self.PR_SET_DUMPABLE, 1)
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid or 1000} {uid} 1"),
                           ("gid_map", f"{gid or 1000} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as handle:
                handle.write(text)
        self.prctl(self.PR_SET_DUMPABLE, 0)

    def mount(self, source: str | None, target: str, kind: str | None, flags: int) -> None:
        encoded = [None if part is None else part.encode() for part in (source, target, kind)]
        self._check(self.libc.mount(*encoded, flags, None), f"mount {target}")

    def seal_file_system(self, folder: str) -> None:
        """Everything read-only except `folder`; this namespace's own /proc; no nested user namespaces."""
        self.mount(None, "/", None, self.MS_REC | self.MS_PRIVATE)
        self.mount(folder, folder, None, self.MS_BIND)
        try:
            self.mount("proc", "/proc", "proc", self.MS_NOSUID | self.MS_NODEV | self.MS_NOEXEC)
        except OSError:  # a container that masks parts of /proc refuses a new one; the old one becomes read-only
            pass
        try:
            with open("/proc/sys/user/max_user_namespaces", "w") as handle:
                handle.write("0")
        except OSError:
            pass
        if self._mount_setattr("/", recursive=True, read_only=True):
            self._mount_setattr(folder, recursive=False, read_only=False)
        else:
            for target, flags in self._mounts():
                try:
                    self.mount(None, target, None, self.MS_REMOUNT | self.MS_BIND | self.MS_RDONLY | flags)
                except OSError:
                    pass  # a mount hidden under another one
            flags = dict(self._mounts())[folder]
            self.mount(None, folder, None, self.MS_REMOUNT | self.MS_BIND | flags)

    def _mount_setattr(self, path: str, *, recursive: bool, read_only: bool) -> bool:
        """mount_setattr(2) (Linux 5.12+); False when the kernel lacks it."""
        attributes = self.MOUNT_ATTR_RDONLY | (self.MOUNT_ATTR_NOSUID if read_only else 0)
        settings = struct.pack("=QQQQ", attributes if read_only else 0, 0 if read_only else attributes, 0, 0)
        buffer = self.ctypes.create_string_buffer(settings, len(settings))
        result = self.libc.syscall(self.SYS_MOUNT_SETATTR, self.AT_FDCWD, path.encode(),
                                   self.AT_RECURSIVE if recursive else 0, buffer, len(settings))
        if result != 0 and self.ctypes.get_errno() == 38:  # ENOSYS
            return False
        self._check(result, f"mount_setattr {path}")
        return True

    def _mounts(self) -> list[tuple[str, int]]:
        """(mount point, the flags a less privileged namespace may not clear) for every mount: for kernels before
        5.12 (no mount_setattr), which remount each mount point."""
        keep = {"nosuid": self.MS_NOSUID, "nodev": self.MS_NODEV, "noexec": self.MS_NOEXEC}
        with open("/proc/self/mountinfo") as handle:
            entries = [line.split() for line in handle]
        return [(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]),
                 sum(keep.get(option, 0) for option in fields[5].split(","))) for fields in entries]


class _Portable:
    """Not Linux: sessions and resource limits only."""

    def protect_harness(self) -> None:
        pass

    def drop_capabilities(self) -> None:
        pass

    def die_with_parent(self, parent: int) -> None:
        pass

    def no_new_privileges(self) -> None:
        pass

    def enter_namespaces(self) -> None:
        raise OSError("namespaces need Linux")


def os_calls():
    return _Linux() if sys.platform.startswith("linux") else _Portable()


if __name__ == "__main__":
    harness(json.loads(sys.argv[1]))
