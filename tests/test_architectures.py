"""Any transformers architecture: built as the family its config names, with its own FLOPs, parameters and
tokenizer (or an honest stand-in)."""

import json

import numpy as np
import pytest
from conftest import run_cli

from mpibench.architecture import BUILT_IN, config_dict, forward_flops_per_sample, shape_of
from mpibench.store import read_tasks

#: Tiny random configs of three families, as a local directory's config.json would hold them.
CONFIGS = {
    "bert": dict(model_type="bert", num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                 num_attention_heads=2, max_position_embeddings=64),
    "gpt2": dict(model_type="gpt2", n_layer=2, n_embd=64, n_head=2, n_positions=64, vocab_size=1000),
    "llama": dict(model_type="llama", num_hidden_layers=2, hidden_size=64, intermediate_size=172,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1000, max_position_embeddings=64),
}
CLASSES = {"bert": "BertForSequenceClassification", "gpt2": "GPT2ForSequenceClassification",
           "llama": "LlamaForSequenceClassification"}


def test_every_built_in_name_is_a_config_of_its_family():
    transformers = pytest.importorskip("transformers")
    from mpibench.inference.model import model_config

    for name, fields in BUILT_IN.items():
        cfg = model_config(name, 2)
        assert cfg.model_type == fields["model_type"] and isinstance(cfg, transformers.PretrainedConfig)
        shape = shape_of(cfg.to_dict())
        assert shape == shape_of(config_dict(name)), name  # the same shape with or without torch
    llama = shape_of(config_dict("llama-1b"))
    assert (llama.layers, llama.hidden, llama.kv_heads, llama.gated, llama.decoder) == (16, 2048, 8, True, True)


def _measure(tmp_path, family: str, workload: str = "classify", scenario: str = "offline") -> dict:
    """One task of a tiny local config of `family`, measured in this process as a rank measures it."""
    from mpibench.config import build
    from mpibench.inference.execute import Executor
    from mpibench.placement import Placement
    from mpibench.plan import expand

    model = tmp_path / family
    if not model.is_dir():
        model.mkdir()
        (model / "config.json").write_text(json.dumps(CONFIGS[family]))
        if family == "bert":  # its own tokenizer files beside the config: used, and named
            from mpibench.inference.model import wordpiece
            wordpiece().save_pretrained(model)
    cfg = build({"model": {"name": str(model)},
                 "sweep": {"batch_sizes": [2], "seq_lens": [16], "workloads": [workload], "scenarios": [scenario],
                           "max_new_tokens": 4, "threads": [1]},
                 "server": {"rates_sps": [200]},
                 "measure": {"warmup_s": 0, "min_time_s": 0.1, "max_time_s": 0.5}})
    executor = Executor(cfg, Placement(rank=1, host="node1"))
    try:
        result = executor.run(expand(cfg)[0])
    finally:
        executor.close()
    return {**result.row(), "message": result.message}


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_a_local_config_is_measured_as_its_own_family(tmp_path, family):
    transformers = pytest.importorskip("transformers")
    row = _measure(tmp_path, family)
    assert row["status"] == "ok", row["message"]
    assert row["architecture"] == CLASSES[family]  # a BERT config is never measured as a DistilBERT
    cfg = transformers.AutoConfig.for_model(**CONFIGS[family], num_labels=2, pad_token_id=0)
    expected = sum(p.numel() for p in transformers.AutoModelForSequenceClassification.from_config(cfg).parameters())
    assert row["n_params"] == expected
    assert row["flops_per_sample"] == forward_flops_per_sample(16, shape_of(CONFIGS[family]), 2)
    assert row["tokenizer"] == ("BertTokenizer" if family == "bert" else "stand-in")
    assert row["weights"] == "random-init"
    assert 0 < row["peak_memory_mib"] < 4096  # the tiny model, its inputs and buffers


