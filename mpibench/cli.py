"""Command-line flags generated from the config models, so `--help` and the YAML never disagree."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mpibench import config as C
from mpibench.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a UsageError (one line, exit 2) instead of usage + exit."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: {message} (see --help)")


@dataclass(frozen=True)
class ConfigFlag:
    path: tuple[str, ...]  # e.g. ("sweep", "batch_sizes")
    flag: str
    field: FieldInfo

    @property
    def dest(self) -> str:
        return "cfg__" + "__".join(self.path)

    @property
    def is_list(self) -> bool:
        return get_origin(self.field.annotation) is list

    @property
    def is_bool(self) -> bool:
        return self.field.annotation is bool


def config_flags() -> list[ConfigFlag]:
    """One flag per leaf field of Config, in declaration order."""
    flags = []

    def walk(model: type[BaseModel], prefix: tuple[str, ...]):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, prefix + (name,))
                continue
            extra = field.json_schema_extra or {}
            flag = extra.get("flag") or "--" + name.replace("_", "-")
            flags.append(ConfigFlag(prefix + (name,), flag, field))

    walk(C.Config, ())
    return flags


def flag_for(path: tuple[str, ...]) -> str | None:
    for f in config_flags():
        if f.path == path:
            return f.flag
    return None


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    groups: dict[str, Any] = {}
    for f in config_flags():
        section = f.path[0] if len(f.path) > 1 else "run"
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        extra = f.field.json_schema_extra or {}
        names = [f.flag, *extra.get("aliases", [])]
        default = f.field.default
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        help_text = f"{f.field.description} ({_range(f.field)}default: {shown})".replace("%", "%%")
        if f.is_bool:
            group.add_argument(*names, dest=f.dest, action="store_true", default=None, help=help_text)
        else:
            choices = get_args(f.field.annotation) if get_origin(f.field.annotation) is Literal else None
            group.add_argument(*names, dest=f.dest, default=None, choices=choices or None,
                               metavar=_metavar(f), help=help_text)


def _range(field: FieldInfo) -> str:
    """`range: 0 < x <= 86400; ` from a numeric field's bounds (a list's from its items' bounds)."""
    metadata = list(field.metadata)
    if get_origin(field.annotation) is list:
        (item,) = get_args(field.annotation)
        metadata += [m for a in get_args(item)[1:] for m in getattr(a, "metadata", [a])]
    bounds = {name: getattr(m, name) for m in metadata for name in ("gt", "ge", "lt", "le") if hasattr(m, name)}
    if not bounds:
        return ""
    n = {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in bounds.items()}
    low = f"{n['ge']} <= " if "ge" in n else f"{n['gt']} < " if "gt" in n else ""
    high = f" <= {n['le']}" if "le" in n else f" < {n['lt']}" if "lt" in n else ""
    return f"range: {low}x{high}; "


def _metavar(f: ConfigFlag) -> str:
    if f.is_list:
        return "A,B,..."
    ann = f.field.annotation
    ann = next((a for a in get_args(ann) if a is not type(None)), ann)  # X | None -> X
    if ann in (int, float):
        return ann.__name__.upper()
    return "PATH" if "Path" in str(ann) else "VALUE"


def overrides(ns: argparse.Namespace) -> dict:
    """The nested dict of config values given on the command line (only those given)."""
    out: dict = {}
    for f in config_flags():
        value = getattr(ns, f.dest, None)
        if value is None:
            continue
        if f.is_list:
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        node = out
        for part in f.path[:-1]:
            node = node.setdefault(part, {})
        node[f.path[-1]] = value
    return out


def load_config(config_path: str | None, ns: argparse.Namespace) -> C.Config:
    """YAML file (if any) with command-line flags on top, validated."""
    base = C.load_yaml(config_path) if config_path else {}
    cli = overrides(ns)
    try:
        return C.build(C.merge(base, cli), source="config")
    except UsageError as err:
        raise UsageError(_with_flag(str(err), cli)) from None


