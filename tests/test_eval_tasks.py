"""Every task end to end on a tiny LLaMA and the few-example fixtures in each benchmark's released layout, under
both protocols; re-scoring saved predictions reproduces metrics.json exactly."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from tulu_lite.errors import TuluError
from tulu_lite.eval import humaneval, mmlu, toxigen, truthfulqa
from tulu_lite.eval.generate import LanguageModel, load_model
from tulu_lite.eval.runner import TASK_MODULES, evaluate, rescore
from tulu_lite.eval.scoring import truncate_at_stop
from tulu_lite.eval.settings import TASKS, make_settings

DATA = Path(__file__).parent / "fixtures" / "eval"
SAMPLES = 10
# examples per task at --limit 1: MMLU 2 subjects x 2 shot counts, BBH 2 tasks, TydiQA 3 languages, HumanEval
# 1 problem x 10 samples x 2 temperatures, ToxiGen 2 groups
EXPECTED_COUNTS = {"mmlu": 4, "gsm": 1, "bbh": 2, "tydiqa": 3, "codex_humaneval": 2 * SAMPLES, "truthfulqa": 1,
                   "toxigen": 2, "alpaca_eval": 1, "gsm_direct": 1, "bbh_direct": 2}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    return LanguageModel(model, tokenizer, batch_size=8)


def run_all(tmp_path_factory, tiny_model_dir, lm, **extra):
    settings = make_settings(**({"tasks": list(TASKS), "output_dir": tmp_path_factory.mktemp("eval") / "out",
                                 "model_dir": tiny_model_dir, "data_dir": DATA, "limit": 1, "max_new_tokens": 6,
                                 "humaneval_samples": SAMPLES, "humaneval_workers": 2} | extra))
    return settings, evaluate(settings, lm)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir, lm):
    """All eight tasks, tulu-lite's protocol, raw prompts (a base model), 1 example per subject/task/language/group."""
    return run_all(tmp_path_factory, tiny_model_dir, lm, protocol="tulu-lite", chat_format="none")


@pytest.fixture(scope="module")
def run_v1(tmp_path_factory, tiny_model_dir, lm):
    """All eight tasks as the paper ran them for a chat model (tulu format where the paper used it)."""
    return run_all(tmp_path_factory, tiny_model_dir, lm, protocol="tulu-v1", chat_format="tulu")


@pytest.mark.parametrize("which", ["run", "run_v1"])
def test_every_task_writes_predictions_metrics_and_settings(which, request):
    settings, results = request.getfixturevalue(which)
    assert [r.task for r in results] == list(TASKS)
    for result in results:
        folder = settings.output_dir / result.task
        extra = {"alpaca_eval_outputs.json"} if result.task == "alpaca_eval" else set()
        assert {p.name for p in folder.iterdir()} == {"metrics.json", "predictions.jsonl", "settings.json"} | extra
        records = read_jsonl(folder / "predictions.jsonl")
        assert len(records) == EXPECTED_COUNTS[result.task] == result.examples
        assert all(r["protocol"] == settings.protocol and isinstance(r["prompt"], str) for r in records)
        assert json.loads((folder / "metrics.json").read_text()) == result.metrics
        assert result.metrics["protocol"] == settings.protocol and "open_instruct" in result.metrics
        saved = json.loads((folder / "settings.json").read_text())
        assert saved["task"] == result.task and saved["settings"]["protocol"] == settings.protocol
        assert saved["settings"]["model_dir"] == str(settings.model_dir)
        assert saved["task_settings"] == json.loads(json.dumps(TASK_MODULES[result.task].resolved(settings)))
    assert not list(settings.output_dir.glob(".*"))  # saved generations are gone once their task is written
    headlines = {r.task: r.headline for r in results}
    assert headlines["toxigen"] is None and headlines["alpaca_eval"] is None  # not scorable here
    assert all(0.0 <= headlines[t] <= 100.0 for t in ("mmlu", "gsm", "bbh", "tydiqa", "codex_humaneval", "truthfulqa"))


def test_tulu_v1_uses_the_papers_chat_format_per_task(run_v1):
    settings, _ = run_v1
    formats = {task: json.loads((settings.output_dir / task / "settings.json").read_text())["task_settings"]
               ["chat_format"] for task in TASKS}
    assert formats == {"mmlu": "tulu", "gsm": "tulu", "bbh": "tulu", "tydiqa": "tulu", "codex_humaneval": "none",
                       "truthfulqa": "none", "toxigen": "tulu", "alpaca_eval": "tulu", "gsm_direct": "tulu",
                       "bbh_direct": "tulu"}
    gsm = read_jsonl(settings.output_dir / "gsm" / "predictions.jsonl")[0]
    assert gsm["prompt"].startswith("<|user|>\nAnswer the following questions.\n\n") and \
        gsm["prompt"].endswith("\n<|assistant|>\nAnswer:")
    he = read_jsonl(settings.output_dir / "codex_humaneval" / "predictions.jsonl")[0]
    problems = list(humaneval.load_problems(settings).values())
    assert he["task_id"] == random.Random(42).sample(problems, 1)[0]["task_id"]  # --limit 1: a seeded draw
    assert he["prompt"] == humaneval.load_problems(settings)[he["task_id"]]["prompt"]  # raw, as the paper ran it
    tq = read_jsonl(settings.output_dir / "truthfulqa" / "predictions.jsonl")[0]
    assert tq["prompt"] == truthfulqa.QA_PRIMER + "\n\nQ: " + tq["question"]


