"""TyDi QA GoldP: extractive QA in nine languages given the gold passage, 1-shot, SQuAD F1 and EM per language.

Each language has its own instruction and field names (below). The prompt is the instruction, "\\n\\n", one example
from the same language's train split, "\\n\\n", then "Passage: ..\\nQuestion: ..\\n" and "Answer:"; passages are cut to
512 tokens; 50 new tokens at most. The language is the prefix of each question id ("english-...").

- tulu-v1 (the paper): 100 questions per language and the demonstration drawn with `random.seed(42)` +
  `random.sample`, languages in the reference's set order (see `subsets.set_order`); a passage longer than 512
  tokens is cut as the reference cuts it (its token count includes BOS and the cut text starts with "<s>");
  generation stops at the first newline, chat or not, and the answer is what precedes it, stripped.
- tulu-lite: every question (or a seeded sample of N per language), languages in name order; without a chat
  format generation stops at the first newline, in a chat the model ends its turn.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import numpy as np

from tulu_lite.errors import TuluError
from tulu_lite.eval.data_files import required_file, task_dir
from tulu_lite.eval.prompts import build_prompt, task_chat_format
from tulu_lite.eval.scoring import (
    best_over_golds,
    open_instruct_squad,
    squad_exact,
    squad_f1,
    truncate_at_stop,
)
from tulu_lite.eval.settings import EvalSettings, subset_size
from tulu_lite.eval.subsets import reference_rng, sample_if_longer, set_order
from tulu_lite.json_files import read_json_file

NAME = "tydiqa"
MAX_NEW_TOKENS = 50
PAPER_SUBSET = 100
DEV_FILE = "tydiqa-goldp-v1.1-dev.json"
TRAIN_FILE = "tydiqa-goldp-v1.1-train.json"
PREDICTION_KEYS = ("lang", "answers", "output")
SCORING_KEYS = ()
HEADLINE_LABEL = "TydiQA F1 (1-shot GoldP)"

# language -> (instruction, passage field, question field, answer field)
TEMPLATES = {
    "english": ("Answer the following question based on the information in the given passage.", "Passage:",
                "Question:", "Answer:"),
    "arabic": ("أجب على السؤال التالي بناءً على المعلومات في المقطع المعطى.", "المقطع:", "السؤال:", "الإجابة:"),
    "bengali": ("প্রদত্ত অধ্যায়ের তথ্যের উপর ভিত্তি করে নিম্নলিখিত প্রশ্নের উত্তর দিন।", "অধ্যায়:", "প্রশ্ন:",
                "উত্তর:"),
    "finnish": ("Vastaa seuraavaan kysymykseen annetun kappaleen tiedon perusteella.", "Kappale:", "Kysymys:",
                "Vastaus:"),
    "indonesian": ("Jawab pertanyaan berikut berdasarkan informasi di bagian yang diberikan.", "Bagian:",
                   "Pertanyaan:", "Jawaban:"),
    "korean": ("주어진 문단의 정보에 기반하여 다음 질문에 답하십시오.", "문단:", "질문:", "답변:"),
    "russian": ("Ответьте на следующий вопрос на основе информации в данном отрывке.", "Отрывок:", "Вопрос:",
                "Ответ:"),
    "swahili": ("Jibu swali lifuatalo kulingana na habari kwenye kifungu kilichotolewa.", "Kifungu:", "Swali:",
                "Jibu:"),
    "telugu": ("ఇచ్చిన పేరాలోని సమాచారం ఆధారంగా కింది ప్రశ్నకు సమాధానం ఇవ్వండి.", "పేరా:", "ప్రశ్న:", "సమాధానం:"),
}


def read_squad(path: Path) -> list[dict]:
    """Questions from a SQuAD-layout file (data -> paragraphs -> qas), each with its passage and language."""
    data = read_json_file(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TuluError(f"{path}: expected SQuAD layout ({{'data': [{{'paragraphs': [...]}}]}})")
    examples = []
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                if not {"id", "question", "answers"} <= qa.keys() or not qa["answers"]:
                    raise TuluError(f"{path}: question {qa.get('id', '?')!r} needs 'id', 'question' and 'answers'")
                lang = qa["id"].split("-")[0]
                if lang not in TEMPLATES:
                    raise TuluError(f"{path}: question {qa['id']!r}: unknown language {lang!r} "
                                    f"(expected an id starting with one of {', '.join(TEMPLATES)})")
                examples.append({"id": qa["id"], "lang": lang, "context": paragraph["context"],
                                 "question": qa["question"], "answers": [a["text"] for a in qa["answers"]]})
    return examples


def languages(settings: EvalSettings, examples: list[dict]) -> list[str]:
    langs = [example["lang"] for example in examples]
    return set_order(langs) if settings.protocol == "tulu-v1" else sorted(set(langs))


def by_language(examples: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for example in examples:
        grouped[example["lang"]].append(example)
    return grouped


def draw_questions(settings: EvalSettings, dev: list[dict], order: list[str], rng: random.Random) -> list[dict]:
    n = subset_size(settings, PAPER_SUBSET)
    grouped = by_language(dev)
    if settings.protocol == "tulu-v1":
        return [ex for lang in order for ex in sample_if_longer(rng, grouped[lang], n)]
    if n is None:
        return dev
    return [ex for lang in order for ex in rng.sample(grouped[lang], min(n, len(grouped[lang])))]


def draw_demonstrations(settings: EvalSettings, order: list[str], rng: random.Random) -> dict[str, list[dict]]:
    if settings.tydiqa_shots == 0:
        return {lang: [] for lang in order}
    path = required_file(task_dir(settings, NAME) / TRAIN_FILE, "TyDi QA GoldP train file, source of the shots")
    train = by_language(read_squad(path))
    demos = {}
    for lang in order:
        if len(train[lang]) < settings.tydiqa_shots:
            raise TuluError(f"{path}: {len(train[lang])} {lang} examples, {settings.tydiqa_shots} needed for the shots")
        demos[lang] = rng.sample(train[lang], settings.tydiqa_shots)
    return demos


def draw(settings: EvalSettings) -> tuple[list[dict], dict[str, list[dict]]]:
    """The evaluated questions and the demonstrations per language, drawn as the protocol says."""
    dev = read_squad(required_file(task_dir(settings, NAME) / DEV_FILE, "TyDi QA GoldP dev file"))
    order = languages(settings, dev)
    rng = reference_rng(settings.seed)
    chosen = draw_questions(settings, dev, order, rng)
    # The reference draws the shots from the same generator, after the questions; tulu-lite from a fresh one.
    demo_rng = rng if settings.protocol == "tulu-v1" else random.Random(settings.seed)
    return chosen, draw_demonstrations(settings, order, demo_rng)


def load(settings: EvalSettings) -> list[dict]:
    return draw(settings)[0]


def truncate_passage(text: str, tokenizer, limit: int, settings: EvalSettings) -> str:
    """A passage cut to `limit` tokens.

    tulu-v1 repeats the reference: `tokenizer.encode(text)` counts BOS, and `decode` of the first `limit` ids keeps
    it, so a cut passage starts with "<s>" glued to the text (as the 2023 sentencepiece tokenizer decoded it).
    """
    if settings.protocol == "tulu-lite":
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return text if len(ids) <= limit else tokenizer.decode(ids[:limit])
    ids = tokenizer(text).input_ids
    if len(ids) <= limit:
        return text
    head = ids[:limit]
    if head and head[0] == tokenizer.bos_token_id:
        return tokenizer.bos_token + tokenizer.decode(head[1:])
    return tokenizer.decode(head)


def user_text(example: dict, demos: list[dict], tokenizer, settings: EvalSettings) -> str:
    instruction, passage, question, answer = TEMPLATES[example["lang"]]
    limit = settings.tydiqa_max_context_tokens
    shown = [f"{passage} {truncate_passage(d['context'], tokenizer, limit, settings)}\n{question} {d['question']}\n"
             f"{answer} {d['answers'][0]}" for d in demos]
    context = truncate_passage(example["context"], tokenizer, limit, settings)
    text = instruction + "\n\n"
    if shown:
        text += "\n\n".join(shown) + "\n\n"
    return text + f"{passage} {context}\n{question} {example['question']}\n"


def stop_sequences(settings: EvalSettings) -> list[str]:
    if settings.protocol == "tulu-v1" or task_chat_format(settings, NAME) == "none":
        return ["\n"]
    return []


def predict(settings: EvalSettings, lm) -> list[dict]:
    examples, demos = draw(settings)
    chat_format = task_chat_format(settings, NAME)
    prompts = [build_prompt(user_text(ex, demos[ex["lang"]], lm.tokenizer, settings), TEMPLATES[ex["lang"]][3],
                            chat_format, lm.tokenizer, protocol=settings.protocol) for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS,
                          stop=stop_sequences(settings), description=NAME)
    return [{key: ex[key] for key in ("id", "lang", "question", "answers")} | {"prompt": p.text, "output": out}
            for ex, p, out in zip(examples, prompts, outputs)]


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    grouped: dict[str, list[dict]] = defaultdict(list)  # languages in the order they were run
    for record in predictions:
        text = truncate_at_stop(record["output"], stop_sequences(settings))
        record.update(truncated=text, extracted=text.strip())
        record.update(f1=best_over_golds(squad_f1, record["extracted"], record["answers"]),
                      exact_match=best_over_golds(squad_exact, record["extracted"], record["answers"]))
        grouped[record["lang"]].append(record)
    reference: dict = {lang: open_instruct_squad([r["extracted"] for r in rows], [r["answers"] for r in rows])
                       for lang, rows in grouped.items()}
    reference["average"] = {metric: float(np.mean([scores[metric] for scores in reference.values()]))
                            if grouped else 0.0 for metric in ("f1", "exact_match")}
    languages_ = {lang: {"f1": reference[lang]["f1"], "exact_match": reference[lang]["exact_match"],
                         "n": len(grouped[lang])} for lang in sorted(grouped)}
    return {"protocol": settings.protocol, "average": dict(reference["average"]), "n": len(predictions),
            "languages": languages_, "open_instruct": reference}


def headline(metrics: dict) -> float | None:
    return metrics["average"]["f1"] if "average" in metrics else None


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def extra_files(predictions: list[dict]) -> dict:
    return {}


def resolved(settings: EvalSettings) -> dict:
    dev = read_squad(required_file(task_dir(settings, NAME) / DEV_FILE, "TyDi QA GoldP dev file"))
    subset = subset_size(settings, PAPER_SUBSET)
    return {"protocol": settings.protocol, "data": str(task_dir(settings, NAME) / DEV_FILE),
            "chat_format": task_chat_format(settings, NAME), "shots": settings.tydiqa_shots,
            "shots_from": TRAIN_FILE, "max_context_tokens": settings.tydiqa_max_context_tokens,
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "stop": stop_sequences(settings),
            "decoding": "greedy", "subset_per_language": subset,
            "subset_draw": ("random.seed({}) + random.sample per language, one generator, languages in this order "
                            "(a set's order with PYTHONHASHSEED=0)".format(settings.seed)
                            if settings.protocol == "tulu-v1" else f"random.Random({settings.seed}).sample"),
            "language_order": languages(settings, dev)}
