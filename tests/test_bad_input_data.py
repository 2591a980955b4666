"""Bad data through the CLI: `data convert`, `data mix`, `data stats`, `inspect` and `train` on bad data files.

Every case runs ``python -m tulu_lite`` as a user would and must end with exit code 2, one ``error:`` line naming
the file (and line or row) and what is wrong, no traceback, every input byte-identical and nothing half-written
(`tests/cli_cases.py`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from cli_cases import BadInput, check_bad_input

GOOD = {"id": "g", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
GOOD_LINE = json.dumps(GOOD)
RAW = Path(__file__).parent / "fixtures" / "raw"


def _file(name: str, data: bytes | str) -> callable:
    def setup(tmp: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return setup


def _both(*setups):
    def setup(tmp: Path) -> None:
        for one in setups:
            one(tmp)
    return setup


BAD_UTF8 = (GOOD_LINE + "\n").encode() + b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'
NAN = GOOD_LINE + "\n" + GOOD_LINE[:-1] + ', "score": NaN}\n'
DUPLICATE = GOOD_LINE + "\n" + GOOD_LINE[:-1] + ', "messages": []}\n'
LONG = GOOD_LINE + "\n" + json.dumps({"messages": [{"role": "user", "content": "x" * (5 << 20)},
                                                   {"role": "assistant", "content": "y"}]}) + "\n"


OASST = (RAW / "oasst1" / "2023-04-12_oasst_ready.trees.jsonl").read_bytes()
OASST_GZ = gzip.compress(OASST, mtime=0)
# The first byte after gzip.compress's 10-byte header opens the first deflate block: 0xff makes its type the
# reserved 3 ("invalid block type"), whatever zlib's version.
CORRUPT_OASST_GZ = OASST_GZ[:10] + b"\xff" + OASST_GZ[11:]


# 200,000 levels of nesting in a 400 KB line: Python's json parser recurses once per level.
DEEP = "[" * 200_000 + "]" * 200_000
DEEP_LINES = GOOD_LINE + "\n" + '{"messages": ' + DEEP + "}\n"
DEEP_RAW_LINES = (json.dumps({"instruction": "a", "context": "", "response": "b", "category": "qa"}) + "\n"
                  + '{"instruction": ' + DEEP + ', "context": "", "response": "x", "category": "qa"}\n')
DEEP_RAW_ARRAY = '[{"instruction": "a", "input": "", "output": "b"},\n {"instruction": ' + DEEP + \
    ', "input": "", "output": "x"}]\n'


def _gzipped(lines: int = 400) -> bytes:
    """A .jsonl.gz of `lines` varied conversations (varied so the compressed stream is long enough to damage)."""
    import gzip
    import random

    rng = random.Random(0)
    records = [json.dumps({"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content":
                                        "".join(rng.choice("abcdefgh ") for _ in range(200))}]}) for i in range(lines)]
    return gzip.compress(("\n".join(records) + "\n").encode(), mtime=0)


TRUNCATED_GZ = _gzipped()[: len(_gzipped()) // 2]
CORRUPT_GZ = bytes(byte ^ 0xA5 if 2000 <= index < 2040 else byte for index, byte in enumerate(_gzipped()))
TEXT_NAMED_GZ = GOOD_LINE + "\n"
# Two readers can meet a damaged .gz first: the sniff of its first bytes (data.raw.open_raw, no line yet) or the
# line reader (json_files.iter_lines, with the line); both say it in the same words (json_files.gzip_error).
GZ_BROKEN = r"(the gzip file ends early|corrupt gzip data)"
TRUNCATED_GZ_LINE = r"a\.jsonl\.gz(:\d+)?: the gzip file ends early \(truncated download\? fetch it again\)"
NOT_GZ_LINE = r"a\.jsonl\.gz(:1)?: not a gzip file, though its name ends in \.gz \(rename it without \.gz"


def _parquet_without_messages(tmp: Path) -> None:
    import datasets

    datasets.Dataset.from_list([{"instruction": "Say hi", "output": "hi"}]).to_parquet(tmp / "alpaca.parquet")


def _recipe(files: list[str]) -> callable:
    def setup(tmp: Path) -> None:
        (tmp / "recipe.yaml").write_text(
            "model: {name_or_path: tiny-llama, tiny: {hidden_size: 16, num_layers: 1}}\n"
            f"data: {{train_files: {json.dumps(files)}, max_seq_length: 64}}\n"
            "training: {max_steps: 1}\noutput_dir: out\n")
    return setup


def _mixture(sources: str) -> callable:
    return _file("mix.yaml", f"seed: 1\nsources:\n{sources}")


CASES = [
    # ---- data convert -------------------------------------------------------------------------------------------
    BadInput("convert onto its own raw file", ["data", "convert", "dolly", "raw.jsonl", "-o", "raw.jsonl"],
             r"raw\.jsonl: is also an input .*choose another output path",
             _file("raw.jsonl", (RAW / "dolly" / "databricks-dolly-15k.jsonl").read_text())),
    BadInput("convert onto an existing output", ["data", "convert", "dolly", "raw.jsonl", "-o", "out.jsonl"],
             r"out\.jsonl: already exists \(pass --force to overwrite\)",
             _both(_file("raw.jsonl", (RAW / "dolly" / "databricks-dolly-15k.jsonl").read_text()),
                   _file("out.jsonl", GOOD_LINE + "\n"))),
    BadInput("convert the wrong release",
             ["data", "convert", "dolly", str(RAW / "stanford_alpaca" / "alpaca_data.json"), "-o", "o.jsonl"],
             r"alpaca_data\.json:2: record does not match source 'dolly': response missing"),
    BadInput("convert with an unknown style", ["data", "convert", "dolly", "raw.jsonl", "-o", "o.jsonl",
                                               "--style", "v2"], r"--style: expected one of v1, clean, got 'v2'",
             _file("raw.jsonl", GOOD_LINE + "\n")),
    BadInput("convert super_ni without the xlingual list", ["data", "convert", "super_ni", "ni", "-o", "o.jsonl"],
             r"ni: not a natural-instructions folder .*no splits/xlingual/train_tasks\.txt; --style clean reads "
             r"splits/default/train_tasks\.txt", _file("ni/splits/default/train_tasks.txt", "task001_x\n")),
    BadInput("convert cot caps with the clean style", ["data", "convert", "cot", str(RAW / "cot"), "-o", "o.jsonl",
                                                       "--style", "clean", "--cot-zero-shot", "10"],
             r"--cot-zero-shot only applies with --style v1"),
    BadInput("convert a truncated .gz", ["data", "convert", "oasst1", "t.trees.jsonl.gz", "-o", "o.jsonl"],
             r"t\.trees\.jsonl\.gz: the gzip file ends early \(truncated download\? fetch it again\)",
             _file("t.trees.jsonl.gz", OASST_GZ[:len(OASST_GZ) // 2])),
    BadInput("convert a corrupt .gz", ["data", "convert", "oasst1", "c.trees.jsonl.gz", "-o", "o.jsonl"],
             r"c\.trees\.jsonl\.gz: corrupt gzip data \(.*invalid block type\)", _file("c.trees.jsonl.gz", CORRUPT_OASST_GZ)),
    BadInput("convert a text file named .gz", ["data", "convert", "oasst1", "x.trees.jsonl.gz", "-o", "o.jsonl"],
             r"x\.trees\.jsonl\.gz: not a gzip file, though its name ends in \.gz \(rename it without \.gz",
             _file("x.trees.jsonl.gz", OASST)),
    BadInput("convert a folder whose .gz is truncated", ["data", "convert", "oasst1", "raw", "-o", "o.jsonl"],
             r"raw/2023-04-12_oasst_ready\.trees\.jsonl\.gz: the gzip file ends early",
             _file("raw/2023-04-12_oasst_ready.trees.jsonl.gz", OASST_GZ[:-9])),
    # ---- data mix -----------------------------------------------------------------------------------------------
    BadInput("mix onto one of its sources", ["data", "mix", "mix.yaml", "-o", "a.jsonl"],
             r"a\.jsonl: is also an input", _both(_file("a.jsonl", GOOD_LINE + "\n"),
                                                  _mixture("  - path: a.jsonl\n"))),
    BadInput("mix onto an existing output", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"out\.jsonl: already exists \(pass --force to overwrite\)",
             _both(_file("a.jsonl", GOOD_LINE + "\n"), _file("out.jsonl", "keep me\n"),
                   _mixture("  - path: a.jsonl\n"))),
    BadInput("mix a source holding NaN", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"a\.jsonl:2: not valid JSON \(NaN is not a JSON value\)",
             _both(_file("a.jsonl", NAN), _mixture("  - path: a.jsonl\n"))),
    BadInput("mix a Parquet source without messages", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"alpaca\.parquet: no 'messages' column \(columns: instruction, output\)",
             _both(_parquet_without_messages, _mixture("  - path: alpaca.parquet\n"))),
    BadInput("mix with a fraction of zero", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"mix\.yaml:4: sources\[0\]\.fraction: input should be greater than 0",
             _both(_file("a.jsonl", GOOD_LINE + "\n"), _mixture("  - path: a.jsonl\n    fraction: 0\n"))),
    BadInput("mix with a fraction of 1e9", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"mix\.yaml:4: sources\[0\]\.fraction: input should be less than or equal to 100",
             _both(_file("a.jsonl", GOOD_LINE + "\n"), _mixture("  - path: a.jsonl\n    fraction: 1e9\n"))),
    BadInput("mix with a fraction of 1e7", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"mix\.yaml:4: sources\[0\]\.fraction: input should be less than or equal to 100",
             _both(_file("a.jsonl", GOOD_LINE + "\n"), _mixture("  - path: a.jsonl\n    fraction: 10000000\n"))),
    BadInput("mix a source nested 200k deep", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             r"deep\.jsonl:2: JSON nested too deeply to read$",
             _both(_file("deep.jsonl", DEEP_LINES), _mixture("  - path: deep.jsonl\n"))),
    BadInput("mix a truncated .jsonl.gz", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             TRUNCATED_GZ_LINE,
             _both(_file("a.jsonl.gz", TRUNCATED_GZ), _mixture("  - path: a.jsonl.gz\n"))),
    BadInput("mix a text file named .gz", ["data", "mix", "mix.yaml", "-o", "out.jsonl"],
             NOT_GZ_LINE,
             _both(_file("a.jsonl.gz", TEXT_NAMED_GZ), _mixture("  - path: a.jsonl.gz\n"))),
    # ---- data convert on deep input -----------------------------------------------------------------------------
    BadInput("convert JSON Lines nested 200k deep", ["data", "convert", "dolly", "raw.jsonl", "-o", "o.jsonl"],
             r"raw\.jsonl:2: JSON nested too deeply to read \(expected the 'dolly' format",
             _file("raw.jsonl", DEEP_RAW_LINES)),
    BadInput("convert a JSON array nested 200k deep",
             ["data", "convert", "stanford_alpaca", "raw.json", "-o", "o.jsonl"],
             r"raw\.json:2: JSON nested too deeply to read \(element 1; expected the 'stanford_alpaca' format",
             _file("raw.json", DEEP_RAW_ARRAY)),
    # ---- data stats ---------------------------------------------------------------------------------------------
    BadInput("stats on JSON Lines nested 200k deep", ["data", "stats", "deep.jsonl"],
             r"^error: deep\.jsonl:2: JSON nested too deeply to read$", _file("deep.jsonl", DEEP_LINES)),
    BadInput("stats on a JSON array nested 200k deep", ["data", "stats", "deep.json"],
             r"^error: deep\.json:2: JSON nested too deeply to read \(element 1",
             _file("deep.json", "[" + GOOD_LINE + ",\n" + '{"messages": ' + DEEP + "}]\n")),
    BadInput("stats on a truncated .jsonl.gz", ["data", "stats", "a.jsonl.gz"],
             rf"^error: {TRUNCATED_GZ_LINE}",
             _file("a.jsonl.gz", TRUNCATED_GZ)),
    BadInput("stats on a corrupt .jsonl.gz", ["data", "stats", "a.jsonl.gz"], rf"^error: a\.jsonl\.gz(:\d+)?: {GZ_BROKEN}",
             _file("a.jsonl.gz", CORRUPT_GZ)),
    BadInput("stats on a text file named .gz", ["data", "stats", "a.jsonl.gz"],
             rf"^error: {NOT_GZ_LINE}",
             _file("a.jsonl.gz", TEXT_NAMED_GZ)),
    BadInput("stats on invalid UTF-8", ["data", "stats", "bad.jsonl"],
             r"bad\.jsonl:2: not UTF-8 text \(invalid continuation byte", _file("bad.jsonl", BAD_UTF8)),
    BadInput("stats on a repeated messages key", ["data", "stats", "bad.jsonl"],
             r"bad\.jsonl:2: not valid JSON \(key 'messages' appears twice in one object\)",
             _file("bad.jsonl", DUPLICATE)),
    BadInput("stats on a 5 MB line", ["data", "stats", "long.jsonl"],
             r"long\.jsonl:2: line is longer than 4 MiB", _file("long.jsonl", LONG), timeout=60),
    BadInput("stats on a broken line", ["data", "stats", "bad.jsonl"],
             r"bad\.jsonl:2: not valid JSON \(Unterminated string starting at column \d+\)",
             _file("bad.jsonl", GOOD_LINE + '\n{"messages": "oops\n')),
    BadInput("stats on Parquet without messages", ["data", "stats", "alpaca.parquet"],
             r"alpaca\.parquet: no 'messages' column \(columns: instruction, output\); map the column",
             _parquet_without_messages),
    BadInput("stats on a hub id offline", ["data", "stats", "hf:tulu-lite-tests/absent"],
             r"hf:tulu-lite-tests/absent: can't reach the Hugging Face hub: offline mode .* --local-dir DIR\) and "
             r"give the folder DIR"),
    BadInput("stats on a mapping with a typo", ["data", "stats", "{path: a.json, mesages: chat}"],
             r"mesages: unknown key \(did you mean 'messages'\?\)"),
    # ---- inspect ------------------------------------------------------------------------------------------------
    BadInput("inspect invalid UTF-8", ["inspect", "bad.jsonl"], r"bad\.jsonl:2: not UTF-8 text",
             _file("bad.jsonl", BAD_UTF8)),
    BadInput("inspect Infinity", ["inspect", "bad.jsonl"], r"bad\.jsonl:1: not valid JSON \(Infinity is not a JSON",
             _file("bad.jsonl", GOOD_LINE[:-1] + ', "w": Infinity}\n')),
    BadInput("inspect a 5 MB line", ["inspect", "long.jsonl"], r"long\.jsonl:2: line is longer than 4 MiB",
             _file("long.jsonl", LONG), timeout=60),
    BadInput("inspect JSON nested 200k deep", ["inspect", "deep.jsonl"], r"deep\.jsonl:2: JSON nested too deeply",
             _file("deep.jsonl", DEEP_LINES)),
    BadInput("inspect a truncated .jsonl.gz", ["inspect", "a.jsonl.gz"], TRUNCATED_GZ_LINE,
             _file("a.jsonl.gz", TRUNCATED_GZ)),
    BadInput("inspect a corrupt .jsonl.gz", ["inspect", "a.jsonl.gz"], rf"a\.jsonl\.gz(:\d+)?: {GZ_BROKEN}",
             _file("a.jsonl.gz", CORRUPT_GZ)),
    BadInput("inspect a negative --max-seq-length", ["inspect", "a.jsonl", "--max-seq-length", "-5"],
             r"^error: --max-seq-length: expected a positive number of tokens, got -5$", _file("a.jsonl", GOOD_LINE)),
    BadInput("inspect --max-seq-length 0", ["inspect", "a.jsonl", "--max-seq-length", "0"],
             r"^error: --max-seq-length: expected a positive number of tokens, got 0$", _file("a.jsonl", GOOD_LINE)),
    BadInput("inspect -n -1", ["inspect", "a.jsonl", "-n", "-1"],
             r"^error: -n: expected how many examples to show \(0 or more\), got -1$", _file("a.jsonl", GOOD_LINE)),
    # ---- train on bad data files --------------------------------------------------------------------------------
    BadInput("train on JSON nested 200k deep", ["train", "recipe.yaml"], r"deep\.jsonl:2: JSON nested too deeply",
             _both(_file("deep.jsonl", DEEP_LINES), _recipe(["deep.jsonl"]))),
    BadInput("train on a truncated .jsonl.gz", ["train", "recipe.yaml"], TRUNCATED_GZ_LINE,
             _both(_file("a.jsonl.gz", TRUNCATED_GZ), _recipe(["a.jsonl.gz"]))),
    BadInput("train on a text file named .gz", ["train", "recipe.yaml"],
             NOT_GZ_LINE,
             _both(_file("a.jsonl.gz", TEXT_NAMED_GZ), _recipe(["a.jsonl.gz"]))),
    BadInput("train on invalid UTF-8", ["train", "recipe.yaml"], r"bad\.jsonl:2: not UTF-8 text",
             _both(_file("bad.jsonl", BAD_UTF8), _recipe(["bad.jsonl"]))),
    BadInput("train on an empty file", ["train", "recipe.yaml"],
             r"empty\.jsonl: holds no conversation \(the file is empty\)",
             _both(_file("empty.jsonl", ""), _recipe(["empty.jsonl"]))),
    BadInput("train on Parquet without messages", ["train", "recipe.yaml"],
             r"alpaca\.parquet: no 'messages' column \(columns: instruction, output\)",
             _both(_parquet_without_messages, _recipe(["alpaca.parquet"]))),
    BadInput("train on a hub id offline", ["train", "recipe.yaml"],
             r"data\.train_files\[0\]: hf:tulu-lite-tests/absent: can't reach the Hugging Face hub",
             _recipe(["hf:tulu-lite-tests/absent"])),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_data_input(case, tmp_path):
    check_bad_input(case, tmp_path)
