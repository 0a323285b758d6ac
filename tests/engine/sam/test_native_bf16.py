"""native_bf16: bf16 autocast is chosen by default only where the device computes it natively."""

from pathlib import Path

import pytest
import torch

from engine.sam.device import cpu_flags, native_bf16

X86_HEAD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"


def _cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_x86_without_bf16_flags_is_not_native(tmp_path: Path) -> None:
    info = _cpuinfo(tmp_path, X86_HEAD + "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n")
    assert "avx2" in cpu_flags(info)
    assert not native_bf16("cpu", cpuinfo=info)


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_x86_with_avx512_bf16_or_amx_is_native(tmp_path: Path, flag: str) -> None:
    info = _cpuinfo(tmp_path, X86_HEAD + f"flags\t\t: fpu avx2 avx512f {flag} avx512vl\n")
    assert native_bf16(torch.device("cpu"), cpuinfo=info)


def test_arm_features_line_is_read(tmp_path: Path) -> None:
    info = _cpuinfo(tmp_path, "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert native_bf16("cpu", cpuinfo=info)
    plain = _cpuinfo(tmp_path, "processor\t: 0\nFeatures\t: fp asimd\n")
    assert not native_bf16("cpu", cpuinfo=plain)


def test_flags_of_every_processor_are_merged_and_a_missing_file_gives_none(
    tmp_path: Path,
) -> None:
    info = _cpuinfo(
        tmp_path, X86_HEAD + "flags\t: avx2\n\n" + X86_HEAD + "flags\t: avx2 avx512_bf16\n"
    )
    assert cpu_flags(info) == frozenset({"avx2", "avx512_bf16"})
    missing = tmp_path / "nowhere"
    assert cpu_flags(missing) == frozenset()
    assert not native_bf16("cpu", cpuinfo=missing)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_a_device_is_not_native() -> None:
    assert not native_bf16("cuda")
