"""tulu-lite: TÜLU-style instruction tuning on one GPU or a laptop CPU.

    from tulu_lite import encode
    encode(messages, tokenizer, template="tulu", max_seq_length=2048)  # {"input_ids": [...], "labels": [...]}
"""

from __future__ import annotations

import logging

# bitsandbytes 0.50 warns at import, on CPUs with AVX512-BF16, that the optional `kernels` package (a faster CPU
# 4-bit matmul fetched from a hub) is missing. tulu-lite never fetches from a hub and the built-in kernel is
# correct, so that one logger is kept quiet; set before anything imports bitsandbytes.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# When the `kernels` package is installed, that same import asks it for the hub kernel, and offline it first logs
# "Skipping publisher trust check for 'kernels-community/...'" (kernels/_internals/hf_hub.py) before failing over
# to the built-in kernel: noise about a download tulu-lite never makes.
logging.getLogger("kernels").setLevel(logging.ERROR)

__all__ = ["encode", "encode_dataset"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `tulu-lite --help` does not pay for importing transformers.
    if name in __all__:
        from tulu_lite.data import encode as module

        return getattr(module, name)
    raise AttributeError(f"module 'tulu_lite' has no attribute {name!r}")
