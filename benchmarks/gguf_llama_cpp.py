"""llama.cpp itself on `tulu-lite export`'s files: tokens, next-token log-probs and greedy continuations vs HF.

`tulu-lite export` verifies each file by reading it back through transformers. This runs the files where people
run them -- llama.cpp, through llama-cpp-python (which builds llama.cpp from source: ``pip install
llama-cpp-python``; the script says so and exits 0 when it is not installed) -- and compares, on chat prompts
rendered with the file's template:

- tokens: llama.cpp's tokenization of each prompt (special tokens parsed) vs the HF tokenizer's ids;
- next-token log-probs at every prompt position (teacher forcing): max |difference| over the HF model's 10 most
  likely tokens, mean over the whole vocabulary, and top-1 agreement;
- greedy continuations (up to 32 tokens or EOS): identical or not, and the common prefix.

The reference is MODEL_DIR in float32 through transformers. llama.cpp computes in its own kernels (for Q8_0 it
also rounds the activations to 8 bits), so this measures the file *and* the runtime.

    python -m tulu_lite train recipes/demo.yaml --set output_dir=/tmp/G-demo
    python -m tulu_lite merge /tmp/G-demo -o /tmp/G-merged
    python benchmarks/gguf_llama_cpp.py /tmp/G-merged                 # f16 and q8_0
    python benchmarks/gguf_llama_cpp.py /tmp/G-merged --types q4_0 --json /tmp/q4.json
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "gguf_llama_cpp.json"

# Demo-style questions (the demo model's four topics) plus the export's own verification conversations.
EXTRA_CONVERSATIONS = [
    [{"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
     {"role": "user", "content": "What does a cat say?"}],
    [{"role": "user", "content": "Opposite of happy?"}],
    [{"role": "user", "content": "Which color is a plum?"}, {"role": "assistant", "content": "A plum is purple."},
     {"role": "user", "content": "And a banana?"}],
    [{"role": "user", "content": "What is the capital of Italy?"}],
]
NEW_TOKENS = 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="merged model directory (tulu-lite merge's OUT_DIR)")
    parser.add_argument("--types", nargs="+", default=["f16", "q8_0"], help="GGUF types to export and run")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the .gguf files go (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"figures as JSON (default: {RESULTS})")
    args = parser.parse_args()
    if importlib.util.find_spec("llama_cpp") is None:
        print("skipped: llama-cpp-python is not installed (pip install llama-cpp-python builds llama.cpp)")
        return 0
    import llama_cpp
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from tulu_lite.export import export, verification_table
    from tulu_lite.export.verify import VERIFY_CONVERSATIONS
    from tulu_lite.json_files import write_json
    from tulu_lite.tokenizer import load_tokenizer

    console = Console()
    tokenizer = load_tokenizer(args.model_dir)
    hf = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    conversations = [*VERIFY_CONVERSATIONS, *EXTRA_CONVERSATIONS]
    texts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
             for messages in conversations]
    hf_ids = [tokenizer(text, add_special_tokens=False).input_ids for text in texts]
    reference = [hf_run(hf, ids, tokenizer.eos_token_id) for ids in hf_ids]
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="gguf-bench-"))
    rows = {}
    for kind in args.types:
        path = out_dir / f"model-{kind}.gguf"
        start = time.perf_counter()
        result = export(args.model_dir, path, kind, force=True)
        exported = time.perf_counter() - start
        console.print(verification_table(result.verification))
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, logits_all=True, n_threads=2, verbose=False)
        runs = [llama_run(llm, text, ref, tokenizer.eos_token_id) for text, ref in zip(texts, reference)]
        rows[kind] = summarize(runs, result.bytes, exported)
        rows[kind]["template_identical"] = template_check(llm, conversations, texts)
        del llm
    console.print(summary_table(rows, len(texts), llama_cpp.__version__))
    write_json(args.json, {"model_dir": str(args.model_dir), "prompts": len(texts), "new_tokens": NEW_TOKENS,
                           "llama_cpp_python": llama_cpp.__version__, "types": rows})
    console.print(f"wrote {args.json}")
    return 0


def hf_run(model, ids: list[int], eos: int) -> dict:
    """Log-probs at every prompt position and the greedy continuation, in float32 through transformers."""
    import torch

    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        generated = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                   eos_token_id=eos, pad_token_id=eos)[0, len(ids):].tolist()
    return {"ids": ids, "logprobs": logprobs.numpy(), "greedy": generated}


def llama_run(llm, text: str, ref: dict, eos: int) -> dict:
    """The same prompt through llama.cpp: its own tokenization, teacher-forced log-probs on the HF ids, greedy."""
    import numpy as np

    tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    llm.reset()
    llm.eval(ref["ids"])
    logits = np.asarray(llm.scores[:len(ref["ids"])], dtype=np.float64)
    logprobs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    greedy = []
    next_logits = logits[-1]
    for _ in range(NEW_TOKENS):  # greedy by hand: argmax of llama.cpp's own logits, no sampler in between
        token = int(np.argmax(next_logits))
        greedy.append(token)
        if token == eos:
            break
        llm.eval([token])
        next_logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
    hf_lp = ref["logprobs"].astype(np.float64)
    top10 = np.argsort(-hf_lp, axis=-1)[:, :10]
    diff_top10 = np.abs(np.take_along_axis(hf_lp, top10, -1) - np.take_along_axis(logprobs, top10, -1))
    prefix = next((i for i, (a, b) in enumerate(zip(greedy, ref["greedy"])) if a != b), min(len(greedy),
                                                                                          len(ref["greedy"])))
    return {
        "tokens_identical": tokens == ref["ids"],
        "max_top10": float(diff_top10.max()),
        "mean_all": float(np.abs(hf_lp - logprobs).mean()),
        "top1": float((hf_lp.argmax(-1) == logprobs.argmax(-1)).mean()),
        "positions": len(ref["ids"]),
        "greedy_identical": greedy == ref["greedy"],
        "common_prefix": prefix,
        "greedy_tokens": len(ref["greedy"]),
    }


def template_check(llm, conversations: list[list[dict]], texts: list[str]) -> int:
    """How many prompts llama-cpp-python renders from the file's own chat template exactly as transformers does."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    vocab = llm._model
    formatter = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"],
                                    eos_token=vocab.token_get_text(llm.token_eos()),
                                    bos_token=vocab.token_get_text(llm.token_bos()))
    return sum(formatter(messages=messages).prompt == text for messages, text in zip(conversations, texts))


