"""Config validation, its messages, CLI overrides and the generated --help."""

import pytest

from mpibench import config as C
from mpibench.cli import claim_output, config_flags, load_config
from mpibench.errors import UsageError
from mpibench.run import build_parser

from conftest import ROOT


def parse(*argv, config=None):
    ns = build_parser().parse_args(list(argv))
    return load_config(config, ns)


def test_defaults_are_valid():
    cfg = C.Config()
    assert cfg.model.name == "distilbert-base-uncased"
    assert cfg.sweep.precisions == ["fp32"]


def test_cli_overrides_yaml(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("sweep:\n  batch_sizes: [1, 2]\n  precisions: [fp32]\nmeasure:\n  min_time_s: 5\n")
    cfg = parse("--batch-sizes", "4,8,16", "--min-time", "0.5", "--device", "cuda:1", config=y)
    assert cfg.sweep.batch_sizes == [4, 8, 16]
    assert cfg.measure.min_time_s == 0.5
    assert cfg.sweep.devices == ["cuda:1"]
    assert cfg.sweep.precisions == ["fp32"]  # from the file, untouched


@pytest.mark.parametrize("argv, needles", [
    (["--batch-sizes", "0,2"], ["--batch-sizes", "sweep.batch_sizes", "'0'", "allowed: >= 1"]),
    (["--batch-sizes", "-3"], ["--batch-sizes", "'-3'", "allowed: >= 1"]),
    (["--batch-sizes", "two"], ["--batch-sizes", "'two'", "integer"]),
    (["--precisions", "fp8"], ["--precisions", "'fp8'", "allowed: fp32, bf16, fp16"]),
    (["--devices", "tpu"], ["--devices", "'tpu'", "allowed: cpu, cuda, cuda:N"]),
    (["--device", "cuda:x"], ["'cuda:x'", "cuda:N"]),
    (["--energy", "magic"], ["--energy", "magic", "invalid choice"]),
    (["--model", "no-such-model"], ["--model", "'no-such-model'", "distilbert-tiny"]),
    (["--target-ci", "2"], ["--target-ci", "allowed: < 1"]),
    (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
    # runs that would never end, or end in nonsense
    (["--warmup-s", "inf"], ["--warmup-s", "'inf'", "allowed: a finite number"]),
    (["--min-time", "inf", "--max-time", "inf"], ["--min-time", "'inf'", "finite"]),
    (["--max-time", "nan"], ["--max-time", "'nan'", "finite"]),
    (["--warmup", "1000000000000"], ["--warmup", "'1000000000000'", "allowed: <= 1000000"]),
    (["--rates-sps", "nan"], ["--rates-sps", "'nan'", "finite"]),
    (["--rates-sps", "1e-9"], ["--rates-sps", "1e-09", "measure.max_time_s = 30", "allowed: rates >= 2.13/s"]),
    (["--min-time", "5", "--max-time", "0.2"], ["--min-time", "= 5", "max_time_s = 0.2",
                                                "allowed: min_time_s <= max_time_s"]),
    (["--warmup-s", "40"], ["--warmup-s", "= 40", "allowed: warmup_s <= max_time_s"]),
    (["--seed", "-1"], ["--seed", "'-1'", "allowed: >= 0"]),
    (["--batch-sizes", "100000000000000000000"], ["--batch-sizes", "allowed: <= 65536"]),
    (["--stop-grace-s", "inf"], ["--stop-grace-s", "finite"]),
    (["--task-timeout", "0"], ["--task-timeout", "'0'", "allowed: > 0"]),
    (["--batch-sizes", ","], ["--batch-sizes", "at least 1 item"]),
    # every list refuses duplicates alike
    (["--batch-sizes", "1,2,1"], ["--batch-sizes", "'1,2,1'", "1 given more than once"]),
    (["--scenarios", "offline,offline"], ["--scenarios", "offline given more than once"]),
    (["--backends", "eager,eager"], ["--backends", "eager given more than once"]),
    (["--attention", "sdpa,sdpa"], ["--attention", "sdpa given more than once"]),
    (["--rates-sps", "5,5.0"], ["--rates-sps", "5.0 given more than once"]),
    (["--devices", "cpu,cpu"], ["--devices", "cpu given more than once"]),
    (["--threads", "0,0"], ["--threads", "0 given more than once"]),
])
def test_bad_values_name_field_value_and_allowed(argv, needles):
    with pytest.raises(UsageError) as err:
        parse(*argv)
    msg = str(err.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_unknown_yaml_field_lists_allowed(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("sweep:\n  batch_size: [1]\n")
    with pytest.raises(UsageError, match=r"unknown field 'sweep.batch_size'; allowed here: devices, batch_sizes"):
        parse(config=y)


def test_yaml_value_error_names_field(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("sweep:\n  batch_sizes: [4, 0]\n")
    with pytest.raises(UsageError, match=r"^config: sweep.batch_sizes = 0: allowed: >= 1$"):
        parse(config=y)


def test_a_config_that_is_not_utf8_is_one_line(tmp_path):
    y = tmp_path / "latin1.yaml"
    y.write_bytes("# r\xe9sum\xe9\nsweep:\n  batch_sizes: [1]\n".encode("latin-1"))
    with pytest.raises(UsageError, match=r"^--config: '.*latin1.yaml' is not UTF-8 text \(byte 3: b'\\xe9'\)"):
        parse(config=y)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sweep: [1, 2\n  x: }")
    with pytest.raises(UsageError, match="is not valid YAML"):
        parse(config=bad)
    with pytest.raises(UsageError, match="does not exist"):
        parse(config=tmp_path / "none.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(UsageError, match="must hold a mapping"):
        parse(config=scalar)


def check_output(path, overwrite):
    claim_output(path, overwrite=overwrite, resume=False, need_bytes=0).release()


def test_output_checks(tmp_path):
    existing = tmp_path / "a.h5"
    existing.write_bytes(b"data")
    with pytest.raises(UsageError, match="already exists; pass --overwrite"):
        check_output(existing, overwrite=False)
    check_output(existing, overwrite=True)
    assert existing.read_bytes() == b"data"  # checked and claimed, never touched
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(UsageError, match="cannot write to directory"):
        check_output(not_a_dir / "out.h5", overwrite=False)
    with pytest.raises(UsageError, match="is a directory"):
        check_output(tmp_path, overwrite=False)
    check_output(tmp_path / "new" / "deeper" / "x.h5", overwrite=False)
    assert not (tmp_path / "new" / "deeper" / "x.h5").exists()


def test_every_field_has_a_flag_with_its_description():
    help_text = build_parser().format_help()
    for f in config_flags():
        assert f.flag in help_text
        assert f.field.description, f.path
    for flag in ("--config", "--output", "--model", "--device", "--devices", "--batch-sizes", "--seq-lens",
                 "--precisions", "--mixed-precision", "--threads", "--warmup", "--min-time", "--max-time",
                 "--target-ci", "--overwrite", "--dry-run", "--jsonl"):
        assert flag in help_text, flag
    assert "95% CI of the median" in " ".join(help_text.split())


def test_shipped_configs_validate():
    for y in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = C.build(C.load_yaml(y), source=str(y))
        assert cfg.sweep.batch_sizes, y


def test_mixed_precision_flag():
    cfg = parse("--mixed-precision", "--precisions", "fp32")
    assert cfg.sweep.mixed_precision is True
