"""The CPU named with every measured figure (`cpu_features.cpu_description`)."""

from __future__ import annotations

import torch

from transformers_mdlm import cpu_features


def _description(tmp_path, text: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    cpu_features.cpu_description.cache_clear()
    try:
        return cpu_features.cpu_description(str(path))
    finally:
        cpu_features.cpu_description.cache_clear()


def test_the_description_names_the_cpu_its_bfloat16_instructions_and_cores(tmp_path):
    capability = torch.backends.cpu.get_cpu_capability()
    amx = _description(
        tmp_path, "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 amx_bf16 avx512_bf16\n"
    )
    assert amx.startswith(f"Intel Xeon ({capability}; AMX-BF16, AVX512-BF16), ") and amx.endswith(" cores")
    epyc = _description(tmp_path, "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert epyc.startswith(f"AMD EPYC ({capability}; AVX512-BF16), ")


def test_without_bfloat16_flags_the_description_says_what_onednn_found(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_features, "cpu_has_native_bfloat16", lambda: False)
    assert "; no bfloat16 kernels), " in _description(tmp_path, "model name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
    monkeypatch.setattr(cpu_features, "cpu_has_native_bfloat16", lambda: True)  # a CPU whose flags name neither
    assert "; bfloat16 kernels), " in _description(tmp_path, "model name\t: Other\nflags\t\t: fpu\n")
    cpu_features.cpu_description.cache_clear()  # no cpuinfo (not Linux): the platform's name, oneDNN's answer
    try:
        assert "; bfloat16 kernels), " in cpu_features.cpu_description(str(tmp_path / "no-such-file"))
    finally:
        cpu_features.cpu_description.cache_clear()


def test_the_flags_may_come_before_the_name(tmp_path):
    assert _description(tmp_path, "flags\t\t: amx_bf16\nmodel name\t: Intel Xeon\n").startswith("Intel Xeon (")