def test_the_tokenizers_ids_fit_the_model():
    pytest.importorskip("torch")
    from mpibench.inference.model import Tokenizer, model_config

    small = Tokenizer("llama-tiny", model_config("llama-tiny", 2))
    assert small.kind == "stand-in"
    cfg = model_config("gpt2", 2)
    cfg.vocab_size = 100
    ids, mask = Tokenizer("gpt2", cfg)(["the quick brown fox jumps over the lazy dog " * 3], 12)
    assert ids.shape == (1, 12) and int(ids.max()) < 100 and int(mask.sum()) == 12
    bert = Tokenizer("bert-base-uncased", model_config("bert-base-uncased", 2))
    assert bert.kind == "wordpiece"  # the bundled vocabulary is BERT-uncased's own


def test_peak_memory_on_cpu_is_the_growth_over_the_process_before_any_model():
    torch = pytest.importorskip("torch")
    from mpibench.inference.memory import PeakMemory

    memory = PeakMemory()
    memory.start(torch.device("cpu"))
    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    del block
    grown = memory.stop()
    assert grown >= 60  # a 64 MiB block: freed by now, but the peak held it (less what the process gave back)
    memory.start(torch.device("cpu"))  # reset: the next task does not inherit the peak
    assert memory.stop() < grown


def test_peak_memory_on_cuda_is_the_allocators_peak(monkeypatch):
    torch = pytest.importorskip("torch")
    from mpibench.inference import memory as M

    calls = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda dev: calls.append(("reset", dev)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda dev: 3 * M.MIB)  # fabricated: no GPU here
    memory = M.PeakMemory()
    gpu = torch.device("cuda", 1)
    memory.start(gpu)
    assert memory.stop() == 3.0 and calls == [("reset", gpu)]


