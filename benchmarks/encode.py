"""Encoding throughput: tulu-lite's one-pass encoder vs the prefix method vs plain tokenization (the floor).

    python benchmarks/encode.py [--conversations 1500] [--tokenizer DIR] [--json OUT]

One process, one generated ShareGPT-like dataset (1-6 turns, long answers), three methods on the same texts:
(a) the original prefix re-tokenization method (tests/prefix_reference.py), (b) tulu-lite's encoder
(`encode_many`, the function the dataset path maps, batches of 256), (c) one batched tokenizer call on the
already-rendered texts with no masking at all. Output of (a) and (b) must be identical. Reports tokens/s and the
ratios b/a (target >= 5) and c/b (target <= 1.5), best of `--repeats` runs each.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from prefix_reference import prefix_reference  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tulu_lite.data.chat_format import render_tulu  # noqa: E402
from tulu_lite.data.encode import encode_many  # noqa: E402
from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER, load_tokenizer  # noqa: E402

WORDS = (
    "the model answer question data training example because which would could about their there first these "
    "python function return value list string number result first second finally however therefore 42 3.5 "
    "über café naïve 中文 🙂"
).split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + rng.choice([".", "?", "!", ":\n"])


def sharegpt_like(rng: random.Random) -> list[dict]:
    messages = []
    for _ in range(rng.randint(1, 6)):
        messages.append({"role": "user", "content": " ".join(sentence(rng, rng.randint(5, 30)) for _ in range(rng.randint(1, 3)))})
        answer = "\n\n".join(" ".join(sentence(rng, rng.randint(8, 25)) for _ in range(rng.randint(2, 5)))
                             for _ in range(rng.randint(1, 4)))
        messages.append({"role": "assistant", "content": answer})
    return messages


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=1500)
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--tokenizer", default=str(BUNDLED_LLAMA_TOKENIZER))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.tokenizer)
    rng = random.Random(0)
    data = [sharegpt_like(rng) for _ in range(args.conversations)]
    texts = [render_tulu(m, tokenizer.eos_token) for m in data]
    length = args.max_seq_length

    def prefix_method():
        return [prefix_reference(m, tokenizer, length) for m in data]

    def tulu_lite():
        return [row for i in range(0, len(data), 256) for row in encode_many(data[i:i + 256], tokenizer, "tulu", length)]

    def floor():
        return tokenizer(texts, truncation=True, max_length=length)["input_ids"]

    t_tulu, ours = best_time(tulu_lite, args.repeats)
    t_floor, floor_ids = best_time(floor, args.repeats)
    t_prefix, reference = best_time(prefix_method, 1)  # slow: one run is enough to rank it
    identical = ours == reference and [r["input_ids"] for r in ours] == floor_ids
    tokens = sum(len(r["input_ids"]) for r in ours)
    figures = {
        "conversations": len(data),
        "tokens": tokens,
        "tokens_per_s": {"prefix_method": tokens / t_prefix, "tulu_lite": tokens / t_tulu, "floor": tokens / t_floor},
        "speedup_vs_prefix_method": t_prefix / t_tulu,
        "slowdown_vs_floor": t_tulu / t_floor,
        "identical_output": identical,
    }
    table = Table(title=f"encoding {len(data)} conversations, {tokens:,} tokens ({Path(args.tokenizer).name})")
    table.add_column("method")
    table.add_column("tokens/s", justify="right")
    for name, value in figures["tokens_per_s"].items():
        table.add_row(name, f"{value:,.0f}")
    console = Console()
    console.print(table)
    console.print(f"tulu-lite / prefix method: [bold]{figures['speedup_vs_prefix_method']:.1f}x[/] faster (target >= 5x)")
    console.print(f"tulu-lite vs floor: [bold]{figures['slowdown_vs_floor']:.2f}x[/] the time (target <= 1.5x)")
    console.print(f"identical input_ids and labels: [bold]{identical}[/]")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
