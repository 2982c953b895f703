"""Damaged run files: every entry point refuses them in one line (exit 2) within seconds, touching nothing.

Each kind of damage is made from a real file written by the project's writer: cut short, bytes
overwritten, foreign HDF5, malformed or missing attributes. A live file and a killed writer's file are
read as they are: never mistaken for truncated ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import pytest

from conftest import ROOT, mpi_env
from mpibench.analysis import synthetic as S
from mpibench.config import build
from mpibench.errors import UsageError
from mpibench.hdf5io import lookup3
from mpibench.store import open_run, read_config

TIMEOUT = 60  # s: a damaged file is refused within seconds; this only catches a hang
CFG = build({"model": {"name": "distilbert-tiny"}, "sweep": {"batch_sizes": [1, 2], "threads": [1],
                                                             "seq_lens": [32], "precisions": ["fp32"]}})


def rows():
    return S.sweep(batch_sizes=(1, 2), precisions=("fp32",), threads=1, seq_len=32, model="distilbert-tiny", n=40)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return S.write(tmp_path_factory.mktemp("good") / "good.h5", rows(), config_yaml=CFG.to_yaml())


def writer_code(path: Path, end: str) -> str:
    """A writer that commits rows, then ends as `end` says (a SIGKILL, or a loop that never ends)."""
    return textwrap.dedent(f"""
        import os, sys, time
        from mpibench.analysis import synthetic as S
        from mpibench.store import Store
        rows = S.sweep(batch_sizes=(1, 2), precisions=("fp32",), threads=1, seq_len=32, model="distilbert-tiny",
                       n=40)
        store = Store.create({str(path)!r}, S.attrs(config_yaml={CFG.to_yaml()!r}), S.hosts(1), overwrite=True)
        for i, (row, raw) in enumerate(rows):
            store.append(row, raw, [(1.0, "cpu-package-0", 2.0)] * 3)
            store.commit()
        print("committed", flush=True)
        i = len(rows)
        while {end == "live"}:
            row, raw = rows[i % len(rows)]
            store.append(dict(row, task_id=i), raw, [(1.0, "cpu-package-0", 2.0)] * 3)
            store.commit()
            i += 1
        os.kill(os.getpid(), 9)
    """)


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("killed") / "killed.h5"
    proc = subprocess.run([sys.executable, "-c", writer_code(path, "kill")], env=mpi_env(), timeout=TIMEOUT,
                          capture_output=True)
    assert proc.returncode == -9, proc.stderr
    assert path.read_bytes()[11] & 0x05, "a killed SWMR writer leaves the superblock's write flags set"
    return path


# ---------------------------------------------------------------- the kinds of damage


def _cut(n):
    def make(src: Path, dst: Path):
        data = src.read_bytes()
        dst.write_bytes(data[:n(len(data))])
    return make


def _overwrite(where, data: bytes = b"\xa5" * 16):
    """Overwrite bytes at an offset `where(file)` gives (from the file itself, opened read-only)."""
    def make(src: Path, dst: Path):
        shutil.copyfile(src, dst)
        with h5py.File(src, "r") as f:
            at = where(f)
        with open(dst, "r+b") as fh:
            fh.seek(at)
            fh.write(data)
    return make


def _header(name):
    return lambda f: h5py.h5o.get_info(f[name].id).addr + 8  # past the "OHDR" signature, version, flags


def _root_header(f):
    with open(f.filename, "rb") as fh:
        return int.from_bytes(fh.read(44)[36:44], "little") + 8


def _attrs(change):
    def make(src: Path, dst: Path):
        shutil.copyfile(src, dst)
        with h5py.File(dst, "r+") as f:
            change(f.attrs)
    return make


def _foreign(src: Path, dst: Path):
    with h5py.File(dst, "w") as f:
        f["x"] = [1, 2, 3]
        f.attrs["config_yaml"] = "a: 1"


def _no_tasks(src: Path, dst: Path):
    shutil.copyfile(src, dst)
    with h5py.File(dst, "r+") as f:
        del f["tasks"]


def _set(**values):
    return lambda attrs: attrs.update(values)


def _delete(name):
    return lambda attrs: attrs.__delitem__(name)


def _half_written(killed):
    def make(src: Path, dst: Path):
        data = killed.read_bytes()
        dst.write_bytes(data[:len(data) // 2])
    return make


#: kind: (how to make it from a good file, words every refusal says). Reading the file's tables needs no
#: config, so the config kinds are refused only by --resume and --optimal.
DAMAGE = {
    "empty": (_cut(lambda n: 0), "not an HDF5 file"),
    "text": (lambda src, dst: dst.write_text("run,throughput\n1,2\n"), "not an HDF5 file"),
    "superblock only": (_cut(lambda n: 48), "truncated"),
    "cut in the superblock": (_cut(lambda n: 30), "truncated"),
    "cut at 2 KiB": (_cut(lambda n: 2048), "truncated"),
    "cut in half": (_cut(lambda n: n // 2), "truncated"),
    "last byte missing": (_cut(lambda n: n - 1), "truncated"),
    "half-written (killed writer, cut)": (None, ("truncated", "damaged")),  # past the recorded end: damaged
    "superblock overwritten": (_overwrite(lambda f: 28, b"\x00\x10"), "damaged"),
    "root header overwritten": (_overwrite(_root_header), "damaged"),
    "column header overwritten": (_overwrite(_header("tasks/task_id")), "damaged"),
    "tasks group header overwritten": (_overwrite(_header("tasks")), "damaged"),
    "foreign HDF5": (_foreign, "not an mpibench results file"),
    "no /tasks": (_no_tasks, "not an mpibench results file"),
    "format not text": (_attrs(_set(format=5)), "not an mpibench results file"),
    "newer schema": (_attrs(_set(schema_version=99)), "schema version 99"),
    "schema_version not an integer": (_attrs(_set(schema_version="three")), "schema_version"),
    "complete not a boolean": (_attrs(_set(complete="yes")), "attribute complete"),
    "config_yaml not text": (_attrs(_set(config_yaml=[1, 2, 3])), "config_yaml"),
}
CONFIG_DAMAGE = {
    "config_yaml missing": (_attrs(_delete("config_yaml")), "config_yaml is missing"),
    "config_yaml not YAML": (_attrs(_set(config_yaml="model: [distilbert-tiny\n")), "not YAML"),
    "config_yaml not a mapping": (_attrs(_set(config_yaml="- 1\n- 2\n")), "not a mapping"),
    "config_yaml empty": (_attrs(_set(config_yaml="")), "empty"),
}


def make(kind: str, good: Path, killed: Path, directory: Path) -> tuple[Path, str]:
    how, words = {**DAMAGE, **CONFIG_DAMAGE}[kind]
    path = directory / "bad.h5"
    (how or _half_written(killed))(good, path)
    return path, words


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(module: str, *args) -> subprocess.CompletedProcess:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=mpi_env(), cwd=ROOT, timeout=TIMEOUT)
    proc.seconds = time.monotonic() - start
    return proc


def says(line: str, words: str | tuple[str, ...]) -> bool:
    return any(w.lower() in line.lower() for w in ((words,) if isinstance(words, str) else words))


def assert_refused(proc: subprocess.CompletedProcess, words: str | tuple[str, ...], what: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, f"{what}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error:"), \
        f"{what}: {proc.stderr}"
    assert says(lines[0], words), f"{what}: {lines[0]!r} does not say {words!r}"


def entry_points(bad: Path, good: Path, work: Path) -> dict[str, tuple]:
    """Every entry point, each on its own copy of the damaged file (they run side by side)."""
    calls = {}
    for name in ("analyze", "compare good bad", "compare bad good", "recover", "resume", "optimal"):
        d = work / name.replace(" ", "-")
        d.mkdir()
        copy = d / bad.name
        shutil.copyfile(bad, copy)
        args = {"analyze": ("mpibench.analyze", copy, "--out", d / "out"),
                "compare good bad": ("mpibench.analyze", "--compare", good, copy),
                "compare bad good": ("mpibench.analyze", "--compare", copy, good),
                "recover": ("mpibench.recover", copy),
                "resume": ("mpibench.run", "--resume", copy),
                "optimal": ("mpibench.run", "--optimal", copy, "--output", d / "new.h5")}[name]
        calls[name] = (copy, args)
    return calls


def run_all(calls: dict[str, tuple]) -> dict[str, tuple[Path, str, subprocess.CompletedProcess]]:
    before = {name: sha(copy) for name, (copy, _) in calls.items()}
    with ThreadPoolExecutor(max_workers=3) as pool:
        procs = {name: pool.submit(cli, *args) for name, (_, args) in calls.items()}
        return {name: (copy, before[name], procs[name].result()) for name, (copy, _) in calls.items()}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_every_entry_point_refuses_a_damaged_file_in_one_line(kind, good, killed, tmp_path):
    bad, words = make(kind, good, killed, tmp_path)
    for name, (copy, before, proc) in run_all(entry_points(bad, good, tmp_path)).items():
        assert_refused(proc, words, f"{kind}: {name}")
        assert sha(copy) == before, f"{kind}: {name} changed the file"
        assert not list(copy.parent.glob(".*.tmp")), f"{kind}: {name} left a temporary file"
        assert proc.seconds < 30, f"{kind}: {name} took {proc.seconds:.0f} s"


@pytest.mark.parametrize("kind", list(CONFIG_DAMAGE))
def test_a_missing_or_malformed_stored_config_stops_resume_and_optimal_only(kind, good, killed, tmp_path):
    """The tables are intact: analysis, --compare and recover work; what plans from the config refuses."""
    bad, words = make(kind, good, killed, tmp_path)
    for name, (copy, before, proc) in run_all(entry_points(bad, good, tmp_path)).items():
        if name in ("resume", "optimal"):
            assert_refused(proc, words, f"{kind}: {name}")
            assert sha(copy) == before, f"{kind}: {name} changed the file"
        else:
            assert proc.returncode == 0, f"{kind}: {name}: {proc.stderr}"


@pytest.mark.parametrize("kind", list(DAMAGE) + list(CONFIG_DAMAGE))
def test_the_reading_functions_raise_one_usage_error(kind, good, killed, tmp_path):
    """In a fresh interpreter (a hang is caught by the timeout): UsageError or a result, nothing else."""
    bad, words = make(kind, good, killed, tmp_path)
    before = sha(bad)
    code = textwrap.dedent(f"""
        import json, time
        from mpibench import store
        from mpibench.analysis.load import load_run
        from mpibench.errors import UsageError
        out = {{}}
        calls = {{"open_run": lambda p: store.open_run(p).close(), "load_run": load_run,
                  "read_raw": lambda p: store.read_raw(p, 0, 10), **{{n: getattr(store, n) for n in (
                  "read_tasks", "read_hosts", "read_attrs", "read_config", "read_log", "read_energy_trace",
                  "read_scaling")}}}}
        for name, call in calls.items():
            start = time.monotonic()
            try:
                call({str(bad)!r})
                out[name] = ["ok", ""]
            except UsageError as err:
                out[name] = ["UsageError", str(err)]
            out[name].append(time.monotonic() - start)
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=mpi_env(), cwd=ROOT,
                          timeout=TIMEOUT)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    result = json.loads(proc.stdout)
    refusing = ("read_config",) if kind in CONFIG_DAMAGE else ("read_tasks", "load_run") if kind.startswith(
        ("column", "half")) else result  # a damaged column, or a cut past the recorded end, is met when read
    for name in refusing:
        kind_, message, _ = result[name]
        assert kind_ == "UsageError" and says(message, words) and "\n" not in message, (name, result[name])
        assert message.startswith(repr(str(bad))), (name, message)
    for name, (_, _, seconds) in result.items():
        assert seconds < 10, (name, seconds)
    assert sha(bad) == before


