"""The GPU path's decisions, checked on CPU: each is a function of facts (GPU count, compute capability, installed
kernels, dtype), given here instead of read from hardware. What needs a real GPU is benchmarks/gpu_check.py."""

from __future__ import annotations

import importlib.metadata
import re
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from cli_cases import BadInput, check_bad_input
from packaging.requirements import Requirement
from packaging.version import Version

from tulu_lite.errors import TuluError
from tulu_lite.model.loading import choose_attention, choose_dtype, native_bf16
from tulu_lite.recipe import ModelSettings, Recipe

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "tulu_lite" / "assets" / "demo" / "train.jsonl"
FA2, FA3 = "flash_attention_2", "flash_attention_3"


# ---- dtype (fix 7) --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cuda", "native", "expected"), [
    (True, True, torch.bfloat16),   # A100, H100, RTX 30xx/40xx
    (True, False, torch.float16),   # V100, T4: bf16 only emulated
    (False, False, torch.float32),  # CPU
])
def test_auto_dtype(cuda, native, expected):
    assert choose_dtype("auto", cuda=cuda, bf16_native=native) == expected


def test_explicit_dtypes_that_cannot_run_are_one_clear_error():
    with pytest.raises(TuluError, match="model.dtype: bfloat16 is emulated on this GPU"):
        choose_dtype("bfloat16", cuda=True, bf16_native=False)
    with pytest.raises(TuluError, match="quantization.compute_dtype: float16 training needs a CUDA GPU"):
        choose_dtype("float16", cuda=False, bf16_native=False, key="quantization.compute_dtype")
    assert choose_dtype("bfloat16", cuda=False, bf16_native=False) == torch.bfloat16  # slow on CPU, but it runs


def test_bf16_support_is_asked_without_emulation(monkeypatch):
    asked = {}

    def is_bf16_supported(including_emulation=True):
        asked["including_emulation"] = including_emulation
        return including_emulation  # a V100: "supported" only by emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert native_bf16() is False and asked == {"including_emulation": False}


def test_merge_and_eval_default_to_fp16_on_an_old_gpu(monkeypatch, tiny_model_dir):
    import transformers

    import tulu_lite.model.loading
    from tulu_lite.eval.generate import load_model
    from tulu_lite.merge.weights import choose_merge_dtype as _merge_dtype

    monkeypatch.setattr(tulu_lite.model.loading, "native_bf16", lambda: False)
    assert _merge_dtype(None, torch.device("cuda")) == torch.float16
    assert _merge_dtype(None, torch.device("cpu")) == torch.float32
    monkeypatch.setattr(tulu_lite.model.loading, "native_bf16", lambda: True)
    assert _merge_dtype(None, torch.device("cuda")) == torch.bfloat16

    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(tulu_lite.model.loading, "native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(TuluError, match="stop here"):
        load_model(tiny_model_dir)
    assert seen["dtype"] == torch.float16 and seen["device_map"] == "auto"


# ---- attention (fix 3) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cuda", "dtype", "capability", "installed", "expected"), [
    (False, torch.float32, None, set(), "sdpa"),                        # CPU
    (True, torch.bfloat16, (8, 0), {FA2}, FA2),                         # A100 with flash-attn
    (True, torch.bfloat16, (8, 9), {FA2}, FA2),                         # L4 / RTX 4090
    (True, torch.bfloat16, (9, 0), {FA2, FA3}, FA3),                    # H100 with both
    (True, torch.bfloat16, (9, 0), {FA2}, FA2),                         # H100, flash-attn 2 only
    (True, torch.bfloat16, (8, 0), set(), "sdpa"),                      # not installed
    (True, torch.float32, (8, 0), {FA2}, "sdpa"),                       # flash kernels need fp16/bf16
    (True, torch.float16, (7, 5), {FA2}, "sdpa"),                       # T4: flash-attn 2 needs Ampere
    (True, torch.bfloat16, (12, 0), {FA2}, "sdpa"),                     # newer than the builds we know of
])
def test_auto_attention_is_the_fastest_exact_kernel_available(cuda, dtype, capability, installed, expected):
    assert choose_attention("auto", cuda=cuda, dtype=dtype, capability=capability, installed=installed) == expected


def test_explicit_attention():
    facts = {"cuda": True, "dtype": torch.bfloat16, "capability": (8, 0), "installed": {FA2}}
    assert choose_attention("eager", **facts) == "eager"
    assert choose_attention(FA2, **facts) == FA2
    with pytest.raises(TuluError, match="model.attn_implementation: flash_attention_3 needs a CUDA GPU and the "
                                        "flash-attn-3"):
        choose_attention(FA3, **facts)
    with pytest.raises(TuluError, match="flash_attention_2 computes in float16/bfloat16 only, this recipe in float32"):
        choose_attention(FA2, **{**facts, "dtype": torch.float32})
    # rebuilding a trained base elsewhere (merge, eval) falls back to what auto would pick
    assert choose_attention(FA2, cuda=False, dtype=torch.float32, capability=None, installed=set(),
                            strict=False) == "sdpa"


