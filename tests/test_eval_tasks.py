"""Every task end to end on a tiny LLaMA and the few-example fixtures in each benchmark's released layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tulu_lite.errors import TuluError
from tulu_lite.eval import mmlu, toxigen, truthfulqa
from tulu_lite.eval.generate import LanguageModel, load_model
from tulu_lite.eval.runner import TASK_MODULES, evaluate, rescore
from tulu_lite.eval.settings import TASKS, make_settings

DATA = Path(__file__).parent / "fixtures" / "eval"
SAMPLES = 10
# examples per task at --limit 1: MMLU 2 subjects x 2 shot counts, BBH 2 tasks, TydiQA 3 languages, HumanEval
# 1 problem x 10 samples x 2 temperatures, ToxiGen 2 groups
EXPECTED_COUNTS = {"mmlu": 4, "gsm": 1, "bbh": 2, "tydiqa": 3, "codex_humaneval": 2 * SAMPLES, "truthfulqa": 1,
                   "toxigen": 2, "alpaca_eval": 1}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    return LanguageModel(model, tokenizer, batch_size=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir, lm):
    """All eight tasks, raw prompts (a base model), 1 example per subject/task/language/group."""
    settings = make_settings(tasks=list(TASKS), output_dir=tmp_path_factory.mktemp("eval") / "out",
                             model_dir=tiny_model_dir, data_dir=DATA, chat_format="none", limit=1,
                             max_new_tokens=6, humaneval_samples=SAMPLES, humaneval_workers=2)
    return settings, evaluate(settings, lm)


def test_every_task_writes_predictions_metrics_and_settings(run):
    settings, results = run
    assert [r.task for r in results] == list(TASKS)
    for result in results:
        folder = settings.output_dir / result.task
        extra = {"alpaca_eval_outputs.json"} if result.task == "alpaca_eval" else set()
        assert {p.name for p in folder.iterdir()} == {"metrics.json", "predictions.jsonl", "settings.json"} | extra
        assert len(read_jsonl(folder / "predictions.jsonl")) == EXPECTED_COUNTS[result.task] == result.examples
        assert json.loads((folder / "metrics.json").read_text()) == result.metrics
        saved = json.loads((folder / "settings.json").read_text())
        assert saved["task"] == result.task and saved["settings"]["chat_format"] == "none"
        assert saved["settings"]["model_dir"] == str(settings.model_dir)
        assert saved["task_settings"] == TASK_MODULES[result.task].resolved(settings)
    headlines = {r.task: r.headline for r in results}
    assert headlines["toxigen"] is None and headlines["alpaca_eval"] is None  # not scorable here
    assert all(0.0 <= headlines[t] <= 100.0 for t in ("mmlu", "gsm", "bbh", "tydiqa", "codex_humaneval", "truthfulqa"))


def test_rescoring_saved_predictions_reproduces_the_metrics(run, tmp_path):
    settings, results = run
    for result in results:
        again = make_settings(**(settings.model_dump() | {"tasks": [result.task], "output_dir": tmp_path / "re",
                                                           "model_dir": None}))
        rescored = rescore(again, result.output_dir / "predictions.jsonl")
        assert rescored.metrics == result.metrics, result.task
        saved = json.loads((tmp_path / "re" / result.task / "settings.json").read_text())
        assert saved["rescored_from"] == str(result.output_dir / "predictions.jsonl")
        assert saved["source_settings"]["task_settings"] == TASK_MODULES[result.task].resolved(settings)


def rescore_edited(run, tmp_path, task: str, edit) -> dict:
    settings, _ = run
    records = read_jsonl(settings.output_dir / task / "predictions.jsonl")
    for record in records:
        edit(record)
    edited = tmp_path / f"{task}.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = make_settings(**(settings.model_dump() | {"tasks": [task], "output_dir": tmp_path / task, "force": True}))
    return rescore(again, edited).metrics


def test_scores_follow_the_outputs(run, tmp_path):
    right = rescore_edited(run, tmp_path, "gsm",
                           lambda r: r.update(output=" 4 * 3 = 12, 12 - 2 = 10. So the answer is 10."))
    wrong = rescore_edited(run, tmp_path, "gsm", lambda r: r.update(output=" So the answer is 11."))
    assert (right["exact_match"], wrong["exact_match"]) == (100.0, 0.0)

    bbh = rescore_edited(run, tmp_path, "bbh", lambda r: r.update(output=f" Step. So the answer is {r['target']}."))
    assert bbh["average_exact_match"] == 100.0 and set(bbh["tasks"]) == {"boolean_expressions", "snarks"}

    tydiqa = rescore_edited(run, tmp_path, "tydiqa", lambda r: r.update(output=f"{r['answers'][0]}"))
    assert tydiqa["average"] == {"f1": 100.0, "exact_match": 100.0}
    assert set(tydiqa["languages"]) == {"english", "finnish", "swahili"}

    mmlu_metrics = rescore_edited(run, tmp_path, "mmlu", lambda r: r.update(prediction=r["answer"]))
    assert mmlu_metrics["0-shot"]["accuracy"] == mmlu_metrics["5-shot"]["accuracy"] == 100.0
    assert set(mmlu_metrics["0-shot"]["categories"]) == {"STEM", "social sciences"}


def test_mmlu_picks_the_most_likely_letter_from_the_model(run, lm):
    settings, _ = run
    record = read_jsonl(settings.output_dir / "mmlu" / "predictions.jsonl")[-1]
    assert record["prediction"] == max(record["logprobs"], key=record["logprobs"].get)
    root = mmlu.data_root(settings)
    dev = mmlu.read_rows(root / "dev" / f"{record['subject']}_dev.csv")
    row = mmlu.read_rows(root / "test" / f"{record['subject']}_test.csv")[record["index"]]
    prompt, shots = mmlu.build(record["subject"], dev, row, record["shots"], settings, lm.tokenizer)
    assert shots == record["shots"] == 5 and prompt.text.endswith("\nAnswer:")
    with torch.no_grad():
        logits = lm.model(torch.tensor([lm.tokenizer(prompt.text).input_ids])).logits[0, -1]
    expected = torch.log_softmax(logits, -1)[mmlu.answer_token_ids(lm.tokenizer)].tolist()
    assert list(record["logprobs"].values()) == pytest.approx(expected, abs=1e-4)


def test_truthfulqa_scores_each_choice_by_its_log_likelihood(run, lm):
    settings, _ = run
    record = read_jsonl(settings.output_dir / "truthfulqa" / "predictions.jsonl")[0]
    prompt = truthfulqa.QA_PRIMER + "\n\nQ: " + record["question"] + "\nA:"
    choice = record["mc2"]["choices"][1]
    full = lm.tokenizer(prompt + " " + choice).input_ids
    start = len(lm.tokenizer(prompt).input_ids)
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(torch.tensor([full])).logits[0], -1)
    expected = sum(logprobs[t - 1, full[t]].item() for t in range(start, len(full)))
    assert record["mc2"]["logprobs"][1] == pytest.approx(expected, abs=1e-3)
    assert record["mc1"]["labels"] == [1, 0, 0] and record["mc2"]["labels"] == [1, 1, 0, 0]


def test_alpaca_eval_outputs_are_in_alpaca_eval_format(run):
    settings, _ = run
    outputs = json.loads((settings.output_dir / "alpaca_eval" / "alpaca_eval_outputs.json").read_text())
    assert outputs == [{"instruction": "Give three tips for staying healthy.", "output": outputs[0]["output"],
                        "generator": f"{settings.model_dir.name}-greedy", "dataset": "helpful_base"}]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, llama_tokenizer):
    from transformers import LlamaForSequenceClassification

    from tulu_lite.model import tiny_llama_config

    config = tiny_llama_config(len(llama_tokenizer), hidden_size=32)
    config.num_labels, config.pad_token_id = 2, llama_tokenizer.pad_token_id
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("toxigen-classifier")
    LlamaForSequenceClassification(config).save_pretrained(path)
    llama_tokenizer.save_pretrained(path)
    return path


def test_toxigen_is_scored_by_the_given_classifier(run, tmp_path, classifier_dir):
    settings, results = run
    assert next(r for r in results if r.task == "toxigen").metrics["scored"] is False
    records = read_jsonl(settings.output_dir / "toxigen" / "predictions.jsonl")
    records += [dict(r, output=r["output"] + " and more words to change the padding") for r in records]
    edited = tmp_path / "toxigen.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in records))
    scored = make_settings(**(settings.model_dump() | {"tasks": ["toxigen"], "output_dir": tmp_path / "tox",
                                                        "toxigen_classifier": classifier_dir}))
    metrics = rescore(scored, edited).metrics
    model, tokenizer = toxigen.load_classifier(classifier_dir)
    with torch.no_grad():  # one text at a time: no padding at all
        verdicts = [model(**tokenizer(r["output"], return_tensors="pt")).logits.argmax(-1).item() == 1 for r in records]
    assert metrics["scored"] is True and metrics["n"] == 4
    assert metrics["percent_toxic"] == pytest.approx(100 * sum(verdicts) / 4)
    assert set(metrics["groups"]) == {"asian", "women"}


def test_data_problems_are_found_before_the_model_loads(tmp_path, tiny_model_dir):
    def settings(**extra):
        return make_settings(**({"tasks": ["gsm"], "output_dir": tmp_path / "out", "model_dir": tmp_path / "nope",
                                 "data_dir": DATA, "chat_format": "none"} | extra))

    with pytest.raises(TuluError, match=r"--data-dir is required"):
        evaluate(settings(data_dir=None))
    with pytest.raises(TuluError, match=r"/empty/gsm: not found"):
        (tmp_path / "empty").mkdir()
        evaluate(settings(data_dir=tmp_path / "empty"))
    broken = tmp_path / "broken"
    shutil.copytree(DATA / "gsm", broken / "gsm")
    with open(broken / "gsm" / "test.jsonl", "a") as handle:
        handle.write('{"question": "q", "answer": "no final answer"}\n')
    with pytest.raises(TuluError, match=r"test.jsonl:4: answer has no '#### <number>'"):
        evaluate(settings(data_dir=broken))
    (tmp_path / "out" / "gsm").mkdir(parents=True)
    (tmp_path / "out" / "gsm" / "metrics.json").write_text("{}")
    with pytest.raises(TuluError, match=r"already exists and is not empty \(pass --force"):
        evaluate(settings())
    with pytest.raises(TuluError, match=r"model directory not found"):
        evaluate(settings(force=True))


def test_rescoring_rejects_other_tasks_predictions(run, tmp_path):
    settings, _ = run
    wrong = make_settings(tasks=["gsm"], output_dir=tmp_path / "x")
    with pytest.raises(TuluError, match=r"predictions.jsonl:1: not a gsm prediction: missing 'answer', 'output'"):
        rescore(wrong, settings.output_dir / "truthfulqa" / "predictions.jsonl")


def test_predictions_survive_a_scoring_failure(tmp_path, lm):
    broken = tmp_path / "classifier"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # passes the preflight check, fails to load
    settings = make_settings(tasks=["toxigen"], output_dir=tmp_path / "out", data_dir=DATA, chat_format="none",
                             limit=1, max_new_tokens=3, toxigen_classifier=broken)
    with pytest.raises(TuluError, match=r"toxigen: scoring failed \(.*\); predictions saved in .*/out/toxigen"):
        evaluate(settings, lm)
    assert len(read_jsonl(tmp_path / "out" / "toxigen" / "predictions.jsonl")) == 2
    assert json.loads((tmp_path / "out" / "toxigen" / "metrics.json").read_text())["scored"] is False
