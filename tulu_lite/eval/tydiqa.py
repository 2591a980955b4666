"""TyDi QA GoldP: extractive QA in nine languages given the gold passage, 1-shot, SQuAD F1 and EM per language.

Each language has its own instruction and field names (below). The prompt is the instruction, then one example
from the same language's train split (fixed seed), then "Passage: ..\\nQuestion: ..\\nAnswer:"; passages are cut to
512 tokens. Without a chat format generation stops at the first newline; 50 new tokens at most. The language is the
prefix of each question id ("english-...").
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from tulu_lite.errors import TuluError
from tulu_lite.eval.data_files import read_json, required_file, task_dir
from tulu_lite.eval.prompts import build_prompt
from tulu_lite.eval.scoring import best_over_golds, squad_exact, squad_f1
from tulu_lite.eval.settings import EvalSettings

NAME = "tydiqa"
MAX_NEW_TOKENS = 50
DEV_FILE = "tydiqa-goldp-v1.1-dev.json"
TRAIN_FILE = "tydiqa-goldp-v1.1-train.json"
PREDICTION_KEYS = ("lang", "answers", "output")
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
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TuluError(f"{path}: expected SQuAD layout ({{'data': [{{'paragraphs': [...]}}]}})")
    examples = []
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                if not {"id", "question", "answers"} <= qa.keys():
                    raise TuluError(f"{path}: question {qa.get('id', '?')!r} needs 'id', 'question' and 'answers'")
                lang = qa["id"].split("-")[0]
                if lang not in TEMPLATES:
                    raise TuluError(f"{path}: question {qa['id']!r}: unknown language {lang!r} "
                                    f"(expected an id starting with one of {', '.join(TEMPLATES)})")
                examples.append({"id": qa["id"], "lang": lang, "context": paragraph["context"],
                                 "question": qa["question"], "answers": [a["text"] for a in qa["answers"]]})
    return examples


def load(settings: EvalSettings) -> list[dict]:
    """Dev questions, at most `limit` per language (a seeded sample, as in the original evaluation)."""
    examples = read_squad(required_file(task_dir(settings, NAME) / DEV_FILE, "TyDi QA GoldP dev file"))
    if settings.tydiqa_shots:
        required_file(task_dir(settings, NAME) / TRAIN_FILE, "TyDi QA GoldP train file, source of the few-shot example")
    if settings.limit is None:
        return examples
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for example in examples:
        by_lang[example["lang"]].append(example)
    rng = random.Random(settings.seed)
    return [ex for lang in sorted(by_lang) for ex in rng.sample(by_lang[lang], min(settings.limit, len(by_lang[lang])))]


def demonstrations(settings: EvalSettings, languages: set[str]) -> dict[str, list[dict]]:
    """`tydiqa_shots` train examples per language, drawn with the run's seed."""
    if settings.tydiqa_shots == 0:
        return {lang: [] for lang in languages}
    train = read_squad(task_dir(settings, NAME) / TRAIN_FILE)
    rng = random.Random(settings.seed)
    shots = {}
    for lang in sorted(languages):
        pool = [ex for ex in train if ex["lang"] == lang]
        if len(pool) < settings.tydiqa_shots:
            raise TuluError(f"{TRAIN_FILE}: {len(pool)} {lang} examples, {settings.tydiqa_shots} needed for the shots")
        shots[lang] = rng.sample(pool, settings.tydiqa_shots)
    return shots


def truncate_passage(text: str, tokenizer, limit: int) -> str:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return text if len(ids) <= limit else tokenizer.decode(ids[:limit])


def user_text(example: dict, demos: list[dict], tokenizer, limit: int) -> str:
    instruction, passage, question, answer = TEMPLATES[example["lang"]]
    shown = [f"{passage} {truncate_passage(d['context'], tokenizer, limit)}\n{question} {d['question']}\n"
             f"{answer} {d['answers'][0]}" for d in demos]
    context = truncate_passage(example["context"], tokenizer, limit)
    return instruction + "\n\n" + "".join(s + "\n\n" for s in shown) + \
        f"{passage} {context}\n{question} {example['question']}\n"


def predict(settings: EvalSettings, lm) -> list[dict]:
    examples = load(settings)
    demos = demonstrations(settings, {ex["lang"] for ex in examples})
    prompts = [build_prompt(user_text(ex, demos[ex["lang"]], lm.tokenizer, settings.tydiqa_max_context_tokens),
                            TEMPLATES[ex["lang"]][3], settings.chat_format, lm.tokenizer) for ex in examples]
    outputs = lm.generate(prompts, max_new_tokens=settings.max_new_tokens or MAX_NEW_TOKENS,
                          stop=stop_sequences(settings), description="tydiqa")
    return [{key: ex[key] for key in ("id", "lang", "question", "answers")} | {"output": out.strip()}
            for ex, out in zip(examples, outputs)]


def stop_sequences(settings: EvalSettings) -> list[str]:
    return ["\n"] if settings.chat_format == "none" else []


def score(predictions: list[dict], settings: EvalSettings) -> dict:
    by_lang: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in predictions:
        answer = record["output"].strip()
        by_lang[record["lang"]].append((best_over_golds(squad_f1, answer, record["answers"]),
                                        best_over_golds(squad_exact, answer, record["answers"])))
    languages = {lang: {"f1": 100.0 * sum(f for f, _ in pairs) / len(pairs),
                        "exact_match": 100.0 * sum(e for _, e in pairs) / len(pairs), "n": len(pairs)}
                 for lang, pairs in sorted(by_lang.items())}
    average = {metric: sum(v[metric] for v in languages.values()) / len(languages) if languages else 0.0
               for metric in ("f1", "exact_match")}
    return {"average": average, "n": len(predictions), "languages": languages}


def headline(metrics: dict) -> float | None:
    return metrics["average"]["f1"] if "average" in metrics else None


def resolved(settings: EvalSettings) -> dict:
    return {"data": str(task_dir(settings, NAME) / DEV_FILE), "shots": settings.tydiqa_shots,
            "shots_from": TRAIN_FILE, "max_context_tokens": settings.tydiqa_max_context_tokens,
            "max_new_tokens": settings.max_new_tokens or MAX_NEW_TOKENS, "stop": stop_sequences(settings),
            "decoding": "greedy", "limit_per_language": settings.limit}
