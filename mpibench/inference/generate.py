"""LLM generation as a workload: a prompt of seq_len tokens, then max_new_tokens tokens, greedy, KV cache.

The four phases of an iteration are the same as classification's: preprocess (tokenise the prompts),
h2d, forward (prefill and every decode step) and postprocess (detokenise). Inside the forward phase each
step is timed on its own (the device synchronised after each, as a streaming server must), so that
time to first token, time per output token and the inter-token latency come from the same iterations
as the request latency the stopping rule works on. End-of-sequence is ignored: every sample does the
same work.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from mpibench.inference.model import BuiltModel, InferenceWorkload
from mpibench.inference.scenarios import latency_percentiles
from mpibench.stats import mean_ci, median_ci


class GenerateWorkload(InferenceWorkload):
    def __init__(self, built: BuiltModel, batch_size: int, seq_len: int, seed: int, new_tokens: int,
                 ahead: bool = False, clock: Callable[[], int] = time.perf_counter_ns):
        super().__init__(built, batch_size, seq_len, seed, ahead=ahead)
        self.new_tokens, self.clock = new_tokens, clock
        self.steps: list[list[int]] = []  # per iteration: the prefill's ns, then each decode step's

    def _sync(self) -> None:
        if self.built.device.type == "cuda":
            torch.cuda.synchronize(self.built.device)

    def forward(self, x):
        ids, mask = x
        model, times = self.built.model, []
        with torch.inference_mode():
            t0 = self.clock()
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            self._sync()
            times.append(self.clock() - t0)
            tokens, ones = [token], torch.ones_like(token, dtype=mask.dtype)
            for _ in range(self.new_tokens - 1):
                t0 = self.clock()
                mask = torch.cat([mask, ones], dim=1)
                out = model(input_ids=token, attention_mask=mask, cache=out.cache,
                            use_cache=True, logits_to_keep=1)
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                self._sync()
                times.append(self.clock() - t0)
                tokens.append(token)
        self.steps.append(times)
        return torch.cat(tokens, dim=1)

    def postprocess(self, tokens):
        return self.built.tokenizer.decode(tokens.cpu())


def generation_metrics(steps: list[list[int]], raw_ns: dict[str, np.ndarray], stats: dict[str, float],
                       batch_size: int, seq_len: int, new_tokens: int) -> dict[str, float]:
    """The token-level columns of the measured iterations (`steps`: theirs, in order; `stats`: their
    mpibench.stats.summarize columns).

    TTFT = preprocess + h2d + prefill (which gives the first token), its median with the order-statistics
    CI; TPOT = the mean decode step, its CI from the iterations' own means (Student's t); ITL percentiles
    over every decode step; output tokens/s from the median request latency, its CI from that median's;
    prefill tokens/s from the median prefill. Percentiles follow the sample rule of
    mpibench.inference.scenarios (NaN where too few to state).
    """
    prefill = np.array([s[0] for s in steps], dtype=np.float64)
    per_iter = np.array([s[1:] for s in steps], dtype=np.float64).reshape(len(steps), -1) / 1e6
    decode = per_iter.ravel()
    ttft = (raw_ns["preprocess"] + raw_ns["h2d"] + prefill) / 1e6
    ttft_p, _ = latency_percentiles(ttft)
    ttft_lo, ttft_hi = median_ci(ttft)
    itl_p, _ = latency_percentiles(decode) if len(decode) else ({50: np.nan, 99: np.nan}, "")
    tpot, tpot_half = mean_ci(per_iter.mean(axis=1)) if decode.size else (np.nan, np.nan)
    tokens = batch_size * new_tokens * 1e3  # per ms of request latency
    with np.errstate(divide="ignore"):
        return {
            "new_tokens": new_tokens,
            "ttft_p50_ms": ttft_p[50], "ttft_p99_ms": ttft_p[99],
            "ttft_ci_low_ms": ttft_lo, "ttft_ci_high_ms": ttft_hi,
            "tpot_mean_ms": tpot, "tpot_ci_low_ms": max(0.0, tpot - tpot_half), "tpot_ci_high_ms": tpot + tpot_half,
            "itl_p50_ms": itl_p[50], "itl_p99_ms": itl_p[99],
            "output_tokens_per_s": tokens / stats["e2e_p50_ms"],
            "output_tokens_ci_low_per_s": tokens / stats["e2e_ci_high_ms"],
            "output_tokens_ci_high_per_s": tokens / stats["e2e_ci_low_ms"] if stats["e2e_ci_low_ms"] > 0 else np.inf,
            "prefill_tokens_per_s": batch_size * seq_len / (float(np.median(prefill)) / 1e9),
        }