@pytest.mark.parametrize("which", ["run", "run_v1"])
def test_rescoring_saved_predictions_reproduces_the_metrics(which, request, tmp_path):
    settings, results = request.getfixturevalue(which)
    for result in results:
        again = make_settings(**(settings.model_dump() | {"tasks": [result.task], "output_dir": tmp_path / "re",
                                                           "model_dir": None}))
        rescored = rescore(again, result.output_dir / "predictions.jsonl")
        assert rescored.metrics == result.metrics, result.task
        assert read_jsonl(rescored.output_dir / "predictions.jsonl") == \
            read_jsonl(result.output_dir / "predictions.jsonl"), result.task
        saved = json.loads((tmp_path / "re" / result.task / "settings.json").read_text())
        assert saved["rescored_from"] == str(result.output_dir / "predictions.jsonl")
        assert saved["source_settings"]["task_settings"] == json.loads(json.dumps(
            TASK_MODULES[result.task].resolved(settings)))


def rescore_edited(fixture, tmp_path, task: str, edit) -> dict:
    settings, _ = fixture
    records = read_jsonl(settings.output_dir / task / "predictions.jsonl")
    for record in records:
        edit(record)
    edited = tmp_path / f"{task}-{settings.protocol}.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = make_settings(**(settings.model_dump() | {"tasks": [task], "output_dir": tmp_path / task, "force": True}))
    return rescore(again, edited).metrics


def test_scores_follow_the_outputs(run, tmp_path):
    right = rescore_edited(run, tmp_path, "gsm",
                           lambda r: r.update(output=" 4 * 3 = 12, 12 - 2 = 10. So the answer is 10.0."))
    wrong = rescore_edited(run, tmp_path, "gsm", lambda r: r.update(output=" So the answer is 11."))
    assert (right["exact_match"], wrong["exact_match"]) == (100.0, 0.0)  # tulu-lite: 10.0 is 10
    assert right["open_instruct"] == {"exact_match": 0.0}  # open-instruct: "100" is not "10"

    bbh = rescore_edited(run, tmp_path, "bbh", lambda r: r.update(output=f" Step. So the answer is {r['target']}."))
    assert bbh["average_exact_match"] == 100.0 and set(bbh["tasks"]) == {"boolean_expressions", "snarks"}

    tydiqa = rescore_edited(run, tmp_path, "tydiqa", lambda r: r.update(output=f"{r['answers'][0]}"))
    assert tydiqa["average"] == {"f1": 100.0, "exact_match": 100.0}
    assert set(tydiqa["languages"]) == {"english", "finnish", "swahili"}

    def make_right(record):
        record["logprobs"] = {letter: (0.0 if letter == record["answer"] else -5.0) for letter in mmlu.LETTERS}

    mmlu_metrics = rescore_edited(run, tmp_path, "mmlu", make_right)
    assert mmlu_metrics["0-shot"]["accuracy"] == mmlu_metrics["5-shot"]["accuracy"] == 100.0
    assert set(mmlu_metrics["0-shot"]["categories"]) == {"STEM", "social sciences"}
    assert mmlu_metrics["open_instruct"]["0-shot"] == {
        "average_acc": 1.0, "subcat_acc": {"math": 1.0, "geography": 1.0}, "cat_acc": {"STEM": 1.0, "social sciences": 1.0}}