def test_optimal_refuses_a_damaged_source_before_creating_its_output(good, killed, tmp_path):
    bad, words = make("column header overwritten", good, killed, tmp_path)
    proc = cli("mpibench.run", "--optimal", bad, "--output", tmp_path / "new.h5")
    assert_refused(proc, words, "--optimal")
    assert not (tmp_path / "new.h5").exists()


# ---------------------------------------------------------------- what is not damage


def test_a_killed_writers_file_is_read_and_recovered(killed, good, tmp_path):
    copy = tmp_path / "killed.h5"
    shutil.copyfile(killed, copy)
    for args in (("mpibench.analyze", copy, "--out", tmp_path / "out"), ("mpibench.analyze", "--compare", good, copy)):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
    assert cli("mpibench.recover", copy).returncode == 0
    assert copy.read_bytes()[11] & 0x05 == 0  # rebuilt: a closed file
    assert cli("mpibench.analyze", "--compare", good, copy).returncode == 0


def test_a_live_file_is_never_taken_for_a_damaged_one(tmp_path):
    """A writer commits in a loop while this reads along: every read succeeds; then it is killed mid-loop."""
    from mpibench.store import read_attrs, read_tasks

    path = tmp_path / "live.h5"
    writer = subprocess.Popen([sys.executable, "-c", writer_code(path, "live")], env=mpi_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "committed", writer.stderr.read()
        seen, deadline = [], time.monotonic() + 3
        while time.monotonic() < deadline:
            seen.append(len(read_tasks(path)["task_id"]))
            assert read_attrs(path)["format"] == "mpibench"
        assert seen[-1] > seen[0] >= 2, seen  # it really was growing
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=TIMEOUT)
    assert cli("mpibench.analyze", path, "--out", tmp_path / "out").returncode == 0
    proc = cli("mpibench.recover", path)
    assert proc.returncode == 0, proc.stderr


