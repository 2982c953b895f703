"""The docs stay true: a short README, links that resolve, every column documented, every command run.

Every command in a ```bash block of README.md, docs/*.md and benchmarks/README.md is run by a test, in
one of two ways:

- TESTED_BY names the test (or fixture) that runs it. The command's words, after its `VAR=value`
  prefix, must be exactly the argument list that test executes, read from the test's source: through
  `run_cli(ARGS, n=N, module=M)` (`[mpirun -n N] python -m M ARGS`), `slurm.submit(ARGS)`
  (`sbatch ARGS`), `slurm.run(ARGS)`, `subprocess.run(ARGS)` or `subprocess.Popen(ARGS)`. In the test,
  `TINY` reads as configs/tiny.yaml, `sys.executable` as python, `ROOT / "a" / x` as a/x, parametrized
  names as each of their values, and any other expression (a temporary path) as any one word. mpirun's
  `--oversubscribe` and `--allow-run-as-root`, and sbatch's `--parsable` and `--output=...` (where the
  test keeps its logs) are left out of both sides. The variables the command sets must be set to the
  same values by the test (through `job_env(...)`). A target that is not a Python file (.ci/run) must
  hold the command as it is, whitespace aside.
- Every other command is run here, as it is, by bash in a scratch directory that has the checkout's
  configs/, jobscripts/, analysis/ and benchmarks/, a `python` that is this interpreter, and a results/
  directory in which each results/*.h5 the command reads is a small synthetic run file. So such
  commands must be quick: --help, --dry-run, the analysis of a run file.

A block is not collected when the line before its fence is exactly NOT_RUN: site-specific commands
(a site's MPI module, an account) that cannot run anywhere else.
"""

from __future__ import annotations

import ast
import itertools
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, mpi_env
from mpibench.store import HOST_COLUMNS, TASK_COLUMNS

README = (ROOT / "README.md").read_text()
RESULTS_PAGE = ROOT / "docs" / "results-file.md"
BEGIN, END = "<!-- BEGIN GENERATED COLUMNS -->", "<!-- END GENERATED COLUMNS -->"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
NOT_RUN = "<!-- not run: site-specific -->"
README_MAX_LINES = 200

# The quick start's first command installs mpibench and then sweeps distilbert-base for a few minutes:
# too long for here. Its install is .ci/run's (which adds the test extra); its sweep runs here with
# --dry-run added (the config, the flags, three real ranks), and the same launch on the tiny model
# is QUICK_START_EQUIVALENT, which runs every time the suite runs.
QUICK_START_EQUIVALENT = ("tests/conftest.py::tiny_run_4",
                          "mpirun -n 4 python -m mpibench.run --config configs/tiny.yaml "
                          "--output results/tiny.h5 --jsonl results/tiny.jsonl")

