"""Model, tokenizer and the four-phase inference workload, built without any network access.

Any transformers architecture: a built-in name (mpibench.architecture.BUILT_IN) or a local directory's
config.json, built as the family its `model_type` names (never as another) with its sequence-classification
head: real weights when the directory or the local Hugging Face cache has them, otherwise seeded random
weights (the same FLOPs and speed), recorded as `weights = random-init`. The tokenizer is the model's own
where its files are local; else the WordPiece tokenizer over the BERT uncased vocabulary shipped with
mpibench, which is the real one for the BERT-uncased family and a stand-in elsewhere (its ids mapped into
the model's vocabulary), recorded as `tokenizer = stand-in`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertTokenizer,
    PretrainedConfig,
)

from mpibench.architecture import BUILT_IN, Shape, shape_of  # noqa: E402
from mpibench.hostinfo import cpu_model  # noqa: E402
from mpibench.inference.text import generate_texts  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Unavailable(Exception):
    """This rank cannot run the task as asked (no such device, precision unsupported)."""


@functools.lru_cache(maxsize=1)
def wordpiece() -> BertTokenizer:
    vocab = resources.files("mpibench.data").joinpath("bert-base-uncased-vocab.txt")
    with resources.as_file(vocab) as path:
        return BertTokenizer(vocab=str(path), do_lower_case=True)


def resolve_device(device: str, gpu_index: int = 0) -> torch.device:
    """The torch device for a planned device string, or Unavailable with the reason.

    Plain `cuda` means this rank's own GPU: `gpu_index` (its place among the measuring ranks of its
    node) modulo the GPUs it can see, which respects CUDA_VISIBLE_DEVICES and Slurm's per-task binding.
    """
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise Unavailable(f"{device} asked for, but no CUDA device is visible "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    index = int(device.split(":")[1]) if ":" in device else gpu_index % torch.cuda.device_count()
    if index >= torch.cuda.device_count():
        raise Unavailable(f"{device} asked for, but only {torch.cuda.device_count()} CUDA "
                          "device(s) are visible")
    return torch.device("cuda", index)


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_model()


#: Files of a tokenizer of its own in a model directory (without one, transformers may build an empty one).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
#: The WordPiece vocabulary shipped with mpibench is the real one of these families at this size.
WORDPIECE_FAMILIES = ("bert", "distilbert")
WORDPIECE_VOCAB = 30522


def model_config(name: str, num_labels: int) -> PretrainedConfig:
    """The config of a built-in name or a local directory, of the family its model_type names."""
    if name in BUILT_IN:
        fields = dict(BUILT_IN[name])
        cfg = AutoConfig.for_model(fields.pop("model_type"), **fields)
    else:
        cfg = AutoConfig.from_pretrained(name, local_files_only=True)
    cfg.num_labels = num_labels
    if cfg.pad_token_id is None:  # a decoder's classifier finds each sequence's last token by the pad id
        cfg.pad_token_id = 0
    return cfg


def _load(name: str, cfg: PretrainedConfig, seed: int, workload: str = "classify") -> tuple[torch.nn.Module, str]:
    """Pretrained weights when they are on this machine, else the architecture with random weights; with its
    sequence-classification head, or its language-model head to generate."""
    auto = AutoModelForCausalLM if workload == "generate" else AutoModelForSequenceClassification
    try:
        return auto.from_pretrained(name, config=cfg, local_files_only=True), "pretrained"
    except (OSError, ValueError):
        pass
    torch.manual_seed(seed)
    return auto.from_config(cfg), "random-init"


@dataclass
class BuiltModel:
    model: torch.nn.Module
    device: torch.device
    precision: str
    weights: str
    shape: Shape
    tokenizer: "Tokenizer"

    @property
    def architecture(self) -> str:
        """The transformers class actually built (BertForSequenceClassification, ...)."""
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile's wrapper
        return type(model).__name__

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


class Tokenizer:
    """Text -> (input_ids, attention_mask) of exactly seq_len tokens in the model's vocabulary.

    `kind`: the model's own tokenizer class where its files are local, `wordpiece` where the bundled
    BERT-uncased WordPiece is the family's own, else `stand-in` (WordPiece ids taken modulo the vocabulary:
    the model sees valid ids and does the same work, but the text means nothing to it).
    """

    def __init__(self, name: str, cfg: PretrainedConfig):
        self.own = None
        if name not in BUILT_IN and any((Path(name) / f).is_file() for f in TOKENIZER_FILES):
            try:
                self.own = AutoTokenizer.from_pretrained(name, local_files_only=True)
            except (OSError, ValueError, TypeError, KeyError):
                self.own = None
        if self.own is not None and len(self.own) < 2:  # built from nothing (transformers 5 can): no vocabulary
            self.own = None
        if self.own is not None and self.own.pad_token is None:
            self.own.pad_token = self.own.eos_token or self.own.unk_token
        real = cfg.model_type in WORDPIECE_FAMILIES and cfg.vocab_size == WORDPIECE_VOCAB
        self.kind = type(self.own).__name__ if self.own is not None else "wordpiece" if real else "stand-in"
        self.vocab = int(cfg.vocab_size)

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Token ids back to text (a stand-in's ids read in the bundled vocabulary)."""
        if self.own is not None:
            return self.own.batch_decode(ids)
        return wordpiece().batch_decode(ids % len(wordpiece()))

    def __call__(self, texts: list[str], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.own or wordpiece()
        enc = tok(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
        ids = enc["input_ids"] if self.kind != "stand-in" else enc["input_ids"] % self.vocab
        return ids, enc["attention_mask"]


def build_model(name: str, num_labels: int, device: str, precision: str, seed: int,
                gpu_index: int = 0, backend: str = "eager", attention: str = "sdpa",
                workload: str = "classify") -> BuiltModel:
    """The model on its device in its precision (weights cast), ready for inference.

    `compile` wraps it in torch.compile, which compiles lazily at the first call of each input shape.
    """
    dev = resolve_device(device, gpu_index)
    dtype = DTYPES[precision]
    if dev.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise Unavailable(f"bf16 is not supported on {torch.cuda.get_device_name(dev)}")
    cfg = model_config(name, num_labels)
    shape = shape_of(cfg.to_dict())
    if workload == "generate" and not shape.decoder:
        raise Unavailable(f"{cfg.model_type} is an encoder: it classifies, it does not generate")
    model, weights = _load(name, cfg, seed, workload)
    model.set_attn_implementation(attention)
    model = model.to(device=dev, dtype=dtype).eval()
    try:  # a precision the device cannot compute in fails here, not mid-measurement
        with torch.inference_mode():
            model(input_ids=torch.ones(1, 4, dtype=torch.long, device=dev))
    except (RuntimeError, NotImplementedError) as err:
        raise Unavailable(f"{precision} inference is not supported on {dev}: {err}") from err
    if backend == "compile":
        model = torch.compile(model)
    return BuiltModel(model, dev, precision, weights, shape, Tokenizer(name, cfg))


class InferenceWorkload:
    """Tokenise generated text, copy to the device, forward, logits back to host and argmax."""

    def __init__(self, built: BuiltModel, batch_size: int, seq_len: int, seed: int,
                 n_batches: int = 8, ahead: bool = False):
        self.built = built
        self.batch_size, self.seq_len = batch_size, seq_len
        texts = generate_texts(batch_size * n_batches, seq_len, seed)
        self.batches = [texts[k * batch_size:(k + 1) * batch_size] for k in range(n_batches)]
        self.pin = built.device.type == "cuda"
        self.k = batch_size  # samples per iteration (set_batch)
        # `ahead`: every batch tokenised now, so the timed loop only hands over ready tensors
        self.ready = [self.tokenise(b) for b in self.batches] if ahead else None

    def set_batch(self, k: int) -> None:
        """The server scenario runs smaller batches when fewer requests wait."""
        self.k = k

    def tokenise(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.built.tokenizer(texts, self.seq_len)
        return tuple(t.pin_memory() for t in x) if self.pin else x

    def preprocess(self, i: int):
        if self.ready is not None:
            x = self.ready[i % len(self.ready)]
            return x if self.k == self.batch_size else tuple(t[:self.k] for t in x)
        return self.tokenise(self.batches[i % len(self.batches)][:self.k])

    def h2d(self, x):
        dev = self.built.device
        return tuple(t.to(dev, non_blocking=True) for t in x)

    def forward(self, x):
        with torch.inference_mode():
            return self.built.model(input_ids=x[0], attention_mask=x[1]).logits

    def postprocess(self, logits):
        return logits.float().argmax(dim=-1).cpu()
