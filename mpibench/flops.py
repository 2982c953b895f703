"""Model FLOPs per sample from the architecture (no torch): what a forward pass must compute."""

from __future__ import annotations


def distilbert_flops_per_sample(seq_len: int, n_layers: int, dim: int, hidden_dim: int,
                                n_heads: int | None = None, num_labels: int = 2) -> float:
    """Multiply-adds x 2 of one forward pass over one sequence.

    Per layer: Q, K, V and output projections 4*s*d^2, attention scores and weighted sum 2*s^2*d,
    feed-forward 2*s*d*h. Head: pre-classifier d^2 and classifier d*labels on the first token.
    The head count splits the attention work but does not change it.
    Embeddings, softmax, layer norms and GELU are lookups or O(s*d) and are left out.
    """
    s, d, h = seq_len, dim, hidden_dim
    per_layer = 4 * s * d * d + 2 * s * s * d + 2 * s * d * h
    head = d * d + d * num_labels
    return 2.0 * (n_layers * per_layer + head)
