"""AlpacaEval: greedy answers to the 805 AlpacaEval instructions, saved for the external judge.

The win rate against Davinci-003 needs an LLM judge (the `alpaca_eval` tool and an API key), so tulu-lite only
writes the model's outputs in AlpacaEval's own JSON format (`instruction`, `output`, `generator`, `dataset`) as
`alpaca_eval_outputs.json`; no API is called. Each instruction is the user turn (or the raw prompt with
`--chat-format none`); 2048 new tokens at most.

- tulu-v1 (open-instruct's eval/alpaca_farm_eval.py): the turn is "<|user|>\\n" + instruction (+ "\\n\\n" + input when
  a record has one) + "\\n<|assistant|>\\n"; the output is the new tokens decoded on their own (so without the
  leading space of the first word); the generator is "<model>-greedy-long".
- tulu-lite: the training renderer's turn; the output stripped; the generator "<model>-greedy".

Re-scoring also takes an AlpacaEval outputs JSON (a list of {instruction, output, generator}).
"""

from __future__ import annotations

from tulu_lite.errors import TuluError
from tulu_lite.eval.data_files import required_file, task_dir
from tulu_lite.eval.prompts import build_prompt, task_chat_format
from tulu_lite.eval.settings import EvalSettings, subset_size
from tulu_lite.json_files import read_json_file

NAME = "alpaca_eval"
MAX_NEW_TOKENS = 2048
OUTPUTS_FILE = "alpaca_eval_outputs.json"
PREDICTION_KEYS = ("instruction", "output")
SCORING_KEYS = ()
HEADLINE_LABEL = "AlpacaEval (judged externally)"


def load(settings: EvalSettings) -> list[dict]:
    path = required_file(task_dir(settings, NAME) / "alpaca_eval.json", "AlpacaEval's alpaca_eval.json")
    data = read_json_file(path)
    if not isinstance(data, list):
        raise TuluError(f"{path}: expected a list of {{'instruction': ...}} objects")
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("instruction"), str):
            raise TuluError(f"{path}: item {index} needs an 'instruction' string")
    return [{"instruction": item["instruction"], "input": item.get("input") or "", "dataset": item.get("dataset", "")}
            for item in data[: subset_size(settings, None)]]


def generator_name(settings: EvalSettings) -> str:
    suffix = "-greedy-long" if settings.protocol == "tulu-v1" else "-greedy"
    return f"{settings.model_dir.name if settings.model_dir else 'model'}{suffix}"


def user_text(example: dict) -> str:
    if not example["input"]:
        return example["instruction"]
    return example["instruction"].strip() + "\n\n" + example["input"].strip()


def predict(settings: EvalSettings, lm) -> list[dict]:
    examples = load(settings)
    chat_format = task_chat_format(settings, NAME)
    prompts = [build_prompt(user_text(ex), "", chat_format, lm.tokenizer, protocol=settings.protocol)
               for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS, description=NAME)
    return [ex | {"prompt": p.text, "output": out, "generator": generator_name(settings)}
            for ex, p, out in zip(examples, prompts, outputs)]


def final_text(output: str, settings: EvalSettings) -> str:
    """The answer as the protocol writes it: tulu-v1 drops the one leading space a sentencepiece decode of the new
    tokens alone drops; tulu-lite strips."""
    if settings.protocol == "tulu-v1":
        return output[1:] if output.startswith(" ") else output
    return output.strip()


def outputs_for_judge(predictions: list[dict]) -> list[dict]:
    """The records in AlpacaEval's model-outputs format."""
    return [{"instruction": r["instruction"], "output": r.get("truncated", r["output"]),
             "generator": r.get("generator", ""), "dataset": r.get("dataset", "")} for r in predictions]


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    for record in predictions:
        record["truncated"] = final_text(record["output"], settings) if "prompt" in record else record["output"]
    lengths = [len(record["truncated"]) for record in predictions]
    return {"protocol": settings.protocol, "scored": False, "n": len(predictions),
            "mean_output_chars": sum(lengths) / len(lengths) if lengths else 0,
            "reason": f"win rate needs the external judge: alpaca_eval --model_outputs OUT_DIR/{NAME}/{OUTPUTS_FILE} "
                      f"--annotators_config alpaca_eval_gpt4 against text-davinci-003's outputs (the paper's "
                      f"AlpacaEval 1 setup; the tool's newer default judge and baseline give other numbers)",
            "open_instruct": None}


def headline(metrics: dict) -> float | None:
    return None


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def extra_files(predictions: list[dict]) -> dict:
    """AlpacaEval's judge reads the outputs in its own format."""
    return {OUTPUTS_FILE: outputs_for_judge(predictions)}


def resolved(settings: EvalSettings) -> dict:
    return {"protocol": settings.protocol, "data": str(task_dir(settings, NAME) / "alpaca_eval.json"),
            "chat_format": task_chat_format(settings, NAME), "generator": generator_name(settings),
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "decoding": "greedy",
            "subset": subset_size(settings, None), "judge_file": OUTPUTS_FILE}