def test_tulu_v1_scores_as_the_reference_does(run_v1, tmp_path):
    gsm = rescore_edited(run_v1, tmp_path, "gsm", lambda r: r.update(
        output=" 4 * 3 = 12, 12 - 2 = 10. So the answer is 10.0.\nQuestion: next? Answer: " + r["answer"]))
    assert gsm["exact_match"] == 0.0 and gsm["open_instruct"] == {"exact_match": 0.0}  # "10.0", first line only
    assert gsm["corrected"]["numeric_match"] == 0.0  # the line has 10.0, the answer is 1545
    gsm = rescore_edited(run_v1, tmp_path, "gsm", lambda r: r.update(output=f" So the answer is {r['answer']}.\n7"))
    assert gsm["exact_match"] == 100.0 and gsm["open_instruct"] == {"exact_match": 1.0}

    tydiqa = rescore_edited(run_v1, tmp_path, "tydiqa", lambda r: r.update(
        output=f" {r['answers'][0]}\n{r['answers'][0]} is the answer to this question."))
    assert tydiqa["average"] == {"f1": 100.0, "exact_match": 100.0}  # stopped at the newline, chat or not
    assert list(tydiqa["open_instruct"]) == ["english", "swahili", "finnish", "average"]  # the run's language order

    bbh = rescore_edited(run_v1, tmp_path, "bbh", lambda r: r.update(output=f" So the answer is {r['target']}."))
    assert bbh["average_exact_match"] == 100.0
    assert bbh["open_instruct"] == {"boolean_expressions": 1.0, "snarks": 1.0, "average_exact_match": 1.0}


def test_mmlu_picks_the_most_likely_letter_from_the_model(run, lm):
    settings, _ = run
    record = read_jsonl(settings.output_dir / "mmlu" / "predictions.jsonl")[-1]
    assert record["extracted"] == max(record["logprobs"], key=record["logprobs"].get)
    root = mmlu.data_root(settings)
    dev = mmlu.read_rows(root / "dev" / f"{record['subject']}_dev.csv", settings)
    row = mmlu.read_rows(root / "test" / f"{record['subject']}_test.csv", settings)[record["index"]]
    prompt, shots = mmlu.build(record["subject"], dev, row, record["shots"], settings, lm.tokenizer)
    assert shots == record["shots"] == 5 and prompt.text.endswith("\nAnswer:") and prompt.text == record["prompt"]
    with torch.no_grad():
        logits = lm.model(torch.tensor([lm.tokenizer(prompt.text).input_ids])).logits[0, -1]
    expected = torch.log_softmax(logits, -1)[mmlu.answer_token_ids(lm.tokenizer, settings)].tolist()
    assert list(record["logprobs"].values()) == pytest.approx(expected, abs=1e-4)


def test_truthfulqa_scores_each_choice_by_its_log_likelihood(run, lm):
    settings, _ = run
    record = read_jsonl(settings.output_dir / "truthfulqa" / "predictions.jsonl")[0]
    prompt = truthfulqa.QA_PRIMER + "\n\nQ: " + record["question"] + "\nA:"
    assert record["prompt"] == prompt
    choice = record["mc2"]["choices"][1]
    full = lm.tokenizer(prompt + " " + choice).input_ids
    start = len(lm.tokenizer(prompt).input_ids)
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(torch.tensor([full])).logits[0], -1)
    expected = sum(logprobs[t - 1, full[t]].item() for t in range(start, len(full)))
    assert record["mc2"]["logprobs"][1] == pytest.approx(expected, abs=1e-3)
    assert record["mc1"]["labels"] == [1, 0, 0] and record["mc2"]["labels"] == [1, 1, 0, 0]


def test_truthfulqa_tulu_v1_scores_the_csv_answers_after_the_answer_prefix(run_v1, lm):
    settings, _ = run_v1
    record = read_jsonl(settings.output_dir / "truthfulqa" / "predictions.jsonl")[0]
    assert record["true_answers"][0].endswith(".") and record["best_answer"] in record["true_answers"]
    full = lm.tokenizer(record["mc_prompt"] + "\nA: " + record["false_answers"][0]).input_ids
    start = len(lm.tokenizer(record["mc_prompt"]).input_ids) + 3  # "\n", "A", ":" are not scored
    with torch.no_grad():
        logprobs = torch.log_softmax(lm.model(torch.tensor([full])).logits[0], -1)
    expected = sum(logprobs[t - 1, full[t]].item() for t in range(start, len(full)))
    assert record["scores_false"][0] == pytest.approx(expected, abs=1e-3)
    assert record["truncated"] == truthfulqa.trim_answer(record["output"])


def test_alpaca_eval_outputs_are_in_alpaca_eval_format(run, run_v1):
    for (settings, _), suffix in ((run, "-greedy"), (run_v1, "-greedy-long")):
        outputs = json.loads((settings.output_dir / "alpaca_eval" / "alpaca_eval_outputs.json").read_text())
        record = read_jsonl(settings.output_dir / "alpaca_eval" / "predictions.jsonl")[0]
        assert outputs == [{"instruction": "Give three tips for staying healthy.", "output": record["truncated"],
                            "generator": f"{settings.model_dir.name}{suffix}", "dataset": "helpful_base"}]
    v1 = read_jsonl(run_v1[0].output_dir / "alpaca_eval" / "predictions.jsonl")[0]
    assert v1["prompt"] == "<|user|>\nGive three tips for staying healthy.\n<|assistant|>\n"


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, llama_tokenizer):
    from transformers import LlamaForSequenceClassification

    from tulu_lite.model.tiny import tiny_llama_config

    config = tiny_llama_config(len(llama_tokenizer), hidden_size=32)
    config.num_labels, config.pad_token_id = 2, llama_tokenizer.pad_token_id
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("toxigen-classifier")
    LlamaForSequenceClassification(config).save_pretrained(path)
    llama_tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("which", ["run", "run_v1"])
