"""The HumanEval sandbox: score a generated program so that it can neither forge its result nor harm the machine.

`tulu_lite.eval.execution` runs this folder once per program as ``python -I -S -B .../sandbox SETTINGS`` (standard
library only; nothing from tulu-lite is imported), with the program and its test on stdin. This *harness*:

1. forks the *candidate* before reading the job (so the candidate's memory never held the test), which isolates
   itself (`isolation.isolate`) and waits for the program text (prompt + completion), executes it and answers calls;
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

The folder is run, not imported: Python puts it first on the harness's sys.path, so its modules import each other
by their plain names. `wire`: the messages between harness and candidate; `harness`: the harness, the judge and
the candidate's side of the calls; `isolation`: sessions, resource limits, namespaces and the clean-up;
`compiling`: how the program's text becomes code (the evaluator also uses it, to fail a program that does not
compile without starting a sandbox).
"""
