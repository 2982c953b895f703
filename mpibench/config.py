"""Everything a user can set: pydantic models, YAML loading and command-line overrides.

No torch, no MPI here: `--help` and `--dry-run` must stay instant.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mpibench.architecture import BUILT_IN
from mpibench.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_RE = re.compile(r"^(cpu|cuda|cuda:\d+)$")



#: Upper bounds that keep every run finite (and every number a machine can hold).
MAX_BATCH = 65_536
MAX_SEQ_LEN = 131_072
MAX_THREADS = 4_096
MAX_SECONDS = 86_400.0  # one day: no single task or wait is allowed longer
MAX_SEED = 2**31 - 1
#: What a task may take beyond its measuring rules: loading, building and compiling its model.
LOAD_ALLOWANCE_S = 600.0
#: A server run needs this many requests to state a p90 (MLPerf); fewer make its row meaningless.
SERVER_MIN_REQUESTS = 64

BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH)]
SeqLen = Annotated[int, Field(ge=1, le=MAX_SEQ_LEN)]
Threads = Annotated[int, Field(ge=0, le=MAX_THREADS)]


class _Section(BaseModel):
    # Every float finite (no inf, no nan); every list free of duplicates, checked alike for all.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _no_duplicates(cls, v, info):
        if isinstance(v, list) and len(set(v)) != len(v):
            dups = sorted({x for x in v if v.count(x) > 1}, key=str)
            raise ValueError(f"{', '.join(map(str, dups))} given more than once; "
                             f"each value of {info.field_name} may appear once")
        return v


class ModelConfig(_Section):
    name: str = Field(
        "distilbert-base-uncased",
        description=f"model: a built-in architecture ({', '.join(BUILT_IN)}: random weights unless the "
        "local Hugging Face cache has the real ones), a local directory with the config.json of any transformers "
        "architecture (and its weights and tokenizer, where present), or synthetic (sleeps, no torch: for "
        "testing the coordinator)",
        json_schema_extra={"flag": "--model"},
    )
    num_labels: int = Field(2, ge=1, le=100_000, description="classification labels of the head")

    @field_validator("name")
    @classmethod
    def _known_or_local(cls, v: str) -> str:
        if v in BUILT_IN or v == "synthetic" or (Path(v) / "config.json").is_file():
            return v
        raise ValueError(
            f"unknown model {v!r}; allowed: {', '.join(BUILT_IN)}, synthetic, "
            "or a local directory containing config.json"
        )


class SweepConfig(_Section):
    devices: list[str] = Field(
        ["cpu"], min_length=1, description="devices to sweep: cpu, cuda, cuda:N",
        json_schema_extra={"aliases": ["--device"]},
    )
    batch_sizes: list[BatchSize] = Field([1, 2, 4, 8], min_length=1,
                                         description="batch sizes, e.g. 1,2,4,8")
    seq_lens: list[SeqLen] = Field([128], min_length=1,
                                   description="sequence lengths in tokens, e.g. 64,128")
    precisions: list[str] = Field(["fp32"], min_length=1, description="precisions: fp32, bf16, fp16")
    mixed_precision: bool = Field(
        False, description="also sweep each device's best half precision (bf16 on CPU and "
        "on CUDA GPUs that support it, else fp16)",
    )
    workloads: list[Literal["classify", "generate"]] = Field(
        ["classify"], min_length=1, description="classify: one label per sequence (an encoder's task); generate: a "
        "prompt of seq_len tokens, then max_new_tokens tokens, greedy with the KV cache (decoders only)",
        json_schema_extra={"aliases": ["--workload"]},
    )
    max_new_tokens: int = Field(32, ge=1, le=MAX_SEQ_LEN, description="generate: tokens produced per sequence "
                                "(end-of-sequence ignored, so every sample does the same work)")
    threads: list[Threads] = Field(
        [0], min_length=1, description="intra-op threads per rank; 0 = the rank's share of its node's cores",
    )
    scenarios: list[Literal["offline", "single-stream", "server"]] = Field(
        ["offline"], min_length=1, description="offline: batches back to back (throughput); single-stream: one "
        "sample at a time (latency percentiles); server: Poisson arrivals batched up to the batch size",
        json_schema_extra={"aliases": ["--scenario"]},
    )
    backends: list[Literal["eager", "compile"]] = Field(
        ["eager"], min_length=1, description="eager, or compile (torch.compile; compile time recorded apart)",
        json_schema_extra={"aliases": ["--backend"]},
    )
    attention: list[Literal["sdpa", "eager"]] = Field(
        ["sdpa"], min_length=1, description="attention implementation: sdpa (fused) or eager (plain matmuls)",
    )

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        for d in v:
            if not DEVICE_RE.match(d):
                raise ValueError(f"unknown device {d!r}; allowed: cpu, cuda, cuda:N")
        return v

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, v: list[str]) -> list[str]:
        for p in v:
            if p not in PRECISIONS:
                raise ValueError(f"unknown precision {p!r}; allowed: {', '.join(PRECISIONS)}")
        return v


class MeasureConfig(_Section):
    warmup_iters: int = Field(
        5, ge=0, le=1_000_000, description="warm-up iterations before measuring (after the cold first call); "
        "the warm-up ends at max_time_s whatever is left",
        json_schema_extra={"flag": "--warmup"},
    )
    warmup_s: float = Field(1.0, ge=0, le=MAX_SECONDS, description="minimum warm-up time in seconds "
                            "(at most max_time_s)")
    min_time_s: float = Field(
        3.0, ge=0, le=MAX_SECONDS, description="measure at least this many seconds per task (at most max_time_s)",
        json_schema_extra={"flag": "--min-time"},
    )
    min_iters: int = Field(
        30, ge=2, le=10_000_000, description="measure at least this many iterations (with 10 the median's 95% CI "
        "is just [min, max])",
    )
    max_time_s: float = Field(
        30.0, gt=0, le=MAX_SECONDS, description="stop at this many seconds even if not converged",
        json_schema_extra={"flag": "--max-time"},
    )
    target_ci: float = Field(
        0.02, gt=0, lt=1,
        description="stop when the 95% CI of the median latency is within +-this fraction",
    )
    repeats: int = Field(
        1, ge=1, le=100, description="measure every configuration in this many separate windows, interleaved in "
        "a random order over the whole sweep and spread over the ranks; the reported median and CI combine them, "
        "so the CI covers the drift between windows, and a finding must hold in every window (sweeps; "
        "--optimal and --mode scaling measure one window per configuration)",
    )
    preprocess: Literal["inline", "ahead"] = Field(
        "inline", description="inline: tokenise every batch inside the timed loop, as a deployment "
        "does; ahead: tokenise the batches once before timing (MLPerf's pre-loaded samples), so "
        "forward passes follow each other and the preprocess phase only hands over ready tensors",
    )

    @model_validator(mode="after")
    def _within_max_time(self) -> "MeasureConfig":
        for name in ("min_time_s", "warmup_s"):
            if getattr(self, name) > self.max_time_s:
                raise ValueError(f"measure.{name} = {getattr(self, name):g} is more than measure.max_time_s = "
                                 f"{self.max_time_s:g}; allowed: {name} <= max_time_s")
        return self


class OutputConfig(_Section):
    path: Path = Field(
        Path("results/mpibench.h5"), description="HDF5 file to write",
        json_schema_extra={"flag": "--output"},
    )
    overwrite: bool = Field(False, description="replace an existing output file")
    jsonl: Path | None = Field(None, description="also write one JSON line per task to this path")
    label: str = Field("", max_length=64, description="a name for this run in reports over several runs "
                       "(python -m mpibench.analyze A.h5 B.h5 ...), e.g. a partition or a software version; "
                       "default: the file's name")


class ServerConfig(_Section):
    rates_sps: list[Annotated[float, Field(gt=0, le=1e9)]] = Field(
        [], description="server scenario: arrival rates to measure, samples/s; empty = search the "
        "highest rate whose p99 latency stays under latency_slo_ms",
    )
    latency_slo_ms: float = Field(100.0, gt=0, le=MAX_SECONDS * 1e3, description="server scenario: the p99 latency bound, ms")
    min_requests: int = Field(
        1000, ge=662, le=10_000_000, description="server scenario: requests per rate (>= 662 to state a p99)",
    )
    ttft_slo_ms: float | None = Field(
        None, gt=0, le=MAX_SECONDS * 1e3, description="server scenario, generate: the time-to-first-token bound, "
        "ms; with tpot_slo_ms (either or both), the search and the goodput hold generation to these instead of "
        "latency_slo_ms",
    )
    tpot_slo_ms: float | None = Field(
        None, gt=0, le=MAX_SECONDS * 1e3, description="server scenario, generate: the time-per-output-token bound, "
        "ms (see ttft_slo_ms)",
    )
    search_steps: int = Field(6, ge=2, le=64, description="server scenario: rates tried by the search")
    min_s: float = Field(
        60.0, ge=0, le=MAX_SECONDS, description="server search: seconds of the steady run that confirms the rate "
        "found (again at 0.8x, up to 3 runs, where it misses the SLO); 0 = no confirmation",
        json_schema_extra={"flag": "--server-min-s"},
    )

    @field_validator("rates_sps")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        for x in v:
            if x <= 0:
                raise ValueError(f"{x} is not allowed; rates must be positive samples/s")
        return v


class EnergyConfig(_Section):
    backend: Literal["auto", "rapl", "pyrapl", "nvml", "none"] = Field(
        "auto", description="energy counters: auto (whatever this node can read), rapl, pyrapl, "
        "nvml, none; a backend named here that cannot read stops the run at start",
        json_schema_extra={"flag": "--energy"},
    )
    idle_s: float = Field(
        3.0, ge=0, le=600, description="seconds of idle power measured per node at start (stored, not "
        "subtracted; skipped where nothing can be read)", json_schema_extra={"flag": "--energy-idle-s"},
    )


class ClusterConfig(_Section):
    isolation: Literal["device", "node", "none"] = Field(
        "device", description="device: each rank gets its own GPU or slice of cores; node: one "
        "measuring rank per node at a time (clean CPU figures and energy); none: no pinning",
    )
    mode: Literal["sweep", "scaling"] = Field(
        "sweep", description="sweep: spread the tasks over the ranks; scaling: run each task on "
        "1, 2, 4, ... ranks at once and report aggregate throughput and parallel efficiency",
    )
    stop_grace_s: float = Field(
        30.0, ge=0, le=3600, description="after SIGUSR1/SIGINT, seconds to wait for in-flight tasks to stop "
        "(SIGTERM waits for none)",
    )
    task_timeout_s: float | None = Field(
        None, gt=0, le=MAX_SECONDS, description="a worker silent this many seconds on one task has the task "
        "recorded failed and gets no more work; default: what the task may take by its max_time_s, plus "
        f"{LOAD_ALLOWANCE_S:g} s to load and compile its model", json_schema_extra={"flag": "--task-timeout"},
    )


class Config(_Section):
    """A whole run: what to measure, how, and where to write it."""

    model: ModelConfig = ModelConfig()
    sweep: SweepConfig = SweepConfig()
    measure: MeasureConfig = MeasureConfig()
    output: OutputConfig = OutputConfig()
    server: ServerConfig = ServerConfig()
    cluster: ClusterConfig = ClusterConfig()
    energy: EnergyConfig = EnergyConfig()
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed for generated input text and random weights")

    @model_validator(mode="after")
    def _server_runs_end(self) -> "Config":
        """A server run lasts at most max_time_s: its rates must bring enough requests by then."""
        least = SERVER_MIN_REQUESTS / self.measure.max_time_s
        for rate in self.server.rates_sps:
            if rate < least:
                raise ValueError(f"server.rates_sps = {rate:g}: within measure.max_time_s = "
                                 f"{self.measure.max_time_s:g} s that rate brings {rate * self.measure.max_time_s:.3g} "
                                 f"requests, fewer than the {SERVER_MIN_REQUESTS} a p90 needs; allowed: rates >= "
                                 f"{least:.3g}/s, or a longer --max-time")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)




def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config file into a plain dict; bad files become a UsageError."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UsageError(f"--config: file {str(p)!r} does not exist") from None
    except OSError as err:
        raise UsageError(f"--config: cannot read {str(p)!r}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UsageError(f"--config: {str(p)!r} is not UTF-8 text (byte {err.start}: "
                         f"{err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UsageError(f"--config: {str(p)!r}{where} is not valid YAML: "
                         f"{getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config: {str(p)!r} must hold a mapping of sections "
                         f"({', '.join(Config.model_fields)}), got {type(data).__name__}")
    return data


def build(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a nested dict into a Config; the first error becomes one clear line."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise UsageError(describe_error(err, source)) from None


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def describe_error(err: ValidationError, source: str) -> str:
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"] if not isinstance(x, int))
    value = e.get("input")
    if e["type"] == "extra_forbidden":
        section = _section_of(e["loc"][:-1])
        allowed = ", ".join(section.model_fields) if section else ""
        return f"{source}: unknown field {loc!r}; allowed here: {allowed}"
    msg = e["msg"].removeprefix("Value error, ")
    if isinstance(value, dict):  # a rule across fields: the message names them and their values
        return f"{source}: {msg}"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = ",".join(value)  # as typed on the command line
    if e["type"] in _BOUNDS:
        msg = f"allowed: {_BOUNDS[e['type']]} {next(iter(e['ctx'].values()))}"
    elif e["type"] == "finite_number":
        msg = "allowed: a finite number"
    if e["type"] == "literal_error":
        msg = msg.replace("Input should be", "allowed:")
    return f"{source}: {loc} = {value!r}: {msg}"


def _section_of(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type)
                                 and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def merge(base: dict, override: dict) -> dict:
    """Deep-merge `override` into a copy of `base` (CLI flags over YAML)."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def best_half_precision(device: str, bf16_supported: bool | None = None) -> str:
    """The prototype's --mixed-precision: bf16 on CPU, bf16 on CUDA where supported, else fp16."""
    if device == "cpu":
        return "bf16"
    return "bf16" if bf16_supported in (None, True) else "fp16"