def test_running_out_of_memory_is_an_oom_row():
    pytest.importorskip("torch")
    from mpibench.config import build
    from mpibench.inference.execute import Executor
    from mpibench.placement import Placement
    from mpibench.plan import expand

    cfg = build({"model": {"name": "distilbert-tiny"}, "sweep": {"batch_sizes": [1]}})
    executor = Executor(cfg, Placement(rank=1, host="node1"))

    def no_memory(task, measure, before):
        raise MemoryError()
    executor.measure_task = no_memory
    row = executor.run(expand(cfg)[0])
    assert row.status == "oom" and "MemoryError" in row.message


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generate_flops_match_the_matmuls_torch_runs(family):
    """Prefill over the prompt, the LM head on its last token, then each decode step over the cache."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from torch.utils.flop_counter import FlopCounterMode

    from mpibench.architecture import generate_flops_per_sample
    from mpibench.inference.generate import GenerateWorkload
    from mpibench.inference.model import BuiltModel, Tokenizer

    fields = {k: v for k, v in CONFIGS[family].items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(family, **fields, pad_token_id=0)
    cfg._attn_implementation = "eager"
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    built = BuiltModel(model, torch.device("cpu"), "fp32", "random-init", shape_of(CONFIGS[family]),
                       Tokenizer(family, cfg))
    batch, seq, new = 2, 16, 5
    w = GenerateWorkload(built, batch, seq, seed=0, new_tokens=new)
    x = w.preprocess(0)
    with FlopCounterMode(display=False) as counter:
        tokens = w.forward(x)
    assert tokens.shape == (batch, new) and len(w.steps[-1]) == new
    assert counter.get_total_flops() == batch * generate_flops_per_sample(seq, new, shape_of(CONFIGS[family]))


def test_generate_measures_tokens_and_refuses_what_it_cannot_do(tmp_path):
    row = _measure(tmp_path, "llama", "generate")
    assert row["status"] == "ok", row["message"]
    assert row["workload"] == "generate" and row["architecture"] == "LlamaForCausalLM"
    assert row["new_tokens"] == 4 and 0 < row["ttft_p50_ms"] < row["e2e_p50_ms"]
    assert row["tpot_mean_ms"] > 0 and row["itl_p50_ms"] > 0
    assert row["output_tokens_per_s"] == pytest.approx(2 * 4 / (row["e2e_p50_ms"] / 1e3))
    assert row["decode_bytes_per_token"] > 0
    assert row["ttft_ci_low_ms"] <= row["ttft_p50_ms"] <= row["ttft_ci_high_ms"]
    assert row["tpot_ci_low_ms"] <= row["tpot_mean_ms"] <= row["tpot_ci_high_ms"]
    assert row["output_tokens_ci_low_per_s"] <= row["output_tokens_per_s"] <= row["output_tokens_ci_high_per_s"]
    assert row["decode_gbs"] == pytest.approx(row["decode_bytes_per_token"] * 2 / row["tpot_mean_ms"] / 1e6)
    assert np.isnan(row["mbu"]) and "CPU" in row["bandwidth_source"]  # no stated bandwidth for a CPU
    server = _measure(tmp_path, "llama", "generate", "server")  # 200 requests/s, batches of up to 2
    assert server["status"] == "ok", server["message"]
    assert server["server_requests"] >= 64 and 1 <= server["server_mean_batch"] <= 2
    assert 0 < server["ttft_p50_ms"] < server["server_p50_ms"]  # each request: arrival to its first token
    assert server["output_tokens_per_s"] == pytest.approx(server["server_achieved_sps"] * 4)
    assert server["server_goodput_sps"] <= server["server_achieved_sps"]
    assert 0 <= server["server_good_fraction"] <= 1 and server["server_slo_ms"] == 100.0
    bert = _measure(tmp_path, "bert", "generate")
    assert bert["status"] == "unavailable" and "encoder" in bert["message"]


@pytest.mark.mpi
def test_a_real_run_generates_on_every_rank(tmp_path):
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps(CONFIGS["llama"]))
    out = tmp_path / "gen.h5"
    proc = run_cli(["--model", llama, "--workload", "classify,generate", "--max-new-tokens", "4", "--batch-sizes",
                    "1,2", "--seq-lens", "16", "--precisions", "fp32", "--warmup-s", "0", "--min-time", "0.2",
                    "--max-time", "1", "--repeats", "2", "--output", out], n=3)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    t = read_tasks(out)
    assert sorted(zip(t["workload"].tolist(), t["batch_size"].tolist())) == sorted(2 * [
        ("classify", 1), ("classify", 2), ("generate", 1), ("generate", 2)])
    assert set(t["status"]) == {"ok"} and set(t["rank"]) <= {1, 2}
    generated = t["workload"] == "generate"
    assert (t["ttft_p50_ms"][generated] > 0).all() and np.isnan(t["ttft_p50_ms"][~generated]).all()

    # the analysis: token figures drawn whatever converged, windows combined, a table and the tokens objective
    from mpibench.analysis import analyze, write_all

    a = analyze(out, tpot_slo_ms=1e4)
    written = {p.name for p in write_all(a, tmp_path / "report")}
    assert {"output_tokens.png", "ttft.png", "tpot.png"} <= written
    gen = a.rows[a.tasks["workload"][a.rows] == "generate"]
    assert len(gen) == 2 and (a.tasks["windows"][gen] == 2).all()
    for name, lo, hi in (("ttft_p50_ms", "ttft_ci_low_ms", "ttft_ci_high_ms"),
                         ("output_tokens_per_s", "output_tokens_ci_low_per_s", "output_tokens_ci_high_per_s")):
        assert (a.tasks[lo][gen] <= a.tasks[name][gen]).all() and (a.tasks[name][gen] <= a.tasks[hi][gen]).all()
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Generation" in report and "output tokens/s (TPOT ≤ 10000 ms)" in report
    assert [r["workload"] for r in a.optimal["tokens"]["per_device"]] == ["generate"]
    compared = run_cli(["--compare", out, out], module="mpibench.analyze")
    assert compared.returncode == 0 and "TTFT change" in compared.stdout and "TPOT change" in compared.stdout
