"""Shared by the training tests: tiny recipes (a 32-wide LLaMA on the bundled demo chats) and a private cache.

Import `tiny_cache` into a test module to use it (pytest finds fixtures imported into a module).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

DEMO = Path(__file__).resolve().parents[1] / "tulu_lite" / "assets" / "demo" / "train.jsonl"


@pytest.fixture(scope="module", autouse=True)
def tiny_cache(tmp_path_factory):
    """Keep built tiny bases out of the user's cache (and share them between the tests of a module)."""
    old = os.environ.get("TULU_LITE_CACHE")
    os.environ["TULU_LITE_CACHE"] = str(tmp_path_factory.mktemp("tulu-cache"))
    yield
    if old is None:
        os.environ.pop("TULU_LITE_CACHE")
    else:
        os.environ["TULU_LITE_CACHE"] = old


def write_recipe(tmp_path: Path, *, quantized: bool = False, data: dict | None = None, name: str = "recipe.yaml",
                 **training) -> Path:
    """A tiny LoRA recipe in `tmp_path` training on the demo chats into ``tmp_path/out``."""
    recipe = {
        "model": {"name_or_path": "tiny-llama", "tiny": {"hidden_size": 32}},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": data or {"train_files": [str(DEMO)], "max_seq_length": 128},
        "training": {"learning_rate": 1e-2, "per_device_batch_size": 8, "gradient_checkpointing": False,
                     "warmup_ratio": 0.0, "logging_steps": 2, "save_steps": 100, "seed": 1, **training},
        "output_dir": "out",
    }
    if quantized:
        recipe["quantization"] = {"quant_type": "nf4", "double_quant": True}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def read_demo() -> list[dict]:
    return [json.loads(line) for line in DEMO.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def topic(record: dict) -> str:
    """The demo topic of a chat, from the fixed shape of its last answer."""
    answer = record["messages"][-1]["content"]
    if answer.startswith("The capital of "):
        return "capitals"
    if answer.startswith("The opposite of "):
        return "opposites"
    return "sounds" if " says " in answer else "colours"


class StopAfter(TrainerCallback):
    """Simulates a crash (Ctrl-C, preemption) once `step` optimizer steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")