def test_superblock_checksum_is_hdf5s(good):
    assert lookup3(b"") == 0xDEADBEEF and lookup3(b"Four score and seven years ago") == 0x17770551
    head = good.read_bytes()[:48]
    assert lookup3(head[:44]) == int.from_bytes(head[44:48], "little")


# ---------------------------------------------------------------- recover where it cannot write


def _unshare_works() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


def _in_private_mount(setup: str, command: list[str]) -> subprocess.CompletedProcess:
    """`command` after `setup` (mounts) in a private mount namespace of an unprivileged user namespace."""
    script = f"{setup} && exec {' '.join(map(repr, command))}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          env=mpi_env(), cwd=ROOT, timeout=TIMEOUT)


def test_recover_in_a_read_only_directory_refuses_and_touches_nothing(killed, tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    path = directory / "killed.h5"
    shutil.copyfile(killed, path)
    before = sha(path)
    command = [sys.executable, "-m", "mpibench.recover", str(path)]
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, env=mpi_env(), cwd=ROOT, timeout=TIMEOUT)
        finally:
            directory.chmod(0o755)
    elif _unshare_works():  # root writes anywhere: a read-only mount is what stops it
        proc = _in_private_mount(f"mount --bind -o ro {directory} {directory}", command)
    else:
        pytest.skip("running as root without user namespaces: no directory is read-only")
    assert_refused(proc, "read-only", "recover in a read-only directory")
    assert sha(path) == before and sorted(p.name for p in directory.iterdir()) == ["killed.h5"]