TESTED_BY = {
    "pip install torch==2.13.0 -e '.[test]' && python -m pytest": ".ci/run",
    "python -m mpibench.run --config configs/tiny.yaml --output results/one.h5 --batch-sizes 1,2 "
    "--precisions fp32": "tests/test_run.py::test_one_rank_serial",
    QUICK_START_EQUIVALENT[1]: QUICK_START_EQUIVALENT[0],
    "mpirun -n 3 python -m mpibench.run --resume results/tiny.h5":
        "tests/test_cluster.py::test_signal_then_resume_gives_one_final_row_per_task",
    "mpirun -n 3 python -m mpibench.run --resume results/run.h5":
        "tests/test_cluster.py::test_signal_then_resume_gives_one_final_row_per_task",
    "mpirun -n 5 python -m mpibench.run --config configs/tiny.yaml --batch-sizes 2 --precisions fp32 "
    "--min-time 0.5 --mode scaling --output results/scaling.h5":
        "tests/test_cluster.py::test_scaling_mode_tiny_model_on_four_ranks",
    "python -m mpibench.run --model synthetic --batch-sizes 1,2 --seq-lens 64 --warmup-s 0 --min-time 0.1 "
    "--output results/o.h5 --jsonl results/o.jsonl --overwrite":
        "tests/test_run.py::test_overwrite_starts_the_jsonl_again",
    "python -m mpibench.run --model synthetic --batch-sizes 4 --seq-lens 200 --warmup-s 0 --min-time 0.3 "
    "--scenarios offline,single-stream,server --latency-slo-ms 15 --min-requests 700 --server-min-s 2 --output results/scen.h5":
        "tests/test_scenarios.py::test_scenarios_end_to_end_on_the_synthetic_model",
    "python -m mpibench.run --config configs/tiny.yaml --batch-sizes 2 --precisions fp32,bf16,fp16 "
    "--output results/prec.h5": "tests/test_scenarios.py::test_precisions_on_cpu",
    "python -m mpibench.run --config configs/tiny.yaml --batch-sizes 2 --precisions fp32 --backends eager,compile "
    "--attention sdpa,eager --output results/compile.h5":
        "tests/test_scenarios.py::test_eager_attention_and_compile_backend",
    "python -m mpibench.run --config configs/tiny.yaml --batch-sizes 1 --precisions fp32 --max-time 0.5 --label before "
    "--output results/before.h5": "tests/test_multirun.py::test_a_label_given_at_run_time_names_the_run",
    "python -m mpibench.analyze results/before.h5 results/after.h5 --out before-vs-after/":
        "tests/test_multirun.py::test_the_report_is_written_self_contained",
    "mpirun -n 3 python -m mpibench.run --optimal results/tiny.h5 --output results/tiny-optimal.h5":
        "tests/test_optimal.py::test_from_a_file_runs_the_chosen_configuration",
    "mpirun -n 3 python -m mpibench.run --model synthetic --seq-lens 10 --warmup-s 0 --min-time 0.3 "
    "--batch-sizes 1,2,4,8,16 --optimal --output results/search.h5": "tests/test_optimal.py::test_search_then_final",
    "sbatch --wait jobscripts/cpu.sbatch --config configs/tiny.yaml": "tests/test_slurm.py::cpu_job",
    "MPIBENCH_LAUNCHER=mpirun sbatch --ntasks-per-node=3 --cpus-per-task=2 jobscripts/cpu.sbatch "
    "--config configs/tiny.yaml --batch-sizes 1,2 --precisions fp32":
        "tests/test_slurm.py::test_mpirun_inside_the_allocation",
    "sbatch jobscripts/gpu.sbatch --config configs/tiny.yaml --devices cuda":
        "tests/test_slurm.py::test_gpu_sbatch_on_real_gpus",
    "sbatch --test-only jobscripts/gpu.sbatch": "tests/test_slurm.py::test_gpu_sbatch_fits_a_gpu_partition",
    "MPIBENCH_DRY_RUN=1 sbatch jobscripts/gpu.sbatch --batch-sizes 16": "tests/test_slurm.py::test_gpu_sbatch_dry_run",
    "MPIBENCH_DRY_RUN=1 sbatch --nodes=1 jobscripts/multinode.sbatch": "tests/test_slurm.py::test_dry_run_lines",
    "sbatch jobscripts/cpu.sbatch --resume results/mpibench-cpu-123456.h5":
        "tests/test_slurm.py::test_time_limit_warning_then_resume",
    "jobscripts/run_benchmark.sh --device cpu --optimal --config configs/tiny.yaml --batch-sizes 1,2 "
    "--precisions fp32": "tests/test_slurm.py::test_run_benchmark_optimal_through_slurm",
    **{f"python benchmarks/{script} --quick": "tests/test_benchmarks.py::test_benchmark_runs_quick"
       for script in ("overhead.py", "agreement.py", "repeatability.py", "energy_overhead.py",
                      "analysis_scale.py", "dispatch.py", "ingest.py", "hierarchy.py", "coverage.py")},
}


# ------------------------------------------------------------------ collecting the commands


def bash_blocks(page: Path) -> list[str]:
    """The ```bash blocks of a Markdown page, less those marked NOT_RUN on the line before the fence."""
    blocks, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            end = lines.index("```", i + 1)
            if not (i > 0 and lines[i - 1].strip() == NOT_RUN):
                blocks.append("\n".join(lines[i + 1:end]))
            i = end
        i += 1
    return blocks