def _with_flag(message: str, cli: dict) -> str:
    """Name the flag too when the offending value came from the command line."""
    for f in config_flags():
        dotted = ".".join(f.path)
        node: Any = cli
        for part in f.path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and message.startswith(f"config: {dotted} "):
            return message.replace(f"config: {dotted} ", f"{f.flag} ({dotted}) ", 1)
    return message


def main_guard(main):
    """Run a CLI main(): UsageError -> one line on stderr, exit 2."""

    def wrapped(argv=None) -> int:
        try:
            return main(argv)
        except UsageError as err:
            if launcher_rank() == 0:  # every rank may see the same bad flag; one says so
                print(f"error: {err}", file=sys.stderr)
            return err.exit_code

    return wrapped


def launcher_rank() -> int:
    """This process's rank as the MPI launcher set it (before MPI is initialised), else 0."""
    for var in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def launcher_size() -> int:
    """How many ranks the MPI launcher started (before MPI is initialised), else 1."""
    for var in ("OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", "SLURM_NTASKS"):
        if var in os.environ:
            return int(os.environ[var])
    return 1


def check_location(path: Path, flag: str = "--output") -> None:
    """The path can become a file: not a directory, and its nearest existing directory is writable."""
    path = Path(path)
    if path.exists() and path.is_dir():
        raise UsageError(f"{flag}: {str(path)!r} is a directory; give a file path")
    _check_writable(path.parent if str(path.parent) else Path("."), path, flag)


def check_directory(path: Path, flag: str) -> None:
    """The path is, or can become, a directory we can write to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag}: {str(path)!r} is a file; give a directory")
    _check_writable(path, path, flag)


def _nearest_existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _check_writable(directory: Path, path: Path, flag: str) -> None:
    """`directory`, or its nearest existing parent, is a directory this process can write to."""
    existing = _nearest_existing(directory)
    if not existing.is_dir() or not _writable(existing):
        raise UsageError(f"{flag}: cannot write to directory {str(existing)!r} "
                         f"(for {str(path)!r}); choose a writable location")


def _check_exists(path: Path, *, overwrite: bool, resume: bool) -> None:
    if path.exists() and not (overwrite or resume):
        raise UsageError(f"--output: {str(path)!r} already exists; pass --overwrite to replace it, "
                         "--resume to complete it, or choose another path")
    if resume and not path.exists():
        raise UsageError(f"--resume: {str(path)!r} does not exist")


def claim_output(path: Path, *, overwrite: bool, resume: bool, need_bytes: int, jsonl: Path | None = None):
    """Every check on a run's outputs, then the writer's claim on the results file (a WriterClaim).

    In an order that can never destroy data: the JSON-lines path and the free space are checked before
    anything is created, and a file with a live writer is refused naming that writer, whatever the flags.
    """
    from mpibench.claim import WriterClaim

    path, flag = Path(path), "--resume" if resume else "--output"
    check_location(path, flag)
    if jsonl is not None:
        check_location(jsonl, "--jsonl")
        if Path(jsonl).exists() and not (overwrite or resume):
            raise UsageError(f"--jsonl: {str(jsonl)!r} already exists; pass --overwrite or choose another path")
    check_space(path, need_bytes, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    claim = WriterClaim.acquire(path, flag)
    try:
        _check_exists(path, overwrite=overwrite, resume=resume)
    except UsageError:
        claim.release()
        raise
    return claim


def check_space(path: Path, need_bytes: int, flag: str = "--output") -> None:
    """Refuse a location with less free space than the run is expected to write."""
    import shutil

    existing = _nearest_existing(Path(path).parent)
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise UsageError(f"{flag}: {str(existing)!r} has {free / 2**20:.1f} MiB free, and this run is expected "
                         f"to write about {need_bytes / 2**20:.1f} MiB; free some space or choose another location")


def _writable(directory: Path) -> bool:
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".mpibench-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True
