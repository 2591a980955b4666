"""The README and docs/ show commands that exist: every `tulu-lite` command in their code blocks parses.

Each command is parsed by the real command line (click's `make_context`, what `tulu-lite ...` does before it calls
anything): its subcommands resolved, its options known, its required arguments present, its values converted to
their types. Nothing runs, so the whole check takes a fraction of a second and a doc that names a command or an
option that doesn't exist (or forgets a required one) fails here instead of on a reader's machine.

What counts as a command: in a ```bash / ```sh / ```shell block, every line that runs `tulu-lite` (after
environment assignments or a `$ ` prompt) or `python -m tulu_lite` / `accelerate launch ... -m tulu_lite`; in any
other block (program output, YAML), only lines that start with `$ tulu-lite`. A trailing `\\` joins lines, `#`
starts a comment, and a pipe, `;`, `&&` or a redirection ends the command. Inline `tulu-lite ...` spans in the
prose and tables hold placeholders (RECIPE, [--gpus N]), so for them only the command path and the option names are
checked. The pages also keep lines within 120 characters, except program output quoted as printed (```text).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from tulu_lite.cli import app

try:  # typer >= 0.22 runs on its own copy of click: its commands raise that copy's UsageError
    from typer._click.exceptions import UsageError
except ImportError:  # older typer: click itself
    from click.exceptions import UsageError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell"}
COMMAND_ENDS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "2>&1", "<"}
MAX_LINE = 120


def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """Fenced code blocks of a markdown page: (language, first line number, lines)."""
    blocks, language, start, lines = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*```(\w*)", line)
        if fence and language is None:
            language, start, lines = fence.group(1).lower(), number + 1, []
        elif fence:
            blocks.append((language, start, lines))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def joined(lines: list[str], start: int) -> list[tuple[int, str]]:
    """Lines with their `\\` continuations joined, each with its first line number."""
    out, pending, first = [], "", start
    for number, line in enumerate(lines, start):
        if not pending:
            first = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def tulu_argv(line: str, shell: bool) -> list[str] | None:
    """The arguments after `tulu-lite` (or `-m tulu_lite`) when the line runs it, else None."""
    text = line.strip()
    if text.startswith("$ "):
        text = text[2:]
    elif not shell:
        return None
    words = shlex.split(text, comments=True)
    for index, word in enumerate(words):
        if word in COMMAND_ENDS:
            words = words[:index]
            break
    if "tulu-lite" in words and all("=" in word for word in words[:words.index("tulu-lite")]):
        return words[words.index("tulu-lite") + 1:]
    for index in range(len(words) - 1):
        if words[index] == "-m" and words[index + 1] == "tulu_lite" and words[0] in ("accelerate", "python",
                                                                                       "python3", "torchrun"):
            return words[index + 2:]
    return None


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every `tulu-lite` command in the code blocks of the pages: ("PAGE:LINE", argv)."""
    found = []
    for page in PAGES:
        for language, start, lines in code_blocks(page.read_text(encoding="utf-8")):
            for number, line in joined(lines, start):
                argv = tulu_argv(line, language in SHELL_LANGUAGES)
                if argv is not None:
                    found.append((f"{page.relative_to(ROOT)}:{number}", argv))
    return found


def is_group(command) -> bool:
    return hasattr(command, "resolve_command")


def parse(argv: list[str]):
    """Parse argv as `tulu-lite` would, down to the command that would run, without running anything."""
    command = typer.main.get_command(app)
    ctx = command.make_context("tulu-lite", list(argv))
    while is_group(command):
        rest = [*ctx._protected_args, *ctx.args]  # what a Group hands its subcommand (click's Group.invoke)
        name, command, args = command.resolve_command(ctx, rest)
        ctx = command.make_context(name, args, parent=ctx)
    return command


COMMANDS = documented_commands()


def test_the_pages_show_commands():
    # the pipeline of the README and every page's examples: a broken extraction would pass vacuously
    assert len(COMMANDS) >= 40
    assert {argv[0] for _, argv in COMMANDS} >= {"inspect", "data", "plan", "train", "merge", "eval"}


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command_parses(where, argv, capsys):
    try:
        parse(argv)
    except typer.Exit as done:  # --help printed its text
        assert done.exit_code == 0, f"{where}: tulu-lite {shlex.join(argv)}"
    except UsageError as problem:
        pytest.fail(f"{where}: tulu-lite {shlex.join(argv)}: {problem.format_message()}")


