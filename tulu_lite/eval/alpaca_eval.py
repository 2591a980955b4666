"""AlpacaEval: greedy answers to the 805 AlpacaEval instructions, saved for the external judge.

The win rate against Davinci-003 needs an LLM judge (the `alpaca_eval` tool and an API key), so tulu-lite only
writes the model's outputs in AlpacaEval's own JSON format (`instruction`, `output`, `generator`, `dataset`) as
`alpaca_eval_outputs.json`; no API is called. Each instruction is the user turn (or the raw prompt with
`--chat-format none`).
"""

from __future__ import annotations

from tulu_lite.errors import TuluError
from tulu_lite.eval.data_files import read_json, required_file, task_dir
from tulu_lite.eval.prompts import build_prompt
from tulu_lite.eval.settings import EvalSettings

NAME = "alpaca_eval"
MAX_NEW_TOKENS = 2048
OUTPUTS_FILE = "alpaca_eval_outputs.json"
PREDICTION_KEYS = ("instruction", "output", "generator")
HEADLINE_LABEL = "AlpacaEval (judged externally)"


def load(settings: EvalSettings) -> list[dict]:
    path = required_file(task_dir(settings, NAME) / "alpaca_eval.json", "AlpacaEval's alpaca_eval.json")
    data = read_json(path)
    if not isinstance(data, list):
        raise TuluError(f"{path}: expected a list of {{'instruction': ...}} objects")
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("instruction"), str):
            raise TuluError(f"{path}: item {index} needs an 'instruction' string")
    return [{"instruction": item["instruction"], "dataset": item.get("dataset", "")} for item in data[: settings.limit]]


def generator_name(settings: EvalSettings) -> str:
    return f"{settings.model_dir.name if settings.model_dir else 'model'}-greedy"


def predict(settings: EvalSettings, lm) -> list[dict]:
    examples = load(settings)
    prompts = [build_prompt(ex["instruction"], "", settings.chat_format, lm.tokenizer) for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS, description="alpaca_eval")
    return [{"instruction": ex["instruction"], "output": out.strip(), "generator": generator_name(settings),
             "dataset": ex["dataset"]} for ex, out in zip(examples, outputs)]


def outputs_for_judge(predictions: list[dict]) -> list[dict]:
    """The records in AlpacaEval's model-outputs format."""
    return [{key: record.get(key, "") for key in ("instruction", "output", "generator", "dataset")}
            for record in predictions]


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    lengths = [len(record["output"]) for record in predictions]
    return {"scored": False, "n": len(predictions), "mean_output_chars": sum(lengths) / len(lengths) if lengths else 0,
            "reason": f"win rate needs the external judge: alpaca_eval --model_outputs OUT_DIR/{NAME}/{OUTPUTS_FILE}"}


def headline(metrics: dict) -> float | None:
    return None


def resolved(settings: EvalSettings) -> dict:
    return {"data": str(task_dir(settings, NAME) / "alpaca_eval.json"), "generator": generator_name(settings),
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "decoding": "greedy",
            "limit": settings.limit, "judge_file": OUTPUTS_FILE}
