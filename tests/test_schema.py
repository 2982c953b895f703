"""One declaration per dimension and column: everything else is derived from it, and the docs follow."""

import dataclasses

import pytest

from conftest import ROOT
from mpibench import schema
from mpibench.analysis import profile, table
from mpibench.analysis.plots import LINE, PANEL
from mpibench.result import SCALING_COLUMNS, TASK_COLUMNS, Result
from mpibench.task import CORE, DEFAULTS, DIMENSIONS, ROLE, Task, format_label


def test_docs_column_reference_is_the_generated_one():
    page = (ROOT / "docs" / "results-file.md").read_text()
    assert schema.with_reference(page) == page, "run: python -m mpibench.schema --write docs/results-file.md"


@pytest.mark.parametrize("name, columns", [(g, c) for g, _, c in schema.TABLES])
def test_every_table_declares_each_column_once_with_a_meaning(name, columns):
    names = [c.name for c in columns]
    assert len(names) == len(set(names)), name
    assert all(c.description and c.dtype in ("i8", "f8", "?", "str") for c in columns)


def test_dimensions_are_the_task_fields_that_identify_a_configuration():
    fields = {f.name: f for f in dataclasses.fields(Task)}
    assert DIMENSIONS == ("model", "device", "precision", "batch_size", "seq_len", "threads", "scenario",
                          "backend", "attention", "rate_sps", "workload")
    assert set(CORE) | set(DEFAULTS) == set(DIMENSIONS)
    assert all(DEFAULTS[d] == fields[d].default for d in DEFAULTS)
    task = Task(3, "m", "cpu", "bf16", 4, 64, 2, scenario="server", rate_sps=5.0)
    assert task.key == tuple(getattr(task, d) for d in DIMENSIONS)
    # planning-only fields are not stored; every stored one is a /tasks column, dimensions in /scaling too
    stored = [c.name for c in TASK_COLUMNS]
    assert "est_cost_s" not in stored and "time_scale" not in stored
    assert set(Task(0, "m", "cpu", "fp32", 1, 1, 1).columns()) <= set(stored)
    assert set(DIMENSIONS) <= {c.name for c in SCALING_COLUMNS}


def test_analysis_keys_follow_the_declaration():
    assert table.KEY == DIMENSIONS
    assert table.WORKLOAD == tuple(d for d in DIMENSIONS if ROLE[d] == "workload")
    assert profile.SERIES == tuple(d for d in DIMENSIONS if d != "batch_size")
    assert PANEL[0] == "device" and set(PANEL[1:]) == set(table.WORKLOAD)
    assert set(LINE) == {d for d in DIMENSIONS if ROLE[d] == "variant"}
    assert set(DIMENSIONS) == {*PANEL, *LINE, "batch_size"}


def test_a_row_carries_every_dimension_and_labels_omit_defaults():
    task = Task(7, "m", "cpu", "fp32", 8, 128, 0, scenario="server", rate_sps=20.0, stage="final")
    row = Result(task, "ok", 1, "node1").row()
    assert all(row[d] == getattr(task, d) for d in DIMENSIONS) and row["stage"] == "final"
    assert task.label() == "cpu fp32 bs=8 seq=128 threads=auto server rate=20/s [final]"
    plain = {**{d: getattr(task, d) for d in CORE}, **DEFAULTS, "threads": 2}
    assert format_label(plain) == "cpu fp32 bs=8 seq=128 threads=2 m"
    assert format_label({**plain, "attention": "eager", "rate_sps": float("nan")}, omit=("model",)) == \
        "cpu fp32 bs=8 seq=128 threads=2 attn=eager"


def test_units_are_read_from_names():
    units = {c.name: c.unit for c in TASK_COLUMNS}
    assert units["e2e_p50_ms"] == "ms" and units["throughput_sps"] == "samples/s"
    assert units["energy_j"] == "J" and units["measure_s"] == "s" and units["batch_size"] == ""
