"""The README stays true: every column documented, its test command is what CI runs."""

import re

from conftest import ROOT
from mpibench.store import HOST_COLUMNS, TASK_COLUMNS

README = (ROOT / "README.md").read_text()


def test_every_column_is_documented():
    for name, _, _ in TASK_COLUMNS + HOST_COLUMNS:
        assert f"`{name}`" in README, name


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2
    assert "mpirun" in commands[0] and "configs/quick.yaml" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