@pytest.mark.parametrize("choice", ["auto", "eager"])
def test_the_base_loads_with_the_chosen_attention(tmp_path, monkeypatch, choice):
    from tulu_lite.model.loading import load_base_model

    monkeypatch.setenv("TULU_LITE_CACHE", str(tmp_path))
    cfg = ModelSettings(name_or_path="tiny-llama", tiny={"hidden_size": 32}, attn_implementation=choice)
    model = load_base_model(cfg, None)
    assert model.config._attn_implementation == ("sdpa" if choice == "auto" else "eager")


def test_the_runs_first_line_names_dtype_and_attention():
    from tulu_lite.train.report import device_summary

    recipe = Recipe.model_validate({"model": {"name_or_path": "tiny-llama"}, "quantization": {},
                                    "data": {"train_files": [str(DEMO)]}, "output_dir": "/tmp/unused"})
    assert re.fullmatch(r"cpu \(\d+ cores\), float32, attention sdpa", device_summary(recipe))


# ---- processes and devices (fixes 1, 2; FSDP) ----------------------------------------------------------------


def test_several_visible_gpus_in_one_process_are_refused_before_loading():
    from tulu_lite.train.devices import check_gpu_launch

    with pytest.raises(TuluError) as caught:
        check_gpu_launch(4, 1)
    message = str(caught.value)
    assert "4 GPUs are visible to one process" in message and "\n" not in message
    assert "CUDA_VISIBLE_DEVICES=0 tulu-lite train" in message
    assert "accelerate launch --multi_gpu --num_processes 4 -m tulu_lite train" in message
    for fine in ((4, 4), (1, 1), (0, 1), (0, 2)):
        check_gpu_launch(*fine)


def test_the_process_group_gets_the_trainers_timeout(monkeypatch):
    import accelerate

    import tulu_lite.train.devices as devices
    from tulu_lite.train.trainer import sft_config

    created = {}
    monkeypatch.setattr(accelerate, "PartialState", lambda **kwargs: created.update(kwargs))
    devices.distributed_state()
    assert created == {"cpu": True, "timeout": timedelta(seconds=devices.DDP_TIMEOUT_S)}
    recipe = Recipe.model_validate({"model": {"name_or_path": "tiny-llama"}, "data": {"train_files": [str(DEMO)]},
                                    "output_dir": "/tmp/unused"})
    assert sft_config(recipe).ddp_timeout == devices.DDP_TIMEOUT_S


def test_where_the_base_goes(monkeypatch):
    from tulu_lite.train.devices import base_device_map

    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert base_device_map(1) is None  # CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert base_device_map(1) == {"": 1}  # data parallel: this process's GPU
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch exports for an FSDP config
    assert base_device_map(1) is None  # FSDP places the shards


def test_fsdp_stores_4bit_weights_in_the_model_dtype(monkeypatch):
    from tulu_lite.model.loading import bits_and_bytes_config
    from tulu_lite.recipe import QuantizationSettings

    quant = QuantizationSettings()
    assert bits_and_bytes_config(quant).bnb_4bit_quant_storage == torch.uint8
    assert bits_and_bytes_config(quant, storage=torch.bfloat16).bnb_4bit_quant_storage == torch.bfloat16


def test_shipped_fsdp_config_is_fsdp2_with_what_tulu_lite_expects():
    config = yaml.safe_load((ROOT / "recipes" / "accelerate" / "fsdp.yaml").read_text())
    fsdp = config["fsdp_config"]
    assert config["distributed_type"] == "FSDP" and fsdp["fsdp_version"] == 2
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_activation_checkpointing"] is False  # training.gradient_checkpointing does it
    assert config["mixed_precision"] == "no"  # the recipe's dtype decides


# ---- packaging (fix 6) ----------------------------------------------------------------------------------------


def test_torch_range_matches_what_transformers_accepts():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    ours = next(Requirement(dep) for dep in pyproject["project"]["dependencies"] if dep.startswith("torch"))
    theirs = next(Requirement(dep) for dep in importlib.metadata.requires("transformers")
                  if dep.startswith("torch") and Requirement(dep).name == "torch")
    floor = min(Version(spec.version) for spec in theirs.specifier if spec.operator == ">=")
    assert floor == Version("2.6")
    assert not ours.specifier.contains("2.5.1") and ours.specifier.contains(str(floor))
    assert ours.specifier.contains(torch.__version__.split("+")[0])


# ---- one line, exit 2 -----------------------------------------------------------------------------------------


def _recipe(**model):
    def setup(tmp: Path) -> None:
        (tmp / "r.yaml").write_text(yaml.safe_dump({
            "model": {"name_or_path": "tiny-llama", **model}, "data": {"train_files": [str(DEMO)]},
            "output_dir": "out"}))
    return setup


BAD_INPUT = [
    BadInput("flash-attention-on-cpu", ["train", "{tmp}/r.yaml"],
             r"model\.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package",
             setup=_recipe(attn_implementation="flash_attention_2")),
    BadInput("unknown-attention", ["train", "{tmp}/r.yaml"], r"r\.yaml:\d+: model\.attn_implementation: ",
             setup=_recipe(attn_implementation="flash")),
    BadInput("fp16-on-cpu", ["train", "{tmp}/r.yaml"], r"model\.dtype: float16 training needs a CUDA GPU",
             setup=_recipe(dtype="float16")),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=str)
def test_bad_input(case, tmp_path):
    check_bad_input(case, tmp_path)
