"""Model directories checked before loading, base fingerprints, and the bounded YAML reader (in-process units).

The CLI-level rows for the same problems are in test_bad_input.py; these pin the details cheaply.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tulu_lite.errors import TuluError
from tulu_lite.model.files import (
    base_fingerprint,
    check_model_dir,
    check_safetensors,
    fingerprint_differences,
)
from tulu_lite.recipe import load_recipe, local_model_dir
from tulu_lite.typed_yaml import read_yaml


@pytest.fixture
def model_dir(tmp_path, tiny_model_dir):
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


# ---- safetensors and model directories ----------------------------------------------------------------------------


def test_a_complete_safetensors_file_passes_and_every_damage_is_named(tmp_path):
    file = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(10), "b": torch.ones(3, 3)}, file)
    assert set(check_safetensors(file)) >= {"a", "b"}
    data = file.read_bytes()
    for damaged, message in [(data[:-5], r"w\.safetensors: truncated: 199 bytes, its header describes 204"),
                             (data + b"x", r"corrupt: 1 bytes after the last tensor"),
                             (data[:50], r"not a complete safetensors file \(50 bytes"),
                             (b"\x00" * 3, r"not a complete safetensors file"),
                             (b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}", r"its header is not JSON")]:
        file.write_bytes(damaged)
        with pytest.raises(TuluError, match=message):
            check_safetensors(file)


def test_model_directories_are_checked_before_loading(model_dir, tmp_path):
    check_model_dir(model_dir)  # the real thing passes
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(TuluError, match=r"^--base: .*adapter: is a LoRA adapter, not a model \(merge it first"):
        check_model_dir(adapter, "--base")
    with pytest.raises(TuluError, match=r"missing: model directory not found"):
        check_model_dir(tmp_path / "missing")
    (model_dir / "config.json").write_text("[1, 2]")
    with pytest.raises(TuluError, match=r"config\.json: expected a JSON object, got a list"):
        check_model_dir(model_dir)


def test_a_shard_index_naming_a_missing_shard_is_refused(model_dir):
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(TuluError, match=r"index\.json: names model-00002-of-00002\.safetensors, which is missing"):
        check_model_dir(model_dir)


def test_config_without_weights_is_not_a_model(model_dir):
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(TuluError, match=r"config\.json but no weights"):
        check_model_dir(model_dir)


def test_paths_are_never_mistaken_for_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_model_dir("huggyllama/llama-7b", "model.name_or_path") is None  # a hub id: looked up in the cache
    assert local_model_dir("gpt2", "model.name_or_path") is None
    for path in ["./llama", "/models/llama", "~/nope-llama", "models/llama/7b", "my model"]:
        with pytest.raises(TuluError, match="directory not found"):
            local_model_dir(path, "model.name_or_path")
    (tmp_path / "file").write_text("")
    with pytest.raises(TuluError, match="is a file, not a model directory"):
        local_model_dir("file", "model.name_or_path")


def test_a_recipe_resolves_a_path_that_cannot_be_a_hub_id(tmp_path):
    (tmp_path / "r.yaml").write_text("model: {name_or_path: models/llama/7b}\ndata: {train_files: [a]}\n"
                                     "output_dir: o\n")
    assert load_recipe(tmp_path / "r.yaml").model.name_or_path == str(tmp_path / "models" / "llama" / "7b")


# ---- fingerprints -------------------------------------------------------------------------------------------------


def test_the_fingerprint_sees_weights_layout_and_config(model_dir, llama_tokenizer):
    from tulu_lite.model.tiny import build_tiny_llama

    recorded = base_fingerprint(model_dir)
    assert fingerprint_differences(recorded, base_fingerprint(model_dir)) == []
    assert recorded["files"]["model.safetensors"]["size"] == (model_dir / "model.safetensors").stat().st_size

    build_tiny_llama(llama_tokenizer, seed=1).save_pretrained(model_dir)  # same layout, other values
    assert fingerprint_differences(recorded, base_fingerprint(model_dir)) == ["model.safetensors holds other weights"]

    build_tiny_llama(llama_tokenizer).to(torch.bfloat16).save_pretrained(model_dir)  # same values, another dtype
    changed = fingerprint_differences(recorded, base_fingerprint(model_dir))
    assert changed[0] == "config.json differs" and "model.safetensors was" in changed[1]

    (model_dir / "model.safetensors").rename(model_dir / "model-00001-of-00001.safetensors")
    changed = fingerprint_differences(recorded, base_fingerprint(model_dir))
    assert "model.safetensors is gone" in changed and "model-00001-of-00001.safetensors is new" in changed


def test_a_single_changed_tensor_is_seen(model_dir):
    from safetensors.torch import load_file

    recorded = base_fingerprint(model_dir)
    weights = load_file(model_dir / "model.safetensors")
    name = sorted(weights)[len(weights) // 2]
    weights[name] = weights[name] + 1e-3  # e.g. one layer fine-tuned in place
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    assert fingerprint_differences(recorded, base_fingerprint(model_dir)) == ["model.safetensors holds other weights"]


def test_training_records_the_fingerprint_of_a_local_base(model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from tulu_lite.model.loading import add_lora
    from tulu_lite.recipe import LoraSettings
    from tulu_lite.train.report import base_record

    (tmp_path / "r.yaml").write_text(f"model: {{name_or_path: {model_dir}}}\ndata: {{train_files: [a]}}\n"
                                     f"output_dir: o\n")
    model = add_lora(AutoModelForCausalLM.from_pretrained(model_dir), LoraSettings(r=2, target_modules=["q_proj"]))
    record = base_record(load_recipe(tmp_path / "r.yaml"), model)
    assert record["fingerprint"] == base_fingerprint(model_dir)
    assert "weights_sha256" not in record


def test_max_shard_size_is_checked_first():
    from tulu_lite.merge.release import shard_size

    assert shard_size("5GB") == "5GB" and shard_size("2GiB") == "2GiB" and shard_size("1000") == 1000
    for bad in ["lots", "5 gigs", "0", "-1MB", ""]:
        with pytest.raises(TuluError, match="--max-shard-size: expected a size"):
            shard_size(bad)


# ---- YAML: aliases within bounds are fine --------------------------------------------------------------------------


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path):
    from tulu_lite.data.mix import Mixture

    (tmp_path / "mix.yaml").write_text("defaults: &d {max_examples: 10}\nseed: 1\nsources:\n"
                                       "  - {<<: *d, path: a.jsonl}\n  - {<<: *d, path: b.jsonl}\n")
    data, lines, problems = read_yaml(tmp_path / "mix.yaml", "mixture", Mixture)
    assert [source["max_examples"] for source in data["sources"]] == [10, 10] and problems == []
    assert lines[("sources", 1)] == 5


def test_an_alias_bomb_is_refused_at_the_key_that_holds_it(tmp_path):
    from tulu_lite.recipe import Recipe
    from tulu_lite.typed_yaml import MAX_ALIAS_VALUES

    lines = ["model: {name_or_path: tiny-llama}", 'a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(TuluError, match=rf"bomb\.yaml:5: YAML aliases expand this document by more than "
                                        rf"{MAX_ALIAS_VALUES:,} values"):
        read_yaml(tmp_path / "bomb.yaml", "recipe", Recipe)
