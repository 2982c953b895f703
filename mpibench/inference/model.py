"""Model, tokenizer and the four-phase inference workload, built without any network access.

The default is the distilbert-base-uncased architecture: real weights when a local directory or the
local Hugging Face cache has them, otherwise built from its config with seeded random weights (the
same FLOPs and speed), recorded as `weights = random-init`. The tokenizer is a real WordPiece
tokenizer over the BERT uncased vocabulary shipped with mpibench.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from mpibench.config import ARCHITECTURES  # noqa: E402
from mpibench.hostinfo import cpu_model  # noqa: E402
from mpibench.inference.text import generate_texts  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Unavailable(Exception):
    """This rank cannot run the task as asked (no such device, precision unsupported)."""


@functools.lru_cache(maxsize=1)
def tokenizer() -> BertTokenizer:
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


def _load(name: str, num_labels: int, seed: int) -> tuple[torch.nn.Module, str]:
    """Pretrained weights when they are on this machine, else the architecture with random weights."""
    try:
        model = DistilBertForSequenceClassification.from_pretrained(
            name, num_labels=num_labels, local_files_only=True)
        return model, "pretrained"
    except (OSError, ValueError):
        pass
    if name in ARCHITECTURES:
        cfg = DistilBertConfig(**ARCHITECTURES[name], num_labels=num_labels)
    else:
        cfg = DistilBertConfig.from_pretrained(name, num_labels=num_labels)
    torch.manual_seed(seed)
    return DistilBertForSequenceClassification(cfg), "random-init"


@dataclass
class BuiltModel:
    model: torch.nn.Module
    device: torch.device
    precision: str
    weights: str
    arch: dict


def build_model(name: str, num_labels: int, device: str, precision: str, seed: int,
                gpu_index: int = 0, backend: str = "eager", attention: str = "sdpa") -> BuiltModel:
    """The model on its device in its precision (weights cast), ready for inference.

    `compile` wraps it in torch.compile, which compiles lazily at the first call of each input shape.
    """
    dev = resolve_device(device, gpu_index)
    dtype = DTYPES[precision]
    if dev.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise Unavailable(f"bf16 is not supported on {torch.cuda.get_device_name(dev)}")
    model, weights = _load(name, num_labels, seed)
    model.set_attn_implementation(attention)
    model = model.to(device=dev, dtype=dtype).eval()
    c = model.config
    arch = dict(n_layers=c.n_layers, dim=c.dim, hidden_dim=c.hidden_dim, n_heads=c.n_heads)
    try:  # a precision the device cannot compute in fails here, not mid-measurement
        with torch.inference_mode():
            model(input_ids=torch.ones(1, 4, dtype=torch.long, device=dev))
    except (RuntimeError, NotImplementedError) as err:
        raise Unavailable(f"{precision} inference is not supported on {dev}: {err}") from err
    if backend == "compile":
        model = torch.compile(model)
    return BuiltModel(model, dev, precision, weights, arch)


class InferenceWorkload:
    """Tokenise generated text, copy to the device, forward, logits back to host and argmax."""

    def __init__(self, built: BuiltModel, batch_size: int, seq_len: int, seed: int,
                 n_batches: int = 8, ahead: bool = False):
        self.built = built
        self.batch_size, self.seq_len = batch_size, seq_len
        self.tok = tokenizer()
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
        enc = self.tok(texts, padding="max_length", truncation=True, max_length=self.seq_len,
                       return_tensors="pt")
        x = (enc["input_ids"], enc["attention_mask"])
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