def uncommented(line: str) -> str:
    """The line without a trailing `# comment` (a # outside quotes, after a space), spaces normalised."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            line = line[:i]
            break
    return " ".join(line.split())


def commands(block: str) -> list[str]:
    """One command per line: continuation lines joined, trailing `# comments` dropped."""
    return [c for c in map(uncommented, block.replace("\\\n", " ").splitlines()) if c]


normal = uncommented


def all_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for block in bash_blocks(page):
            found += [(str(page.relative_to(ROOT)), c) for c in commands(block)]
    return found


QUICK_START = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
QUICK_START_COMMANDS = re.findall(r"```bash\n(.*?)\n```", QUICK_START, re.S)
COMMANDS = [(page, c) for page, c in all_commands() if normal(c) not in map(normal, QUICK_START_COMMANDS[:1])]
TESTED = {normal(c): target for c, target in TESTED_BY.items()}


# ------------------------------------------------------------------ what a test executes


class Any:
    """An expression of the test's (a temporary path, a computed value): any one word that starts with
    the literal text before it (f"--output={tmp}/x" -> "--output=")."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def matches(self, word: str) -> bool:
        return word.startswith(self.prefix) and len(word) > len(self.prefix)

    def __repr__(self):
        return f"<{self.prefix}...>"


ANY = Any()


def _joined(words: list, sep: str = ""):
    """Words that make one word: a str, or an Any that keeps the literal text before the first unknown."""
    for i, w in enumerate(words):
        if isinstance(w, Any):
            return Any(sep.join(words[:i]) + sep * bool(i) + w.prefix)
    return sep.join(words)


def _module_values(tree: ast.Module) -> tuple[dict, dict]:
    """Module-level `NAME = literal` values, and `NAME = <list expression>` nodes."""
    values, nodes = {}, {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            nodes[name] = stmt.value
            try:
                values[name] = ast.literal_eval(stmt.value)
            except ValueError:
                pass
    values.update(TINY="configs/tiny.yaml")
    return values, nodes


class _Mark:
    def __getattr__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        return self


class _Pytest:
    mark = _Mark()

    @staticmethod
    def param(*values, **_):
        return values if len(values) > 1 else values[0]


def _bindings(func: ast.FunctionDef, module_values: dict) -> list[dict]:
    """One dict of parameter values per case of the test's @pytest.mark.parametrize decorators."""
    axes = []
    for deco in func.decorator_list:
        if not (isinstance(deco, ast.Call) and ast.unparse(deco.func) == "pytest.mark.parametrize"):
            continue
        names = [n.strip() for n in ast.literal_eval(deco.args[0]).split(",")]
        try:
            cases = eval(compile(ast.Expression(deco.args[1]), "<parametrize>", "eval"),  # noqa: S307
                         {"__builtins__": {"sorted": sorted, "list": list}, "pytest": _Pytest, **module_values})
        except Exception:  # not computable here: each parameter stands for any word
            cases = [tuple(ANY for _ in names)]
        axes.append([dict(zip(names, case if len(names) > 1 else (case,))) for case in cases])
    return [{k: v for case in combo for k, v in case.items()} for combo in itertools.product(*axes)] or [{}]


class Reader:
    """Turns the expressions of one test case into words: str, ANY, or None (a list it cannot read)."""

    def __init__(self, values: dict, nodes: dict):
        self.values, self.nodes = values, nodes

    def word(self, node: ast.expr):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float)):
            return str(node.value)
        if isinstance(node, ast.Name) and isinstance(self.values.get(node.id), (str, int, float)):
            return str(self.values[node.id])
        if ast.unparse(node) == "sys.executable":
            return "python"
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "str" and len(node.args) == 1:
            return self.word(node.args[0])
        if isinstance(node, ast.JoinedStr):
            return _joined([self.word(v.value) if isinstance(v, ast.FormattedValue) else str(v.value)
                            for v in node.values])
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            parts = []
            while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                parts.insert(0, node.right)
                node = node.left
            if not (isinstance(node, ast.Name) and node.id == "ROOT"):
                parts.insert(0, node)
            return _joined([self.word(p) for p in parts], "/")
        return ANY

    def words(self, node: ast.expr) -> list | None:
        if isinstance(node, ast.Name):
            value = self.values.get(node.id)
            if isinstance(value, (list, tuple)):
                return [str(v) for v in value]
            return self.words(self.nodes[node.id]) if node.id in self.nodes else None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.words(node.left), self.words(node.right)
            return None if left is None or right is None else left + right
        if not isinstance(node, (ast.List, ast.Tuple)):
            return None
        out = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                inner = self.words(elt.value)
                if inner is None:
                    return None
                out += inner
            else:
                out.append(self.word(elt))
        return out

    def launch(self, call: ast.Call) -> tuple[dict, list] | None:
        """(environment set by the test, argv) of a call that runs a command, else None."""
        name = ast.unparse(call.func)
        kwargs = {k.arg: k.value for k in call.keywords if k.arg}
        if name not in ("run_cli", "slurm.submit", "slurm.run", "subprocess.run", "subprocess.Popen") or not call.args:
            return None
        argv = self.words(call.args[0])
        if argv is None:
            return None
        if name == "run_cli":
            module = self.word(kwargs["module"]) if "module" in kwargs else "mpibench.run"
            n = kwargs.get("n")
            one_rank = n is None or ast.unparse(n) == "None" or (isinstance(n, ast.Name) and n.id in self.values
                                                                 and self.values[n.id] is None)
            argv = ([] if one_rank else ["mpirun", "-n", self.word(n)]) + ["python", "-m", module] + argv
        elif name == "slurm.submit":
            argv = ["sbatch", *argv]
        env = {}
        if "env" in kwargs and isinstance(kwargs["env"], ast.Call) and ast.unparse(kwargs["env"].func) == "job_env":
            env = {k.arg: self.word(k.value) for k in kwargs["env"].keywords if k.arg}
        return env, argv