def inline_commands() -> list[tuple[str, list[str]]]:
    """`tulu-lite ...` spans outside code blocks: ("PAGE:LINE", words after tulu-lite)."""
    found = []
    for page in PAGES:
        fenced = False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if fenced:
                continue
            for span in re.findall(r"`(tulu-lite(?: [^`]*)?)`", line):
                found.append((f"{page.relative_to(ROOT)}:{number}", span.split()[1:]))
    return found


def command_and_options(words: list[str]):
    """The command a span's leading words name, and the option names it uses (placeholders ignored)."""
    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="tulu-lite")
    rest = list(words)
    while is_group(command) and rest and rest[0] not in ("--help", "-h"):
        if rest[0] in command.commands:
            name, command, rest = rest[0], command.commands[rest[0]], rest[1:]
        else:  # a group that routes anything else to a default command (`eval MODEL_DIR ...` runs `eval run`)
            routed = command.make_context(ctx.info_name, list(rest), parent=ctx, resilient_parsing=True)
            name = (routed._protected_args or [""])[0]
            if name not in command.commands or name == rest[0]:
                raise UsageError(f"no such command {rest[0]!r}")
            command = command.commands[name]
        ctx = command.context_class(command, info_name=name, parent=ctx)
    options = [word.strip("[]()").split("=")[0] for word in rest]
    return command, [word for word in options if re.match(r"--?[a-zA-Z]", word)]


def known_options(command) -> set[str]:
    ctx = command.context_class(command, help_option_names=["--help", "-h"])
    return {name for param in command.get_params(ctx) for name in (*param.opts, *param.secondary_opts)}


INLINE = inline_commands()


@pytest.mark.parametrize("where,words", INLINE, ids=[where for where, _ in INLINE])
def test_inline_command_names_exist(where, words):
    try:
        command, options = command_and_options(words)
    except UsageError as problem:
        pytest.fail(f"{where}: `tulu-lite {' '.join(words)}`: {problem.format_message()}")
    unknown = [option for option in options if option not in known_options(command)]
    assert not unknown, f"{where}: `tulu-lite {' '.join(words)}`: no option {', '.join(unknown)}"


def test_lines_fit():
    # program output (```text blocks) is quoted as printed: one-line errors and wide tables are not rewrapped
    long = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        verbatim = {start + offset for language, start, lines in code_blocks(text) if language == "text"
                    for offset in range(len(lines))}
        for number, line in enumerate(text.splitlines(), 1):
            if len(line) > MAX_LINE and number not in verbatim:
                long.append(f"{page.relative_to(ROOT)}:{number} ({len(line)} characters)")
    assert not long, "lines over 120 characters:\n" + "\n".join(long)


def test_readme_is_a_front_door():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250
    assert len((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()) <= 120


def anchors(page: Path) -> set[str]:
    """The page's heading anchors as GitHub makes them: lower case, punctuation dropped, spaces to hyphens."""
    found, fenced = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif (heading := re.match(r"#+\s+(.*)", line)) and not fenced:
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return found


def test_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def sub_mapping_problems(shown, actual, where: str = "") -> list[str]:
    """Where `shown` (a shortened copy) says something `actual` doesn't: a key it lacks or another value."""
    if isinstance(shown, dict) and isinstance(actual, dict):
        return [problem for key, value in shown.items()
                for problem in (sub_mapping_problems(value, actual[key], f"{where}{key}.") if key in actual
                                else [f"{where}{key}: not in the recipe"])]
    return [] if shown == actual else [f"{where.rstrip('.')}: {shown!r} in the README, {actual!r} in the recipe"]


def test_readme_recipe_is_the_demo_recipe():
    import yaml

    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## One recipe", 1)[1]
    shown = next(lines for language, _, lines in code_blocks(section) if language == "yaml")
    actual = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text(encoding="utf-8"))
    assert not sub_mapping_problems(yaml.safe_load("\n".join(shown)), actual)
