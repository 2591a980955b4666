"""GSM8K without chain of thought: the same 200 questions, stop rule and scorers as `gsm`, but the eight
demonstrations give only their final answers (open-instruct's `--no_cot`, the `gsm_direct` run of
`submit_eval_jobs.py`; the paper's "direct" GSM numbers). Reads DATA_DIR/gsm/.
"""

from __future__ import annotations

from tulu_lite.eval import gsm
from tulu_lite.eval.settings import EvalSettings

NAME = "gsm_direct"
PREDICTION_KEYS, SCORING_KEYS = gsm.PREDICTION_KEYS, gsm.SCORING_KEYS
HEADLINE_LABEL = "GSM EM (8-shot direct)"
load, score, headline, extra_files = gsm.load, gsm.score, gsm.headline, gsm.extra_files


def headline_label(metrics: dict) -> str:
    return HEADLINE_LABEL


def predict(settings: EvalSettings, lm) -> list[dict]:
    return gsm.predict(settings, lm, direct=True)


def resolved(settings: EvalSettings) -> dict:
    return gsm.resolved(settings, direct=True)
