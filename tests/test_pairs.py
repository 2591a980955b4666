"""Preference pairs: every row format, one-line errors, drops counted by reason, the SFT encoder on each side (proven
against the reference prefix method), every kind of input, mixtures, inspect and stats, the HH-RLHF converter."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import datasets
import pytest
from prefix_reference import prefix_reference
from test_encode import random_content

from tulu_lite.data.encode import trained_count
from tulu_lite.data.inputs import input_kind
from tulu_lite.data.inspect import inspect_pairs
from tulu_lite.data.mix import load_mixture, mix, plan_mixture
from tulu_lite.data.pairs import (
    DROP_IDENTICAL,
    DROP_SAME_TOKENS,
    PAIRS,
    drop_reason,
    encode_pair,
    encode_pairs,
    encode_pairs_dataset,
    hh_rlhf_messages,
    hh_rlhf_pair,
    looks_like_pairs,
    read_pairs,
    to_pair,
)
from tulu_lite.data.stats import pair_file_stats
from tulu_lite.errors import TuluError
from tulu_lite.recipe import DataSource


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def pair(prompt: str, good: str, bad: str, **extra) -> dict:
    return {"chosen": [user(prompt), assistant(good)], "rejected": [user(prompt), assistant(bad)], **extra}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


SOURCE = DataSource(path=Path("pairs.jsonl"))


# ---- row formats ---------------------------------------------------------------------------------------------------


def test_the_row_formats_normalise_to_two_whole_conversations():
    whole = [user("Hi"), assistant("Hello")], [user("Hi"), assistant("Go away")]
    expected = {"chosen": whole[0], "rejected": whole[1]}
    # chosen/rejected message lists; UltraFeedback binarized's string prompt beside them is ignored
    assert to_pair({"chosen": whole[0], "rejected": whole[1]}, SOURCE, "f:1") == expected
    assert to_pair({"prompt": "Hi", "chosen": whole[0], "rejected": whole[1], "messages": whole[0],
                    "score_chosen": 9.0}, SOURCE, "f:1") == expected
    # TRL's explicit prompt: completions as strings, or as assistant message lists; the prompt as a string or list
    assert to_pair({"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}, SOURCE, "f:1") == expected
    assert to_pair({"prompt": [user("Hi")], "chosen": [assistant("Hello")], "rejected": [assistant("Go away")]},
                   SOURCE, "f:1") == expected
    assert to_pair({"prompt": "Hi", "chosen": [assistant("Hello")], "rejected": "Go away"}, SOURCE, "f:1") == expected
    # id and dataset are kept, nothing else
    assert to_pair(pair("Hi", "a", "b", id=3, dataset="uf", prompt_id="x"), SOURCE, "f:1").keys() == {
        "id", "dataset", "chosen", "rejected"}


def test_columns_and_roles_are_mapped():
    source = DataSource(path=Path("x.jsonl"), chosen="better", rejected="worse", prompt="question",
                        role="from", content="value", roles={"human": "user", "gpt": "assistant"})
    row = {"question": [{"from": "human", "value": "Hi"}], "better": [{"from": "gpt", "value": "Hello"}],
           "worse": [{"from": "gpt", "value": "No"}]}
    assert to_pair(row, source, "f:1") == {"chosen": [user("Hi"), assistant("Hello")],
                                           "rejected": [user("Hi"), assistant("No")]}


@pytest.mark.parametrize("row, message", [
    ({"chosen": 3, "rejected": []}, "f.jsonl:7: chosen must be a list of messages (or a completion string after a "
                                    "'prompt'), got int"),
    ({"chosen": [user("x"), assistant("a")]}, "f.jsonl:7: no 'rejected' key (keys: chosen)"),
    ({"chosen": "a", "rejected": "b"}, "f.jsonl:7: chosen is a completion string but the row has no 'prompt'"),
    ({"chosen": [user("x")], "rejected": [user("x"), assistant("b")]},
     "f.jsonl:7: chosen: no assistant message (nothing to train on)"),
    ({"chosen": [user("x"), assistant("a"), user("more")], "rejected": [user("x"), assistant("b")]},
     "f.jsonl:7: chosen ends with a user message; each side must end with the assistant reply that is compared"),
    (pair("x", "a", "b") | {"rejected": [user("y"), assistant("b")]},
     "f.jsonl:7: chosen and rejected differ before the last assistant reply (message 0: user 'x' vs user 'y')"),
    (pair("x", "a", "b") | {"rejected": [user("x"), user("z"), assistant("b")]},
     "f.jsonl:7: chosen and rejected differ before the last assistant reply (chosen has 1 messages before its "
     "reply, rejected 2)"),
    ({"chosen": [{"role": "robot", "content": "x"}], "rejected": []}, "f.jsonl:7: chosen[0].role is 'robot'"),
    ({"chosen": [user("x"), assistant(None)], "rejected": []}, "f.jsonl:7: chosen: messages[1].content must be a "
                                                               "string, got NoneType"),
    ([1, 2], "f.jsonl:7: expected a JSON object, got list"),
])
def test_bad_rows_are_one_line_errors_naming_file_and_row(row, message):
    with pytest.raises(TuluError) as caught:
        to_pair(row, SOURCE, "f.jsonl:7")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_bad_row_in_a_file_names_its_line(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [pair("a", "b", "c"), pair("a", "b", "c") | {"rejected": "oops"}])
    with pytest.raises(TuluError, match=r"p\.jsonl:2: rejected is a completion string but the row has no 'prompt'"):
        list(read_pairs(path))


# ---- encoding ------------------------------------------------------------------------------------------------------


def random_pair(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """A multi-turn conversation (earlier assistant turns included) and two different last replies."""
    context = [{"role": "system", "content": random_content(rng)}] if rng.random() < 0.3 else []
    for _ in range(rng.randint(0, 4)):
        context += [user(random_content(rng)), assistant(random_content(rng))]
    context.append(user(random_content(rng)))
    first, second = random_content(rng), random_content(rng)
    return context + [assistant(first)], context + [assistant(second)]


def test_each_side_is_encoded_as_the_reference_prefix_method_does(llama_tokenizer):
    rng = random.Random(17)
    checked = truncated = 0
    for _ in range(300):
        chosen, rejected = random_pair(rng)
        max_len = rng.choice([8, 16, 32, 64, 2048])
        ours = encode_pair(chosen, rejected, llama_tokenizer, "tulu", max_len)
        for side, messages in (("chosen", chosen), ("rejected", rejected)):
            ref = prefix_reference(messages, llama_tokenizer, max_len)
            assert ours[f"{side}_input_ids"] == ref["input_ids"], json.dumps({"messages": messages, "max": max_len})
            assert ours[f"{side}_labels"] == ref["labels"], json.dumps({"messages": messages, "max": max_len})
            truncated += len(ref["input_ids"]) == max_len
        checked += 1
    assert checked == 300 and truncated > 100  # the truncation path was really exercised


def test_the_dataset_path_encodes_the_same_and_counts_drops(tmp_path, llama_tokenizer):
    rng = random.Random(3)
    pairs = [random_pair(rng) for _ in range(40)]
    rows = [{"chosen": c, "rejected": r, "id": i} for i, (c, r) in enumerate(pairs)]
    same = pair("What is 2+2?", "4", "4")
    rows += [same, {**same, "rejected": [user("What is 2+2?"), assistant("4 ")]}]  # identical (after the strip)
    rows.append(pair(" ".join(["word"] * 150), "yes", "no"))  # nothing trained within 128 tokens
    rows.append(pair("Hi", "The answer is " + "x " * 150 + "good", "The answer is " + "x " * 150 + "bad"))
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    encoded, report = encode_pairs_dataset([path], llama_tokenizer, "tulu", 128, cache_dir=str(tmp_path / "cache"))
    expected = encode_pairs([(r["chosen"], r["rejected"]) for r in rows], llama_tokenizer, "tulu", 128)
    reasons = [drop_reason(r["chosen"], r["rejected"], e, (trained_count(e["chosen_labels"]),
                                                          trained_count(e["rejected_labels"])), 128)
               for r, e in zip(rows, expected)]
    kept = [e for e, reason in zip(expected, reasons) if reason is None]
    assert list(encoded) == kept and report.kept == len(kept) >= 8
    assert reasons[-4:] == [DROP_IDENTICAL, f"{DROP_SAME_TOKENS} (128)",  # "4" vs "4 " (contents are stripped)
                            "chosen: no trained token within max_seq_length (128)",
                            f"{DROP_SAME_TOKENS} (128)"]  # cut before the replies differ
    assert report.dropped == dict(Counter(reason for reason in reasons if reason is not None))
    assert encoded.column_names == ["chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels"]
    assert report.chosen_trained_tokens == sum(sum(x != -100 for x in e["chosen_labels"]) for e in kept)
    assert report.trained_tokens == report.chosen_trained_tokens + report.rejected_trained_tokens
    assert report.tokens == sum(len(e["chosen_input_ids"]) + len(e["rejected_input_ids"]) for e in kept)


def test_pairs_keep_their_source_for_heldout_metrics(tmp_path, llama_tokenizer):
    path = write_jsonl(tmp_path / "uf.jsonl", [pair(f"q{i}", "good", "bad", dataset="a" if i % 2 else "")
                                               for i in range(6)])
    encoded, _ = encode_pairs_dataset([path], llama_tokenizer, "tulu", 64, cache_dir=str(tmp_path / "c"),
                                      with_source=True)
    assert encoded["dataset"] == ["uf", "a", "uf", "a", "uf", "a"]


# ---- inputs and mixtures --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair_rows():
    return [pair(f"Question {i}?", f"Right {i}.", f"Wrong {i}.", id=f"p{i}", dataset="uf") for i in range(12)]


def test_every_kind_of_input_yields_the_same_pairs(tmp_path, pair_rows):
    dataset = datasets.Dataset.from_list(pair_rows)
    dataset.to_parquet(tmp_path / "p.parquet")
    dataset.save_to_disk(tmp_path / "saved")
    (tmp_path / "p.json").write_text(json.dumps(pair_rows))
    write_jsonl(tmp_path / "p.jsonl", pair_rows)
    for name, kind in (("p.parquet", "parquet"), ("saved", "saved"), ("p.json", "json"), ("p.jsonl", "jsonl")):
        assert input_kind(DataSource(path=tmp_path / name)) == kind
        assert list(read_pairs(tmp_path / name)) == pair_rows, name
        assert looks_like_pairs(tmp_path / name)
    with pytest.raises(TuluError, match=r"p\.parquet: no 'better' column \(columns: chosen, rejected, id, dataset\); "
                                        r"map the columns holding the two sides"):
        list(read_pairs({"path": tmp_path / "p.parquet", "chosen": "better"}))


def test_trl_prompt_format_from_parquet(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(3)]
    datasets.Dataset.from_list(rows).to_parquet(tmp_path / "trl.parquet")
    assert [r["chosen"] for r in read_pairs(tmp_path / "trl.parquet")] == [
        [user(f"q{i}"), assistant(f"yes {i}")] for i in range(3)]


def test_conversations_do_not_look_like_pairs():
    demo = Path(__file__).resolve().parents[1] / "tulu_lite" / "assets" / "demo" / "train.jsonl"
    assert not looks_like_pairs(demo)


def test_mixtures_cap_and_mix_pairs(tmp_path, pair_rows):
    write_jsonl(tmp_path / "a.jsonl", pair_rows)
    trl = [{"prompt": f"t{i}", "chosen": "good", "rejected": "bad", "dataset": "trl"} for i in range(10)]
    datasets.Dataset.from_list(trl).to_parquet(tmp_path / "b.parquet")
    recipe = tmp_path / "mix.yaml"
    recipe.write_text("seed: 3\nsources:\n  - {path: a.jsonl, max_examples: 5}\n  - {path: b.parquet, fraction: 2}\n")
    report = mix(recipe, tmp_path / "out.jsonl")
    assert [row["taken"] for row in report.rows] == [5, 20]
    written = list(read_pairs(tmp_path / "out.jsonl"))
    assert len(written) == 25 and sum(r["dataset"] == "trl" for r in written) == 20
    assert all(r["chosen"][-1]["content"] == "good" for r in written if r["dataset"] == "trl")
    plans = plan_mixture(load_mixture(recipe), lambda: tmp_path, rows=PAIRS)
    assert [len(plan.selected) for plan in plans] == [5, 20]


def test_a_bad_pair_in_a_mixture_names_its_file_and_line(tmp_path, pair_rows):
    write_jsonl(tmp_path / "a.jsonl", [*pair_rows[:3], {"chosen": [user("x"), assistant("y")], "rejected": 5}])
    recipe = tmp_path / "mix.yaml"
    recipe.write_text("sources: [a.jsonl]\n")
    with pytest.raises(TuluError, match=r"a\.jsonl:4: rejected must be a list of messages"):
        mix(recipe, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


# ---- inspect and stats --------------------------------------------------------------------------------------------


def test_inspect_counts_each_side_and_the_drops(tmp_path, llama_tokenizer, pair_rows):
    rows = [*pair_rows, pair("same", "x", "x"), pair(" ".join(["long"] * 40), "a", "b")]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    totals = inspect_pairs(path, llama_tokenizer, "tulu", max_seq_length=24, show=2)
    assert totals.pairs == 14 and totals.kept == 12
    assert totals.dropped == {DROP_IDENTICAL: 1, "chosen: no trained token within max_seq_length (24)": 1}
    encoded = encode_pairs([(r["chosen"], r["rejected"]) for r in pair_rows], llama_tokenizer, "tulu", 24)
    assert totals.trained_tokens["chosen"] == sum(sum(x != -100 for x in e["chosen_labels"]) for e in encoded)
    assert totals.tokens["rejected"] == sum(len(e["rejected_input_ids"]) for e in encoded)
    chosen, rejected = totals.shown[0]
    assert "Right 0." in chosen.plain and "Wrong 0." in rejected.plain


def test_stats_of_pairs(tmp_path, llama_tokenizer, pair_rows):
    path = write_jsonl(tmp_path / "p.jsonl", [*pair_rows, pair("same", "x", "x")])
    stats = pair_file_stats(path, llama_tokenizer, batch_size=5)
    assert stats.instances == 13 and stats.identical == 1 and stats.datasets["uf"] == 12
    length = lambda text: len(llama_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert stats.chosen_lengths[0] == length("Right 0.") and stats.context_lengths[0] == length("Question 0?")
    assert stats.to_json()["instances"] == 13


# ---- Anthropic HH-RLHF ---------------------------------------------------------------------------------------------


def test_hh_rlhf_transcripts_become_pairs():
    chosen = "\n\nHuman: What is a cat?\n\nAssistant: An animal.\n\nHuman: Is it nice?\n\nAssistant: Often, yes."
    rejected = "\n\nHuman: What is a cat?\n\nAssistant: An animal.\n\nHuman: Is it nice?\n\nAssistant: No idea."
    converted = hh_rlhf_pair(chosen, rejected)
    assert converted["chosen"] == [user("What is a cat?"), assistant("An animal."), user("Is it nice?"),
                                   assistant("Often, yes.")]
    assert converted["rejected"][-1] == assistant("No idea.")
    assert to_pair(converted, SOURCE, "hh:1") == converted  # a valid pair
    # multi-line turns, a missing leading blank line, an empty last reply
    assert hh_rlhf_messages("Human: a\nb\n\nAssistant:") == [user("a\nb"), assistant("")]
    with pytest.raises(TuluError, match="not an HH-RLHF transcript"):
        hh_rlhf_messages("Hello there")
