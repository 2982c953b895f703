"""Model architectures without torch: the built-in names, the shape of any transformers config, its FLOPs.

A model is a built-in name (a transformers config written out here: no files needed, random weights
unless the local Hugging Face cache has the real ones) or a local directory with a `config.json`. Its
`Shape` is read from the config's fields under whichever names the family uses (`hidden_size`, `dim`,
`n_embd`, ...), so the plan's estimates and the FLOPs count work on a laptop, from the file alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: Built-in architectures: transformers config fields (`model_type` picks the family).
BUILT_IN: dict[str, dict] = {
    "distilbert-base-uncased": dict(model_type="distilbert", n_layers=6, dim=768, hidden_dim=3072, n_heads=12),
    "distilbert-tiny": dict(model_type="distilbert", n_layers=2, dim=64, hidden_dim=256, n_heads=2),
    "bert-base-uncased": dict(model_type="bert", num_hidden_layers=12, hidden_size=768, intermediate_size=3072,
                              num_attention_heads=12),
    "bert-large-uncased": dict(model_type="bert", num_hidden_layers=24, hidden_size=1024, intermediate_size=4096,
                               num_attention_heads=16),
    "roberta-base": dict(model_type="roberta", num_hidden_layers=12, hidden_size=768, intermediate_size=3072,
                         num_attention_heads=12, vocab_size=50265, max_position_embeddings=514, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2, type_vocab_size=1),
    "gpt2": dict(model_type="gpt2", n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257),
    "llama-tiny": dict(model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=172,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=32000, max_position_embeddings=2048),
    # the shape of a 1B-class Llama 3.2: grouped KV heads (8 of 32), a gated MLP, tied embeddings
    "llama-1b": dict(model_type="llama", num_hidden_layers=16, hidden_size=2048, intermediate_size=8192,
                     num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True,
                     max_position_embeddings=131072, rope_theta=500000.0),
}

#: Families whose MLP is gated (SwiGLU/GeGLU: gate, up and down projections instead of two).
GATED = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "olmo",
                   "olmo2", "granite", "cohere"})
#: Decoder families (causal LMs): their classifier scores every token (the last one is read), no pooler.
DECODERS = GATED | {"gpt2", "gpt_neo", "gptj", "gpt_neox", "opt", "bloom", "falcon", "phi", "starcoder2"}
_FIELDS = {"layers": ("num_hidden_layers", "n_layers", "n_layer"),
           "hidden": ("hidden_size", "dim", "n_embd", "d_model"),
           "intermediate": ("intermediate_size", "hidden_dim", "n_inner", "ffn_dim"),
           "heads": ("num_attention_heads", "n_heads", "n_head")}


@dataclass(frozen=True)
class Shape:
    """What the FLOPs of a forward pass depend on."""

    model_type: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    gated: bool
    vocab: int
    decoder: bool


def config_dict(model: str) -> dict:
    """The transformers config of a built-in name or a local directory, as a dict (no torch)."""
    if model in BUILT_IN:
        return dict(BUILT_IN[model])
    return json.loads((Path(model) / "config.json").read_text())


def shape_of(config: dict) -> Shape:
    """The Shape of a transformers config dict, whatever names its family gives the fields."""
    def field(name: str, default=None):
        return next((config[k] for k in _FIELDS[name] if config.get(k) is not None), default)

    model_type = str(config.get("model_type", ""))
    hidden, heads = int(field("hidden", 0)), int(field("heads", 1))
    return Shape(model_type, int(field("layers", 0)), hidden, int(field("intermediate", 4 * hidden)), heads,
                 int(config.get("num_key_value_heads") or heads), model_type in GATED,
                 int(config.get("vocab_size") or 30522), model_type in DECODERS)


def forward_flops_per_sample(seq_len: int, shape: Shape, num_labels: int = 2) -> float:
    """Multiply-adds x 2 of one classifying forward pass over one sequence.

    Per layer: the Q and output projections 2*s*d^2, K and V 2*s*d*d_kv (d_kv = d * kv_heads / heads:
    grouped KV heads project to fewer), attention scores and weighted sum 2*s^2*d, the MLP 2*s*d*h (3*s*d*h
    when gated). Head: an encoder's d x d pooler (or pre-classifier) and d x labels classifier on its first
    token; a decoder's d x labels scores on every token (transformers' *ForSequenceClassification).
    Embeddings, softmax, norms and activations are lookups or O(s*d) and are left out.
    """
    s, d, h = seq_len, shape.hidden, shape.intermediate
    d_kv = d * shape.kv_heads // max(1, shape.heads)
    per_layer = 2 * s * d * d + 2 * s * d * d_kv + 2 * s * s * d + (3 if shape.gated else 2) * s * d * h
    head = s * d * num_labels if shape.decoder else d * d + d * num_labels
    return 2.0 * (shape.layers * per_layer + head)


def _layer_flops(tokens: int, context: int, shape: Shape) -> int:
    """Multiply-adds of one layer for `tokens` new tokens attending over `context` positions."""
    d, h = shape.hidden, shape.intermediate
    d_kv = d * shape.kv_heads // max(1, shape.heads)
    return (2 * tokens * d * d + 2 * tokens * d * d_kv + 2 * tokens * context * d
            + (3 if shape.gated else 2) * tokens * d * h)


def generate_flops_per_sample(seq_len: int, new_tokens: int, shape: Shape) -> float:
    """Multiply-adds x 2 of generating `new_tokens` tokens after a prompt of `seq_len` (greedy, KV cache).

    Prefill: every layer over the prompt (attention s x s), the LM head (d x vocab) on its last token
    only, which gives the first token. Each further token: every layer for one token attending over the
    s + t positions cached so far, and the LM head. Grouped KV heads and gated MLPs as in
    forward_flops_per_sample.
    """
    head = shape.hidden * shape.vocab
    prefill = shape.layers * _layer_flops(seq_len, seq_len, shape) + head
    decode = sum(shape.layers * _layer_flops(1, seq_len + t, shape) + head for t in range(1, new_tokens))
    return 2.0 * (prefill + decode)


def decode_bytes_per_token(seq_len: int, new_tokens: int, shape: Shape, bytes_per_value: int,
                           batch_size: int = 1) -> float:
    """Memory read per generated token (after the first), averaged over the decode steps: a step reads every
    weight once (the layers' matrices and the LM head) for the whole batch, and each sequence's KV cache
    of the positions so far; a step gives one token per sequence."""
    d, h = shape.hidden, shape.intermediate
    d_kv = d * shape.kv_heads // max(1, shape.heads)
    weights = shape.layers * (2 * d * d + 2 * d * d_kv + (3 if shape.gated else 2) * d * h) + d * shape.vocab
    steps = range(1, new_tokens)
    if not steps:
        return float("nan")
    kv = sum(shape.layers * 2 * (seq_len + t) * d_kv for t in steps) / len(steps)
    return float((weights + batch_size * kv) * bytes_per_value / batch_size)