def plumbing_dropped(argv: list) -> list:
    """mpirun's and sbatch's options that only suit the test machine or the test's log directory."""
    if argv[:1] == ["mpirun"]:
        return [w for w in argv if w not in ("--oversubscribe", "--allow-run-as-root")]
    if argv[:1] == ["sbatch"]:
        return [w for w in argv
                if w != "--parsable" and not (w if isinstance(w, str) else w.prefix).startswith("--output=")]
    return argv


def launches(target: str) -> list[tuple[dict, list]]:
    """Every (env, argv) the test or fixture `tests/FILE.py::NAME` executes, one per parametrized case."""
    file, name = target.split("::")
    tree = ast.parse((ROOT / file).read_text())
    values, nodes = _module_values(tree)
    funcs = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == name]
    assert len(funcs) == 1, f"{target}: no such test (or more than one)"
    local = {s.targets[0].id: s.value for s in ast.walk(funcs[0])
             if isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)}
    out = []
    for binding in _bindings(funcs[0], values):
        reader = Reader({**values, **binding}, {**nodes, **local})
        for call in ast.walk(funcs[0]):
            if isinstance(call, ast.Call) and (launch := reader.launch(call)) is not None:
                out.append((launch[0], plumbing_dropped(launch[1])))
    return out


def same(test_word, word: str) -> bool:
    return test_word.matches(word) if isinstance(test_word, Any) else test_word == word


