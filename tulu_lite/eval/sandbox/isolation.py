"""Isolating the candidate: its own session, resource limits and (where Linux allows) namespaces.

`isolate` turns the harness's fork into the candidate's process: a new session, no inherited file descriptors
but its two pipes, an empty environment, limits on memory, CPU time, file size, processes and core dumps, no new
privileges; with `settings["isolate"]` also new user, mount, PID, network, IPC and UTS namespaces, a read-only file
system except its own folder and no capabilities. `kill_descendants` is the harness's clean-up as the subreaper of
everything the candidate forks. Standard library only (ctypes for the Linux calls Python 3.11 lacks).
"""

from __future__ import annotations

import os
import re
import resource
import select
import signal
import struct
import sys


def isolate(settings: dict, rfd: int, wfd: int, harness_pid: int) -> None:
    """Isolate this (forked) process as `settings` ask; returns in the process that will serve the program
    (with namespaces, a child: this process stays outside the new PID namespace, waits for it and exits)."""
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


def limit_resources(settings: dict, processes: int | None) -> None:
    limits = [(resource.RLIMIT_AS, settings["memory_bytes"]), (resource.RLIMIT_CPU, int(settings["timeout"]) + 1),
              (resource.RLIMIT_FSIZE, settings["file_bytes"]), (resource.RLIMIT_CORE, 0)]
    if processes is not None:
        limits.append((resource.RLIMIT_NPROC, processes))  # not enforced by the kernel for uid 0 (root)
    for kind, value in limits:
        _, hard = resource.getrlimit(kind)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(kind, (value, value))


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

