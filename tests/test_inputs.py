"""Conversation inputs from the ecosystem: JSON, Parquet, save_to_disk and dataset repository folders, hub ids,
column mappings; the same records and the same errors as JSON Lines; training on them end to end."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from tiny_runs import tiny_cache  # noqa: F401  (keeps built tiny bases out of the user cache)

from tulu_lite.data.conversations import read_conversations
from tulu_lite.data.encode import encode_dataset, load_conversations_dataset
from tulu_lite.data.inputs import input_kind, parse_input, read_records
from tulu_lite.errors import TuluError
from tulu_lite.recipe import DataSettings, DataSource, load_recipe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tulu_lite" / "assets" / "demo" / "train.jsonl"
DEMO_RECIPE = ROOT / "recipes" / "demo.yaml"


@pytest.fixture(scope="module")
def rows():
    return list(read_conversations(DEMO))[:24]


@pytest.fixture(scope="module")
def ecosystem(tmp_path_factory, rows):
    """The same conversations as Parquet, JSON, a save_to_disk Dataset and DatasetDict, a dataset repo folder."""
    root = tmp_path_factory.mktemp("ecosystem")
    dataset = datasets.Dataset.from_list(rows)
    dataset.to_parquet(root / "chats.parquet")
    dataset.save_to_disk(root / "saved")
    datasets.DatasetDict({"train": dataset, "test": dataset.select(range(4))}).save_to_disk(root / "saved_dict")
    (root / "repo" / "data").mkdir(parents=True)
    dataset.to_parquet(root / "repo" / "data" / "train-00000-of-00001.parquet")
    (root / "chats.json").write_text(json.dumps(rows, indent=1))
    return root


@pytest.mark.parametrize("name, kind", [("chats.parquet", "parquet"), ("chats.json", "json"), ("saved", "saved"),
                                        ("saved_dict", "saved"), ("repo", "repo")])
def test_every_kind_of_input_yields_the_same_conversations(ecosystem, rows, name, kind):
    source = DataSource(path=ecosystem / name)
    assert input_kind(source) == kind
    records = list(read_records(source))
    assert [r["messages"] for r in records] == [r["messages"] for r in rows]
    assert [(r["id"], r["dataset"]) for r in records] == [(r["id"], r["dataset"]) for r in rows]


def test_a_split_of_a_dataset_dict_and_a_missing_split(ecosystem):
    assert len(list(read_records({"path": ecosystem / "saved_dict", "split": "test"}))) == 4
    with pytest.raises(TuluError, match=r"saved_dict: no split 'validation' \(splits: train, test\)"):
        list(read_records({"path": ecosystem / "saved_dict", "split": "validation"}))


def test_sharegpt_style_columns_are_mapped(tmp_path, rows):
    speaker = {"user": "human", "assistant": "gpt", "system": "system"}
    sharegpt = [{"id": f"sg{i}", "conversations": [{"from": speaker[m["role"]], "value": m["content"]}
                                                  for m in row["messages"]]} for i, row in enumerate(rows)]
    (tmp_path / "sg.json").write_text(json.dumps(sharegpt))
    datasets.Dataset.from_list(sharegpt).to_parquet(tmp_path / "sg.parquet")
    for name in ("sg.json", "sg.parquet"):
        source = parse_input(f"{{path: {tmp_path / name}, messages: conversations, role: from, content: value, "
                             f"roles: {{human: user, gpt: assistant}}}}")
        records = list(read_records(source))
        assert [r["messages"] for r in records] == [r["messages"] for r in rows]
        assert records[0]["id"] == "sg0" and "conversations" not in records[0]
    unmapped = {"path": tmp_path / "sg.json", "messages": "conversations", "role": "from", "content": "value"}
    with pytest.raises(TuluError, match=r"sg\.json:1: conversations\[\d\]\.from is 'human', expected one of system, "
                                        r"user, assistant \(rename others with roles"):
        list(read_records(unmapped))


def test_rows_are_validated_like_lines_with_row_numbers(tmp_path, rows):
    bad = [*rows[:2], {"messages": [{"role": "bot", "content": "beep"}]}]
    datasets.Dataset.from_list(bad).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(TuluError, match=r"bad\.parquet: row 3: messages\[0\]\.role is 'bot', expected one of"):
        list(read_records(tmp_path / "bad.parquet"))
    (tmp_path / "bad.json").write_text(json.dumps(bad, indent=1))
    with pytest.raises(TuluError, match=r"bad\.json:\d+: messages\[0\]\.role is 'bot'"):
        list(read_records(tmp_path / "bad.json"))


def test_parquet_without_messages_names_its_columns(tmp_path):
    datasets.Dataset.from_list([{"instruction": "a", "output": "b"}]).to_parquet(tmp_path / "alpaca.parquet")
    with pytest.raises(TuluError) as error:
        list(read_records(tmp_path / "alpaca.parquet"))
    assert str(error.value).startswith(f"{tmp_path / 'alpaca.parquet'}: no 'messages' column (columns: instruction, "
                                       f"output); map the column")


def test_hub_id_while_offline_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TuluError) as error:
        list(read_records("hf:tulu-lite-tests/no-such-dataset"))
    message = str(error.value)
    assert message.startswith("hf:tulu-lite-tests/no-such-dataset: can't reach the Hugging Face hub: offline mode")
    assert "hf download tulu-lite-tests/no-such-dataset --repo-type dataset --local-dir DIR" in message
    assert "\n" not in message


def test_recipe_entries_strings_hub_ids_and_mappings_round_trip(tmp_path):
    data = DataSettings(train_files=["a.jsonl", "hf:allenai/tulu-v2-sft-mixture", "hf:org/set:test",
                                   {"path": "sg.json", "messages": "conversations", "roles": {"human": "user"}}])
    assert [item.hub for item in data.train_files] == [None, "allenai/tulu-v2-sft-mixture", "org/set", None]
    assert data.train_files[2].split == "test"
    dumped = data.model_dump(mode="json")["train_files"]
    assert dumped == ["a.jsonl", "hf:allenai/tulu-v2-sft-mixture", "hf:org/set:test",
                      {"path": "sg.json", "messages": "conversations", "roles": {"human": "user"}}]
    assert DataSettings.model_validate({"train_files": dumped}) == data


def test_recipe_paths_in_mappings_are_relative_to_the_recipe(tmp_path):
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text("model: {name_or_path: tiny-llama}\noutput_dir: out\ndata:\n  train_files:\n"
                      "    - data/a.jsonl\n    - {path: data/b.parquet, messages: chat}\n    - hf:allenai/x\n")
    files = load_recipe(recipe).data.train_files
    assert [f.path for f in files[:2]] == [tmp_path / "recipes" / "data" / "a.jsonl",
                                           tmp_path / "recipes" / "data" / "b.parquet"]
    assert files[2].hub == "allenai/x" and files[2].path is None


def test_the_arrow_loader_reads_every_kind_into_one_dataset(ecosystem, rows, tmp_path):
    loaded = load_conversations_dataset([DEMO, ecosystem / "chats.parquet", "hf:" + str(ecosystem / "repo")],
                                        cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 114 + 2 * len(rows)
    assert loaded[114]["messages"] == [{"role": m["role"], "content": m["content"]} for m in rows[0]["messages"]]


def test_an_empty_or_missing_input_in_a_list_is_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(TuluError, match=r"empty\.jsonl: holds no conversation \(the file is empty\)"):
        load_conversations_dataset([DEMO, tmp_path / "empty.jsonl"], cache_dir=str(tmp_path / "cache"))
    with pytest.raises(TuluError, match=r"^data\.train_files\[1\]: .*gone\.parquet: file not found$"):
        load_conversations_dataset([DEMO, tmp_path / "gone.parquet"], key="data.train_files")


@pytest.mark.parametrize("name", ["chats.parquet", "saved", "repo"])
def test_the_demo_trains_end_to_end_on_ecosystem_data(ecosystem, tmp_path, llama_tokenizer, name):
    from tulu_lite.train import train

    # Held-out data takes the same kinds of input (here Parquet beside each kind of training input).
    overrides = [f"data.train_files=[{ecosystem / name}]", f"data.eval_files=[{ecosystem / 'chats.parquet'}]",
                 "training.max_steps=2", "training.logging_steps=1", "training.eval_steps=2",
                 "training.per_device_batch_size=4", f"output_dir={tmp_path / 'out'}"]
    result = train(load_recipe(DEMO_RECIPE, overrides))
    assert result.metrics["steps"] == 2 and (tmp_path / "out" / "adapter_model.safetensors").is_file()
    heldout = result.metrics["heldout"]
    assert sum(size["examples"] for size in heldout["sources"].values()) == 24
    assert [entry["step"] for entry in heldout["history"]] == [0, 2]  # before training, then every 2 steps
    saved = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert [item.path for item in saved.data.train_files] == [ecosystem / name]
    # What was trained is exactly the JSON Lines conversations: the same encoded rows.
    encoded, _ = encode_dataset([ecosystem / name], llama_tokenizer, "tulu", 256, cache_dir=str(tmp_path / "c"))
    reference = DataSource(path=tmp_path / "ref.jsonl")
    with open(reference.path, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in list(read_conversations(DEMO))[:24])
    expected, _ = encode_dataset([reference], llama_tokenizer, "tulu", 256, cache_dir=str(tmp_path / "c"))
    assert encoded["input_ids"] == expected["input_ids"] and encoded["labels"] == expected["labels"]


def test_a_byte_order_mark_and_crlf_are_accepted_for_training(tmp_path):
    path = tmp_path / "bom.jsonl"
    line = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]})
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n" + line.encode() + b"\r\n")
    loaded = load_conversations_dataset([path], cache_dir=str(tmp_path / "cache"))
    assert len(loaded) == 2 and loaded[0]["messages"][1]["content"] == "Hey"
