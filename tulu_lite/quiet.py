"""Silence the libraries' own progress bars, once, for the command line and the notebooks.

tulu-lite shows its own progress (the training bar and step lines, the merge stages, the eval bars). Two library
bars would come on top of them and say nothing a user can act on (issue 18, item 11):

- transformers' "Loading weights" bar (transformers 5, core_model_loading.py), one per model load: merge and
  eval load several models, training with held-out data reloads nothing but still shows one;
- datasets' "Generating train split" bar, each time a conversation file is read into Arrow on a cache miss
  (and its "Map" bars).

Both libraries read a switch when first imported (`HF_HUB_DISABLE_PROGRESS_BARS`, which transformers follows, and
`HF_DATASETS_DISABLE_PROGRESS_BARS`), so `quiet_libraries` sets them before anything imports either library,
keeping `tulu-lite --help` free of those imports, and flips the switches of a library already imported (a
notebook kernel). A variable the user set wins (`HF_HUB_DISABLE_PROGRESS_BARS=0` brings the bars back). The hub
switch also hides hub download bars; `train` and `merge` already turned it off before this module existed.
"""

from __future__ import annotations

import os
import sys

SWITCHES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def quiet_libraries() -> None:
    """Turn off transformers' and datasets' progress bars unless the user's environment says otherwise."""
    for name, value in SWITCHES.items():
        os.environ.setdefault(name, value)
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        if "transformers" in sys.modules:  # it copied the hub's switch when imported
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        elif "huggingface_hub" in sys.modules:  # transformers will copy the hub's switch, already read from os.environ
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
    if os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1" and "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
