"""Reading a checkpoint's bytes: damaged zip members and hostile pickles are named as such."""

import builtins
import os
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from engine.sam import checkpoint_file
from engine.sam.checkpoint import CheckpointError, file_sha256, load_sam, read_checkpoint
from engine.sam.modeling import Sam

REFUSED = "refused, the pickle would run code or build objects that are not tensors"


class Call:
    """Unpickling this calls `function(*args)`."""

    def __init__(self, function: object, *args: object) -> None:
        self.function = function
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.function, self.args)


@pytest.fixture
def tiny_path(tmp_path: Path, tiny_sam: Sam) -> Path:
    path = tmp_path / "sam_vit_tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    return path


def flip_inside_largest_tensor(path: Path) -> str:
    """Invert 64 bytes in the middle of the largest tensor member; return the member's name."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda member: member.file_size)
    data = bytearray(path.read_bytes())
    # Local header: 30 fixed bytes, then the name and the extra field (lengths at 26 and 28).
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
    for index in range(start, start + 64):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))
    return info.filename


def test_a_damaged_tensor_is_reported_naming_its_zip_member(tiny_path: Path) -> None:
    member = flip_inside_largest_tensor(tiny_path)
    torch.load(tiny_path, weights_only=True)  # torch alone loads the changed weights silently
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(tiny_path)
    assert str(caught.value) == (
        f"{tiny_path}: truncated or corrupt checkpoint (damaged zip member {member}: its bytes "
        "do not match the CRC-32 the zip records)"
    )


def test_a_load_by_registered_sha256_skips_the_member_pass(
    tiny_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[Path] = []
    real = checkpoint_file._verify_members

    def counted(path: Path, archive: zipfile.ZipFile) -> None:
        passes.append(path)
        real(path, archive)

    monkeypatch.setattr(checkpoint_file, "_verify_members", counted)
    load_sam(tiny_path, expected_sha256=file_sha256(tiny_path))
    assert passes == []
    read_checkpoint(tiny_path)
    assert passes == [tiny_path]


def test_a_file_saved_without_checksums_still_loads(tiny_sam: Sam, tmp_path: Path) -> None:
    path = tmp_path / "no_crc.pth"
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(tiny_sam.state_dict(), path)
    finally:
        torch.serialization.set_crc32_options(True)
    with zipfile.ZipFile(path) as archive:
        assert {info.CRC for info in archive.infolist()} == {0}
    assert read_checkpoint(path).arch == "vit_tiny"


def touch_command(marker: Path) -> Call:
    return Call(os.system, f"touch {marker}")


@pytest.mark.parametrize("zipfile_format", [True, False], ids=["zip", "legacy"])
def test_a_shell_command_pickle_is_refused_as_such_and_never_runs(
    tiny_sam: Sam, tmp_path: Path, zipfile_format: bool
) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    state = {**tiny_sam.state_dict(), "x": touch_command(marker)}
    torch.save(state, path, _use_new_zipfile_serialization=zipfile_format)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    module = os.system.__module__  # posix on Linux
    assert str(caught.value) == (
        f"{path}: {REFUSED} (unsupported GLOBAL {module}.system whose module {module} is blocked)"
    )
    assert not marker.exists()


def test_a_raw_shell_command_pickle_is_refused_and_the_payload_is_real(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(touch_command(marker), protocol=2))
    with pytest.raises(CheckpointError, match=f"{REFUSED} \\(unsupported GLOBAL"):
        read_checkpoint(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # an unsafe load does run it
    assert marker.exists()


def test_an_eval_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil_eval.pth"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    torch.save({"x": Call(builtins.eval, code)}, path)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == (
        f"{path}: {REFUSED} (Unsupported global: GLOBAL eval was not an allowed global by default)"
    )
    assert not marker.exists()


def test_a_damaged_pickle_names_the_unpicklers_reason(tmp_path: Path) -> None:
    path = tmp_path / "damaged.pth"
    path.write_bytes(b"\x80\x02<not a pickle opcode>")
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"{path}: truncated or corrupt checkpoint (Unsupported operand 60)"


def test_a_legacy_pickle_cut_short_says_the_file_ends_early(tiny_sam: Sam, tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save(tiny_sam.state_dict(), path, _use_new_zipfile_serialization=False)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    assert str(caught.value) == f"{path}: truncated or corrupt checkpoint (the file ends early)"
