"""Precision: what `auto` picks on which hardware, and the autocast it sets up."""

from __future__ import annotations

import pytest
import torch

from engine.ml import precision
from engine.ml.models import build_model
from engine.ml.precision import autocast, cpu_flags, cpu_has_native_bf16, is_convolutional, resolve_precision

CPUINFO = """processor\t: 0
model name\t: Some CPU
flags\t\t: fpu vme avx2 avx512f avx512_bf16 avx512_vnni
processor\t: 1
flags\t\t: fpu
"""


def test_cpu_flags_are_read_from_the_first_processor_of_proc_cpuinfo():
    assert cpu_flags(CPUINFO) == {"fpu", "vme", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert cpu_flags("nothing here") == set()


def test_native_bf16_needs_avx512_bf16_or_amx():
    assert cpu_has_native_bf16({"avx512_bf16"}) and cpu_has_native_bf16({"amx_bf16", "amx_tile"})
    assert not cpu_has_native_bf16({"avx512f", "avx2", "avx512_vnni"})


@pytest.mark.parametrize("flags, expected", [({"avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"), ({"avx2"}, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "_this_cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for: kept, only slower without it


def test_auto_on_a_cuda_device_without_cuda_is_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"


def test_an_unknown_precision_names_the_valid_ones():
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve_precision("fp16", torch.device("cpu"))


def test_bf16_autocast_computes_layers_in_bf16_and_fp32_is_untouched():
    layer, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(x).dtype == torch.float32


def test_only_models_with_convolutions_count_as_convolutional():
    assert is_convolutional(build_model("simple_cnn", (1, 28, 28), 10))
    assert not is_convolutional(build_model("basic_nn", (1, 28, 28), 10))
