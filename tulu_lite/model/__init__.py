"""Models: how a recipe's base is loaded and wrapped with LoRA, how model files are checked, and the tiny LLaMA.

- `tulu_lite.model.loading`: dtype and attention for the device, the frozen base (4-bit with QLoRA), the
  recipe's tokenizer, LoRA adapters, whether this is an FSDP launch.
- `tulu_lite.model.files`: checks of a model directory and its safetensors files before transformers reads them,
  and the cheap base fingerprint merge compares against the one recorded at training.
- `tulu_lite.model.tiny`: the embedded tiny LLaMA (`model.name_or_path: tiny-llama`), built from its seed into a
  cache directory.

Import from the module that holds a name; this package re-exports nothing (importing it loads no torch).
"""
