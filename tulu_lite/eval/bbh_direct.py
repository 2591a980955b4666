"""BIG-Bench Hard without chain of thought: the same 40 examples per task and scorers as `bbh`, but each of the
three demonstrations is its question and final answer only (open-instruct's `--no_cot`, the `bbh_direct` run of
`submit_eval_jobs.py`; the paper's "direct" BBH numbers). Reads DATA_DIR/bbh/.
"""

from __future__ import annotations

from tulu_lite.eval import bbh
from tulu_lite.eval.settings import EvalSettings

NAME = "bbh_direct"
PREDICTION_KEYS, SCORING_KEYS = bbh.PREDICTION_KEYS, bbh.SCORING_KEYS
HEADLINE_LABEL = "BBH EM (3-shot direct)"
score, headline, extra_files = bbh.score, bbh.headline, bbh.extra_files


def load(settings: EvalSettings) -> list[dict]:
    return bbh.load(settings, direct=True)


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def predict(settings: EvalSettings, lm) -> list[dict]:
    return bbh.predict(settings, lm, direct=True)


def resolved(settings: EvalSettings) -> dict:
    return bbh.resolved(settings, direct=True)
