"""The sources tables: the twelve TÜLU v1 sources, one `Source` row each, in the paper's order, and the
preference-pair sources (`PAIR_SOURCES`, one `PairSource` row each).

A row says what the authors release (file names, the globs that find them in a folder, the fields a record must
have) and which converter turns a record into conversations in each style (`clean`, `v1`); super_ni reads a whole
folder instead (`super_ni`). Adding a source is adding a row here, and its converters to a family module.
"""

from __future__ import annotations

from difflib import get_close_matches

from tulu_lite.data.sources import clean, preferences, v1
from tulu_lite.data.sources.conversion import OPTIONAL_TEXT, TEXT, Source
from tulu_lite.data.sources.preferences import PairSource
from tulu_lite.errors import TuluError

_INSTRUCTION_FIELDS = {"instruction": TEXT, "input": OPTIONAL_TEXT, "output": TEXT}
_FLAN_FIELDS = {"inputs": TEXT, "targets": TEXT}

SOURCES: dict[str, Source] = {source.name: source for source in (
    Source("super_ni", "the natural-instructions repository folder: splits/xlingual/train_tasks.txt (v1) or "
           "splits/default/train_tasks.txt (clean), tasks/*.json", (), {}, None, None,
           frozenset({"zero_shot_per_task", "few_shot_per_task", "n_few_shot"})),
    Source("cot", "cot_zsopt.jsonl / cot_fsopt.jsonl (or their folder) with inputs, targets", ("*.jsonl",),
           _FLAN_FIELDS, clean.convert_flan, v1.convert_flan, frozenset({"cot_zero_shot", "cot_few_shot"}),
           id_with_file=True, v1_files=("cot_zsopt.jsonl", "cot_fsopt.jsonl")),
    Source("flan_v2", "flan_v2_resampled_100k.jsonl (a FLAN v2 JSON Lines export) with inputs, targets",
           ("flan_v2_resampled_100k.jsonl", "*.jsonl"), _FLAN_FIELDS, clean.convert_flan, v1.convert_flan,
           id_with_file=True),
    Source("dolly", "databricks-dolly-15k.jsonl with instruction, context, response, category",
           ("databricks-dolly-15k.jsonl", "*.jsonl"),
           {"instruction": TEXT, "context": OPTIONAL_TEXT, "response": TEXT}, clean.convert_dolly, v1.convert_dolly),
    Source("oasst1", "2023-04-12_oasst_ready.trees.jsonl message trees with prompt, replies",
           ("*oasst_ready.trees.jsonl", "*.trees.jsonl"), {"prompt": (dict,)}, clean.convert_oasst, v1.convert_oasst,
           frozenset({"top_k_reply"})),
    Source("self_instruct", "all_instances_82K.jsonl with instruction, input, output",
           ("all_instances_82K.jsonl", "*.jsonl"), _INSTRUCTION_FIELDS, clean.convert_alpaca_style,
           v1.convert_alpaca_style),
    Source("unnatural_instructions", "core_data.jsonl with instruction, instances[] of input, constraints, output",
           ("core_data.jsonl", "*.jsonl"), {"instruction": TEXT, "instances": (list,)}, clean.convert_unnatural,
           v1.convert_unnatural),
    Source("stanford_alpaca", "alpaca_data.json, a JSON array of instruction, input, output",
           ("alpaca_data.json",), _INSTRUCTION_FIELDS, clean.convert_alpaca_style, v1.convert_alpaca_style),
    Source("code_alpaca", "code_alpaca_20k.json, a JSON array of instruction, input, output",
           ("code_alpaca_20k.json",), _INSTRUCTION_FIELDS, clean.convert_alpaca_style, v1.convert_alpaca_style),
    Source("gpt4_alpaca", "alpaca_gpt4_data.json, a JSON array of instruction, input, output",
           ("alpaca_gpt4_data.json",), _INSTRUCTION_FIELDS, clean.convert_alpaca_style, v1.convert_alpaca_style),
    Source("baize", "*_chat_data.json, a JSON array of objects whose input holds a [|Human|]/[|AI|] transcript",
           ("*_chat_data.json",), {"input": TEXT}, clean.convert_baize, v1.convert_baize, id_with_file=True,
           v1_files=tuple(f"{name}_chat_data.json" for name in ("alpaca", "medical", "quora", "stackoverflow"))),
    Source("sharegpt", "ShareGPT JSON (sg_90k_part{1,2}_html_cleaned.json; v1 without --tokenizer: the already split "
           "sharegpt_html_cleaned_and_split.json): id, conversations[] of from, value",
           ("*.json",), {"conversations": (list,)}, clean.convert_sharegpt, v1.convert_sharegpt,
           frozenset({"split_max_tokens", "tokenizer"}), v1_files=("sharegpt_html_cleaned_and_split.json",),
           v1_split_files=("sg_90k_part1_html_cleaned.json", "sg_90k_part2_html_cleaned.json")),
)}


# Preference pairs (chosen/rejected, for preference tuning) are another output than conversations: their own family
# (`preferences`), rows and pipeline (`pipeline.convert_pairs`); `data convert` takes either kind of name.
PAIR_SOURCES: dict[str, PairSource] = {source.name: source for source in (
    PairSource("hh_rlhf", "Anthropic HH-RLHF: train.jsonl.gz / test.jsonl.gz (a file, a subset folder such as "
               "helpful-base, or the repository folder: every subset's train file) with chosen, rejected "
               "'\\n\\nHuman: ... \\n\\nAssistant: ...' transcripts",
               ("train.jsonl",), {"chosen": TEXT, "rejected": TEXT}, preferences.convert_hh_rlhf,
               ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")),
)}


def get_source(name: str) -> Source:
    """Look a conversation source up by name; an unknown one is an error with a suggestion."""
    if name in SOURCES:
        return SOURCES[name]
    if name in PAIR_SOURCES:
        raise TuluError(f"{name!r} is a preference-pair source: it converts to chosen/rejected pairs "
                        f"(`tulu-lite data convert {name} RAW -o OUT.jsonl`), not conversations")
    raise _unknown(name)


def get_pair_source(name: str) -> PairSource:
    """Look a preference-pair source up by name; an unknown one is an error with a suggestion."""
    if name in PAIR_SOURCES:
        return PAIR_SOURCES[name]
    raise _unknown(name)


def _unknown(name: str) -> TuluError:
    known = [*SOURCES, *PAIR_SOURCES]
    close = get_close_matches(name, known, n=1)
    hint = f", did you mean {close[0]!r}?" if close else ""
    return TuluError(f"unknown source {name!r}{hint} (known: {', '.join(known)})")