def test_toxigen_is_scored_by_the_given_classifier(which, request, tmp_path, classifier_dir):
    settings, results = request.getfixturevalue(which)
    assert next(r for r in results if r.task == "toxigen").metrics["scored"] is False
    records = read_jsonl(settings.output_dir / "toxigen" / "predictions.jsonl")
    records += [dict(r, output=r["output"].replace("\n", " ") + " and more words to change the padding")
                for r in records]
    edited = tmp_path / "toxigen.jsonl"
    edited.write_text("".join(json.dumps(r) + "\n" for r in records))
    scored = make_settings(**(settings.model_dump() | {"tasks": ["toxigen"], "output_dir": tmp_path / "tox",
                                                        "toxigen_classifier": classifier_dir}))
    metrics = rescore(scored, edited).metrics
    written = read_jsonl(tmp_path / "tox" / "toxigen" / "predictions.jsonl")
    assert [r["truncated"] for r in written] == [truncate_at_stop(r["output"], ["\n"]) for r in records]
    model, tokenizer = toxigen.load_classifier(classifier_dir)
    with torch.no_grad():  # one text at a time: no padding at all
        verdicts = [model(**tokenizer(r["truncated"], return_tensors="pt")).logits.argmax(-1).item() == 1
                    for r in written]
    assert metrics["scored"] is True and metrics["n"] == 4
    assert metrics["percent_toxic"] == pytest.approx(100 * sum(verdicts) / 4)
    groups = {"asian", "women"} if settings.protocol == "tulu-lite" else {"asian_1k", "women_1k"}
    assert set(metrics["groups"]) == groups and set(metrics["open_instruct"]) == groups | {"overall"}
    assert metrics["open_instruct"]["overall"] == pytest.approx(sum(verdicts) / 4)


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
    with pytest.raises(TuluError, match=r"test.jsonl:\d+: answer has no '#### <number>'"):
        evaluate(settings(data_dir=broken))
    (tmp_path / "out" / "gsm").mkdir(parents=True)
    (tmp_path / "out" / "gsm" / "metrics.json").write_text("{}")
    with pytest.raises(TuluError, match=r"already exists and holds other results .* pass --force"):
        evaluate(settings())
    with pytest.raises(TuluError, match=r"model directory not found"):
        evaluate(settings(force=True))


def test_rescoring_rejects_other_tasks_predictions(run, tmp_path):
    settings, _ = run
    wrong = make_settings(tasks=["gsm"], output_dir=tmp_path / "x", protocol="tulu-lite")
    with pytest.raises(TuluError, match=r"predictions.jsonl:1: not a gsm prediction: missing 'answer', 'output'"):
        rescore(wrong, settings.output_dir / "truthfulqa" / "predictions.jsonl")


def test_rescoring_refuses_predictions_of_the_other_protocol(run, run_v1, tmp_path):
    for (settings, _), other in ((run, "tulu-v1"), (run_v1, "tulu-lite")):
        wrong = make_settings(tasks=["gsm"], output_dir=tmp_path / other, protocol=other)
        path = settings.output_dir / "gsm" / "predictions.jsonl"
        with pytest.raises(TuluError, match=rf"{path}:1: predictions of protocol {settings.protocol}, not {other}"):
            rescore(wrong, path)
        assert not (tmp_path / other).exists()


def test_generations_survive_a_scoring_failure_and_a_rerun_scores_them(tmp_path, lm, classifier_dir):
    broken = tmp_path / "classifier"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # passes the preflight check, fails to load
    settings = make_settings(tasks=["toxigen"], output_dir=tmp_path / "out", data_dir=DATA, chat_format="none",
                             limit=1, max_new_tokens=3, toxigen_classifier=broken)
    saved = tmp_path / "out" / ".toxigen.generations.jsonl"
    with pytest.raises(TuluError, match=rf"toxigen: scoring failed \(.*\); the generations are kept in {saved}"):
        evaluate(settings, lm)
    generations = read_jsonl(saved)
    assert len(generations) == 2 and not (tmp_path / "out" / "toxigen").exists()
    fixed = make_settings(**(settings.model_dump() | {"toxigen_classifier": classifier_dir}))
    result = evaluate(fixed, lm=None)[0]  # no model needed: the saved generations are scored
    assert result.metrics["scored"] is True
    assert [r["output"] for r in read_jsonl(tmp_path / "out" / "toxigen" / "predictions.jsonl")] == \
        [r["output"] for r in generations]
    assert not saved.exists()