@pytest.mark.skipif(not _unshare_works(), reason="needs an unprivileged mount namespace for a tiny file system")
def test_recover_on_a_full_disk_refuses_and_cleans_up(killed, tmp_path):
    directory = tmp_path / "small"
    directory.mkdir()
    size = killed.stat().st_size + (64 << 10)  # room for the file, not for its rebuilt copy
    check = (f"cp {killed} {directory}/killed.h5 && sha256sum {directory}/killed.h5 > {directory}.sum && "
             f"{sys.executable} -m mpibench.recover {directory}/killed.h5; rc=$?; "
             f"sha256sum -c --quiet {directory}.sum && ls -A {directory} && exit $rc")
    proc = _in_private_mount(f"mount -t tmpfs -o size={size} tmpfs {directory}", ["sh", "-c", check])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "No space left" in lines[0], proc.stderr
    assert proc.stdout.split() == ["killed.h5"], proc.stdout  # unchanged, and no temporary copy left


def test_open_run_names_the_file_and_read_config_parses_it(good):
    assert read_config(good)["sweep"]["batch_sizes"] == [1, 2]
    with open_run(good) as f:
        assert f.attrs["format"] == "mpibench"
    with pytest.raises(UsageError, match="no such file"):
        open_run(good.with_name("nope.h5"))
