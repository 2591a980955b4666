"""`--style v1`: TÜLU v1's conversion (open-instruct e44fcf588), pinned on literal raw records.

The expected outputs below were worked out by hand from the reference's rules (reformat_datasets.py,
instruction_encode_templates.py, split_sharegpt_conversations.py): which records are kept and dropped, roles,
contents character for character, ids, and which template or sample a seeded `random` draws.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from tulu_lite.data.sources import ConvertOptions, ConvertReport, iter_converted
from tulu_lite.data.templates import (
    V1_TEMPLATES_WITH_INPUT,
    V1_TEMPLATES_WITHOUT_INPUT,
    render_instruction_v1,
)
from tulu_lite.errors import TuluError
from tulu_lite.tokenizer import BUNDLED_LLAMA_TOKENIZER

RAW = Path(__file__).parent / "fixtures" / "raw"


def run(source: str, path: Path | str, **options) -> tuple[list[dict], ConvertReport]:
    report = ConvertReport(source, [])
    return list(iter_converted(source, RAW / path, ConvertOptions(**options), report=report)), report


def pairs(records: list[dict]) -> list[tuple[str, str, str]]:
    """(id, user message, assistant message) of single-turn records."""
    return [(r["id"], r["messages"][0]["content"], r["messages"][1]["content"]) for r in records]


# ---- templates ---------------------------------------------------------------------------------------------------


def test_the_reference_template_sets_and_weights():
    assert len(V1_TEMPLATES_WITH_INPUT) == len(V1_TEMPLATES_WITHOUT_INPUT) == 14
    assert [w for *_, w in V1_TEMPLATES_WITH_INPUT] == [0.2, 0.1, 0.1] + [0.05] * 10 + [0.1]
    assert [w for *_, w in V1_TEMPLATES_WITHOUT_INPUT] == [0.2, 0.1, 0.1] + [0.05] * 10 + [0.1]
    # A few literal members, quirks included: the typo, the completion that starts with a newline, no space
    # after "Instruction:" in one input template.
    assert ("Plase answer the following request: {instruction}\nAnswer:", "{output}", 0.05) in \
        V1_TEMPLATES_WITHOUT_INPUT
    assert ("{instruction}", "\n{output}", 0.1) in V1_TEMPLATES_WITHOUT_INPUT
    assert ("Instruction:{instruction}\n\nInput: {input}\n\n", "{output}", 0.05) in V1_TEMPLATES_WITH_INPUT
    assert V1_TEMPLATES_WITH_INPUT[0] == ("{instruction}\n\n{input}\n\n", "{output}", 0.2)


@pytest.mark.parametrize("templates, input_text", [(V1_TEMPLATES_WITH_INPUT, "IN"),
                                                    (V1_TEMPLATES_WITHOUT_INPUT, "  ")])
def test_each_template_is_drawn_with_its_weight(templates, input_text):
    rng, draws = random.Random(0), 20000
    counts = Counter(render_instruction_v1(" INSTR ", input_text, " OUT ", rng) for _ in range(draws))
    expected = {(prompt.format(instruction="INSTR", input="IN"), completion.format(output="OUT")): weight
                for prompt, completion, weight in templates}
    assert set(counts) == set(expected)  # all 14, nothing else; an input of spaces counts as no input
    for rendered, weight in expected.items():
        assert abs(counts[rendered] / draws - weight) < 0.01, rendered


def test_one_draw_per_example_from_random_seeded_once_in_file_order():
    # random.Random(42) draws 0.6394, 0.0250, 0.2750, 0.2232, 0.7365, 0.6767: against the cumulative weights
    # .2 .3 .4 .45 .5 .55 .6 .65 .7 .75 ... they pick the 8th, 1st (with input), 2nd, 2nd, 10th (with input) and 9th.
    records, report = run("dolly", "dolly")
    assert pairs(records) == [
        ("dolly_0", "Instruction: When did the first person walk on the Moon?\n",
         "Neil Armstrong walked on the Moon on 20 July 1969."),
        ("dolly_1", "Summarize the paragraph in one sentence.\n\nThe Danube flows through ten countries, more than "
                    "any other river in the world. It starts in Germany's Black Forest and ends in the Black Sea.\n\n",
         "The Danube runs from Germany's Black Forest to the Black Sea through ten countries, a world record."),
        ("dolly_2", "Which of these are fruits: carrot, apple, potato, mango?\n",
         "Apple and mango are fruits; carrot and potato are vegetables."),
        ("dolly_3", "Give me three ideas for a rainy Saturday.\n",
         "1. Bake bread.\n2. Start a jigsaw puzzle.\n3. Watch a film series back to back."),
        ("dolly_4", "Task: Who founded the company?\n\nLumen Tools was founded in 1998 by Carla Ruiz in Valencia."
                    "\n\nAnswer:", "Carla Ruiz founded Lumen Tools."),
        ("dolly_5", "Instruction: Write a haiku about snow.\nOutput:", ""),  # blank response kept (empty)
    ]
    assert not report.skipped
    other_seed, _ = run("dolly", "dolly", seed=7)
    assert pairs(other_seed) != pairs(records)


def test_self_instruct_keeps_an_empty_output():
    records, report = run("self_instruct", "self_instruct")
    assert [r["id"] for r in records] == [f"self_instruct_{i}" for i in range(4)]
    assert records[3]["messages"][1]["content"] == "" and not report.skipped


# ---- FLAN v2 and CoT ---------------------------------------------------------------------------------------------


def test_flan_prompts_get_a_newline_unless_they_end_with_one_or_a_colon():
    records, _ = run("flan_v2", "flan_v2")
    assert pairs(records)[0] == ("flan_v2_0", "Translate to French:\n\nThe weather is nice today.\n",
                                 "Il fait beau aujourd'hui.")
    assert [r["id"] for r in records] == [f"flan_v2_{i}" for i in range(4)]


def test_cot_reads_zero_shot_then_few_shot_and_numbers_them_together():
    records, _ = run("cot", "cot")
    assert [r["id"] for r in records] == [f"cot_{i}" for i in range(5)]
    prompts = [r["messages"][0]["content"] for r in records]
    assert prompts[0].endswith("Let's think step by step:")  # ends with a colon: unchanged
    assert prompts[1].endswith("\nA:")
    assert prompts[2].endswith("Is the hypothesis entailed by the premise? Think first.\n")  # newline added
    assert prompts[3].startswith("Q: Tom has 3 apples")  # the few-shot file comes second


def test_cot_samples_each_file_with_the_shared_generator():
    # random.Random(42).sample(range(3), 2) == [2, 0], then .sample(range(2), 1) == [0]: zero-shot lines 3 and 1,
    # then few-shot line 1, in the order drawn.
    records, _ = run("cot", "cot", cot_zero_shot=2, cot_few_shot=1)
    assert [(r["id"], r["messages"][0]["content"][:20]) for r in records] == [
        ("cot_0", 'Premise: "A man is p'), ("cot_1", "Is the following sen"), ("cot_2", "Q: Tom has 3 apples ")]


def test_cot_without_few_shot_examples_reads_neither_file_as_the_reference_did():
    # reformat_datasets.py guards the zero-shot file with `if num_few_shot_examples > 0` too.
    records, report = run("cot", "cot", cot_few_shot=0)
    assert records == [] and report.records_read == 0
    assert [r["id"] for r in run("cot", "cot", cot_zero_shot=0)[0]] == ["cot_0", "cot_1"]  # few-shot file only


# ---- unnatural instructions ------------------------------------------------------------------------------------


def test_unnatural_constraints_are_appended_unless_none_and_instances_numbered():
    records, _ = run("unnatural_instructions", "unnatural_instructions")
    assert pairs(records) == [
        ("unnatural_instructions_0", "Task: You are given a sentence. Find the verb in it.\nInput: The dog barked "
                                     "loudly.\nOutput:", "barked"),  # "None." is no constraint
        ("unnatural_instructions_1", "Decide whether the review is positive or negative.\nThe output should be "
                                     "'positive' or 'negative'.\n\nGreat pasta, slow service.\n\n", "positive"),
        ("unnatural_instructions_2", "Decide whether the review is positive or negative.\nThe output should be "
                                     "'positive' or 'negative'.\nNever again.\n\n", "negative"),
        ("unnatural_instructions_3", "Count the vowels in the word.\nbanana\n\n", "3"),  # "none" neither
    ]


# ---- oasst1 ------------------------------------------------------------------------------------------------------


def test_oasst_emits_every_root_to_assistant_path_depth_first():
    records, report = run("oasst1", "oasst1")
    last = [(r["id"], len(r["messages"]), r["messages"][-1]["content"][:21]) for r in records]
    assert last == [
        ("oasst1_0", 2, "Water boils at 100 °C"),  # a1 on its own, although the conversation continues
        ("oasst1_1", 4, "About 70 °C, because "),
        ("oasst1_2", 4, "Lower than 100 °C."),
        ("oasst1_3", 2, "It boils at 212 °F."),
        ("oasst1_4", 2, "This reply was remove"),  # v1 read the trees as released: no `deleted` filter
        ("oasst1_5", 2, "It depends on the air"),
        ("oasst1_6", 2, "A cat with a taste fo"),  # its unanswered follow-up is no path of its own
    ]
    assert records[1]["messages"][:2] == records[0]["messages"]
    assert [m["role"] for m in records[1]["messages"]] == ["user", "assistant", "user", "assistant"]
    assert not report.skipped


def test_oasst_top_k_reply_still_applies():
    # Replies by quality: a5 1.0, a1 0.9, a2 0.4, a6 none (0.0); under a1's p2: a3 0.8 > a4 0.2.
    records, _ = run("oasst1", "oasst1", top_k_reply=1)
    assert [r["messages"][-1]["content"][:21] for r in records] == ["This reply was remove", "A cat with a taste fo"]
    records, _ = run("oasst1", "oasst1", top_k_reply=2)
    assert [r["messages"][-1]["content"][:21] for r in records] == [
        "This reply was remove", "Water boils at 100 °C", "About 70 °C, because ", "Lower than 100 °C.",
        "A cat with a taste fo"]


# ---- baize -------------------------------------------------------------------------------------------------------


def test_baize_reads_the_four_files_in_the_reference_order_and_numbers_across_them():
    records, report = run("baize", "baize")
    got = {r["id"]: r["messages"] for r in records}
    assert list(got) == ["baize_0", "baize_1", "baize_2", "baize_3", "baize_5"]
    assert got["baize_0"][0]["content"] == "Name a primary colour."  # alpaca_chat_data.json first
    assert got["baize_1"][0]["content"] == "What helps a sore throat?"  # then medical, quora, stackoverflow
    # A "[|Human|] [|AI|]" round with nothing in it is kept, empty, as v1 kept it.
    assert got["baize_5"][2:] == [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]
    # baize_4 (no complete round) was written with no messages by v1: nothing to train on, dropped and counted.
    assert report.skipped == Counter({"no assistant message (v1 wrote it; nothing to train on)": 1})
    assert report.repaired == Counter({"baize: several [|AI|] turns in one round joined (the reference stops here)": 1})


# ---- super_ni ----------------------------------------------------------------------------------------------------


def test_super_ni_reads_the_xlingual_list_with_zero_and_few_shot_formats():
    records, report = run("super_ni", "super_ni", zero_shot_per_task=2, few_shot_per_task=2)
    ids = [r["id"] for r in records]
    # task001 has 6 instances > 2 + 2: random.Random(42).sample(instances, 4) picks 0006, 0001, 0005, 0003.
    assert ids == ["super_ni_task001-0006", "super_ni_task001-0001", "super_ni_task001-0005",
                   "super_ni_task001-0003", "super_ni_task1564-0001", "super_ni_task1564-0002",
                   "super_ni_task1564-0003", "super_ni_task1702-0001", "super_ni_task1702-0002",
                   "super_ni_task1702-0003"]  # the Spanish task is only on the xlingual list
    few_shot = records[2]["messages"]
    assert few_shot[0]["content"] == (
        "In this task, you're given a passage. Write a question about the passage whose answer is a name mentioned "
        "in it.\n\n"
        "Input:\nPassage: Omar taught Lina how to sail.\nOutput:\nWho taught Lina to sail?\n\n"
        "Input:\nPassage: Mara lent her bicycle to Tom before the race.\nOutput:\nWho lent a bicycle to Tom?\n\n"
        "Input:\nPassage: Sofia painted the mural with Diego.\nOutput:\n")
    assert few_shot[1] == {"role": "assistant", "content": "Who painted the mural with Sofia?"}
    assert records[0]["messages"][0]["content"] == (
        "In this task, you're given a passage. Write a question about the passage whose answer is a name mentioned "
        "in it.\nPassage: The prize went to Nadia, not Boris.\n\n")  # zero-shot: template "{instruction}\n{input}\n\n"
    # task1564 has exactly 4 instances: all, in order; the 4th has no output at all (the reference would stop):
    # skipped after its draws. An empty first output (task1702-0003) is kept.
    assert report.skipped["super_ni: instance without any output (the reference stops here)"] == 1
    assert records[-1]["messages"][1]["content"] == ""
    assert report.skipped["super_ni: mmmlu task (evaluation leakage)"] == 1


def test_super_ni_per_task_counts():
    records, _ = run("super_ni", "super_ni")  # 60 zero-shot + 20 few-shot per task at most
    per_task = Counter(r["id"].split("-")[0] for r in records)
    assert per_task == {"super_ni_task001": 6, "super_ni_task1564": 3, "super_ni_task1702": 3}
    few = [r for r in records if "\nOutput:\n" in r["messages"][0]["content"]]
    assert not few  # every instance fits in the 60 zero-shot ones
    zero_only, _ = run("super_ni", "super_ni", zero_shot_per_task=0, few_shot_per_task=80)
    assert all(r["messages"][0]["content"].endswith("\nOutput:\n") for r in zero_only)


def test_clean_style_reads_the_default_list_instead():
    clean, _ = run("super_ni", "super_ni", style="clean")
    assert not any("task1702" in r["id"] for r in clean)


# ---- sharegpt ----------------------------------------------------------------------------------------------------


def _turns(*pairs_of_speaker_and_value):
    return [{"from": speaker, "value": value} for speaker, value in pairs_of_speaker_and_value]


def test_sharegpt_is_split_as_fastchat_did_then_filtered_to_human_gpt_alternation(tmp_path, llama_tokenizer):
    cost = lambda text: len(llama_tokenizer(text)["input_ids"]) + 6  # noqa: E731 (BOS + value + 6, as v1 counted)
    hi, hello, long_q, long_a = "Hi", "Hello there", "word " * 10, "word " * 40
    assert [cost(hi), cost(hello), cost(long_q), cost(long_a)] == [8, 9, 18, 48]
    raw = [
        # pairs cost 17, 66, 17 with a budget of 40: [0:2] is cut before the oversized pair, which is skipped; its
        # cost still counts, so the next cut is an empty part [4:4]; the last pair overflows and is lost.
        {"id": "sg1", "conversations": _turns(("human", hi), ("gpt", hello), ("human", long_q), ("gpt", long_a),
                                              ("human", hi), ("gpt", hello), ("human", hi))},
        # pairs cost 17 each: [0:4] holds a chatgpt turn and is filtered out; [4:8] survives.
        {"id": "sg2", "conversations": _turns(("human", hi), ("gpt", hello), ("human", hi), ("chatgpt", hello),
                                              ("human", hi), ("gpt", hello), ("human", hi), ("gpt", hello))},
        # starts with the assistant: no part alternates human/gpt from the start.
        {"id": "sg3", "conversations": _turns(("gpt", hello), ("human", hi), ("gpt", hello), ("human", hi))},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(raw))
    report = ConvertReport("sharegpt", [])
    records = list(iter_converted("sharegpt", path, ConvertOptions(tokenizer=str(BUNDLED_LLAMA_TOKENIZER),
                                                                  split_max_tokens=40), report=report))
    assert [(r["id"], [(m["role"], m["content"]) for m in r["messages"]]) for r in records] == [
        ("sharegpt_sg1_0", [("user", hi), ("assistant", hello)]),
        ("sharegpt_sg2_4", [("user", hi), ("assistant", hello), ("user", hi), ("assistant", hello)]),
    ]
    assert report.skipped == Counter({"sharegpt: empty part after splitting": 1,
                                      "sharegpt: part whose speakers are not human/gpt alternating": 2})


def test_sharegpt_without_a_tokenizer_is_the_already_split_file(tmp_path):
    raw = [
        {"id": "a_0", "conversations": _turns(("human", "Hi"), ("gpt", "Hello"), ("human", "Bye"))},
        {"id": "b_2", "conversations": _turns(("user", "Hi"), ("chatgpt", ""))},  # user/chatgpt mapped, empty kept
        {"id": "c_0", "conversations": _turns(("system", "Be brief."), ("human", "Hi"), ("gpt", "Hello"))},
        {"id": "d_0", "conversations": []},
    ]
    path = tmp_path / "sharegpt_html_cleaned_and_split.json"
    path.write_text(json.dumps(raw))
    report = ConvertReport("sharegpt", [])
    records = list(iter_converted("sharegpt", path, ConvertOptions(), report=report))
    assert [(r["id"], [m["role"] for m in r["messages"]]) for r in records] == [
        ("sharegpt_a_0", ["user", "assistant", "user"]), ("sharegpt_b_2", ["user", "assistant"])]
    assert report.skipped == Counter({"sharegpt: conversation with a 'system' turn": 1, "sharegpt: no turns": 1})
    path.write_text(json.dumps([{"id": "e", "conversations": _turns(("human", "Hi"), ("bard", "Hey"))}]))
    with pytest.raises(TuluError, match=r"sg|sharegpt_html_cleaned_and_split\.json:1: conversations\[1\]\.from is "
                                        r"'bard'"):
        list(iter_converted("sharegpt", path, ConvertOptions()))


def test_a_sharegpt_folder_is_read_as_the_reference_read_it(tmp_path):
    # prepare_train_data.sh leaves the two raw parts and the split file in one folder; the converter read the split
    # file, the split script the two parts. Reading all three would convert every conversation twice.
    part = lambda name: [{"id": name, "conversations": _turns(("human", "Hi"), ("gpt", "Hello"))}]  # noqa: E731
    for name in ("sg_90k_part2_html_cleaned", "sg_90k_part1_html_cleaned", "sharegpt_html_cleaned_and_split"):
        (tmp_path / f"{name}.json").write_text(json.dumps(part(name)))
    ids = lambda **options: [r["id"] for r in iter_converted("sharegpt", tmp_path, ConvertOptions(**options))]  # noqa
    assert ids() == ["sharegpt_sharegpt_html_cleaned_and_split"]
    assert ids(tokenizer=str(BUNDLED_LLAMA_TOKENIZER)) == [
        "sharegpt_sg_90k_part1_html_cleaned_0", "sharegpt_sg_90k_part2_html_cleaned_0"]