def run_by(command: str, target: str) -> bool:
    if "::" not in target:
        return normal(command) in " ".join((ROOT / target).read_text().split())
    words = shlex.split(command, comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    words = plumbing_dropped(words)
    for test_env, argv in launches(target):
        if len(argv) == len(words) and all(same(a, w) for a, w in zip(argv, words)) and \
                all(k in test_env and same(test_env[k], v) for k, v in env.items()):
            return True
    return False


# ------------------------------------------------------------------ running commands here


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> tuple[Path, dict]:
    """A directory to run documented commands in, and their environment (`python` is this interpreter)."""
    root = tmp_path_factory.mktemp("docs")
    for name in ("configs", "jobscripts", "analysis", "benchmarks"):
        (root / name).symlink_to(ROOT / name)
    (root / "results").mkdir()
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = mpi_env()
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return root, env


def synthetic_run(path: Path) -> None:
    """A small run file: a CPU sweep of 8 tasks (and, for a scaling file, its /scaling rows)."""
    from mpibench.analysis import synthetic as S
    from mpibench.store import Store

    store = Store.create(path, S.attrs(), S.hosts(1))
    for row, raw in S.sweep(batch_sizes=(1, 2, 4, 8), n=100):
        store.append(row, raw)
    if "scaling" in path.name:
        cfg = {"model": "distilbert-base-uncased", "device": "cpu", "precision": "fp32", "batch_size": 4,
               "seq_len": 128, "threads": 1}
        for ranks in (1, 2, 4):
            eff = 1 / (1 + 0.05 * (ranks - 1))
            store.append_scaling({**cfg, "task_id": 0, "by": "ranks", "n_ranks": ranks, "n_nodes": 1,
                                  "aggregate_throughput_sps": 100.0 * ranks * eff,
                                  "per_rank_throughput_sps": 100.0 * eff, "efficiency": eff, "status": "ok"})
    store.close()


def run_here(command: str, scratch: tuple[Path, dict]) -> subprocess.CompletedProcess:
    root, env = scratch
    words = shlex.split(command, comments=True)
    for before, word in zip([""] + words, words):
        if re.fullmatch(r"results/[\w.-]+\.h5", word) and before not in ("--output", "--out"):
            if not (root / word).exists():
                synthetic_run(root / word)
    return subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ the tests


def test_readme_is_short():
    assert len(README.splitlines()) <= README_MAX_LINES


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    assert len(QUICK_START_COMMANDS) == 2
    assert "mpirun" in QUICK_START_COMMANDS[0] and "configs/quick.yaml" in QUICK_START_COMMANDS[0]
    assert QUICK_START_COMMANDS[1] in (ROOT / ".ci" / "run").read_text()


def test_quick_start_sweep_plans_under_three_ranks(scratch):
    """The first command's sweep with --dry-run added; run for real on the tiny model: QUICK_START_EQUIVALENT."""
    install, sweep = QUICK_START_COMMANDS[0].split(" && ")
    assert install == "pip install torch==2.13.0 -e ." and "pip install torch==2.13.0 -e '.[test]'" in \
        (ROOT / ".ci" / "run").read_text()
    proc = run_here(sweep + " --dry-run", scratch)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("task ") == 8 and "estimated total" in proc.stdout, proc.stdout  # 4 batch sizes x 2
    assert run_by(QUICK_START_EQUIVALENT[1], QUICK_START_EQUIVALENT[0])
    assert sweep.startswith("mpirun ") and " -n 3 python -m mpibench.run --config configs/quick.yaml" in sweep


def test_every_column_is_documented():
    page = RESULTS_PAGE.read_text()
    assert page.count(BEGIN) == 1 and page.count(END) == 1
    reference = page.split(BEGIN, 1)[1].split(END, 1)[0]
    for column in TASK_COLUMNS + HOST_COLUMNS:
        assert f"`{column[0]}`" in reference, column[0]


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page):
    text = page.read_text()
    links = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S))
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(ROOT)}: {link} does not exist"
        if anchor and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            assert anchor in map(slug, headings), f"{page.relative_to(ROOT)}: {link}: no such heading"


def test_every_page_is_linked_from_the_readme():
    for page in PAGES[1:]:
        assert f"]({page.relative_to(ROOT)})" in README, page


def test_commands_are_found():
    pages = {page for page, _ in COMMANDS}
    assert {"README.md", "docs/cluster.md", "benchmarks/README.md"} <= pages, pages
    assert not set(TESTED) - {normal(c) for _, c in COMMANDS} - {normal(QUICK_START_EQUIVALENT[1])}, \
        "TESTED_BY names commands that no page documents any more"


@pytest.mark.parametrize("page, command", COMMANDS, ids=[f"{p}: {c[:60]}" for p, c in COMMANDS])
def test_every_command_is_run_by_a_test(page, command, scratch):
    target = TESTED.get(normal(command))
    if target is not None:
        assert run_by(command, target), f"{page}: `{command}` is not what {target} runs"
        return
    proc = run_here(command, scratch)
    assert proc.returncode == 0, f"{page}: `{command}` -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
