"""tulu-lite: TÜLU-style instruction tuning on one GPU or a laptop CPU.

    from tulu_lite import encode
    encode(messages, tokenizer, template="tulu", max_seq_length=2048)  # {"input_ids": [...], "labels": [...]}
"""

from tulu_lite.data.encode import encode, encode_dataset

__all__ = ["encode", "encode_dataset"]
__version__ = "0.1.0"