def summarize(runs: list[dict], size: int, seconds: float) -> dict:
    positions = sum(run["positions"] for run in runs)
    return {
        "file_bytes": size,
        "export_seconds": round(seconds, 1),
        "tokenization_identical": sum(run["tokens_identical"] for run in runs),
        "logprob_max_abs_diff_top10": max(run["max_top10"] for run in runs),
        "logprob_mean_abs_diff": sum(run["mean_all"] * run["positions"] for run in runs) / positions,
        "top1_agreement": sum(run["top1"] * run["positions"] for run in runs) / positions,
        "positions": positions,
        "greedy_identical": sum(run["greedy_identical"] for run in runs),
        "greedy_common_prefix": [f"{run['common_prefix']}/{run['greedy_tokens']}" for run in runs],
    }


def summary_table(rows: dict, prompts: int, version: str):
    from rich.table import Table

    table = Table(title=f"llama.cpp (llama-cpp-python {version}) vs transformers float32 on {prompts} prompts")
    for column in ("type", "MiB", "template identical", "tokens identical", "max |Δ log-prob| top-10",
                   "mean |Δ log-prob|", "top-1", "greedy identical"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for kind, row in rows.items():
        table.add_row(kind, f"{row['file_bytes'] / 2**20:.1f}", f"{row['template_identical']}/{prompts}",
                      f"{row['tokenization_identical']}/{prompts}",
                      f"{row['logprob_max_abs_diff_top10']:.3g}", f"{row['logprob_mean_abs_diff']:.3g}",
                      f"{row['top1_agreement']:.1%}", f"{row['greedy_identical']}/{prompts}")
    return table


if __name__ == "__main__":
    sys.exit(main())
