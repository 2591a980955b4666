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

__all__ = ["encode", "encode_dataset"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `tulu-lite --help` does not pay for importing transformers.
    if name in __all__:
        from tulu_lite.data import encode as module

        return getattr(module, name)
    raise AttributeError(f"module 'tulu_lite' has no attribute {name!r}")
