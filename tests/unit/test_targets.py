"""Targets (and evaluation splits) are typed where users type them: a wrong name fails at the command line with the
list, before anything starts; inside, a Target is the string it names (dict keys, paths, JSON, messages)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonrepo.cli import app
from tritonrepo.errors import SpecError
from tritonrepo.specs import DType, Tensor
from tritonrepo.targets import TARGETS, Target

CHOICES = "'cpu', 't4', 'a10g', 'l4', 'a100', 'h100'"


@pytest.mark.parametrize("argv", [["serve", "--target", "v100"], ["check", "--target", "v100"],
                                  ["perf", "sweep", "sbert", "-t", "v100"], ["export", "tensorrt", "--target", "v100"],
                                  ["package", "sagemaker", "sbert", "--target", "v100"]])
def test_a_wrong_target_fails_at_the_command_line_with_the_list(argv, tmp_path):
    result = CliRunner().invoke(app, [*argv, "--repository", str(tmp_path / "missing")] if argv[0] in (
        "serve", "check") else argv, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output  # usage error: the command's body never ran
    assert f"'v100' is not one of {CHOICES}" in result.output


@pytest.mark.parametrize("argv", [["eval", "ner", "--split", "train"], ["eval", "search", "--shape-split", "tst"]])
def test_an_evaluation_split_is_checked_at_the_command_line(argv):
    result = CliRunner().invoke(app, [*argv, "--url", "127.0.0.1:1"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output  # before any server is looked for
    assert f"'{argv[-1]}' is not a held-out CoNLL-2003 split: valid or test" in result.output


def test_a_target_is_the_string_it_names():
    assert Target.parse("a10g") is Target.A10G and TARGETS["a10g"] is TARGETS[Target.A10G]
    assert f"configs/{Target.L4}.pbtxt" == "configs/l4.pbtxt" and str(Path("x") / Target.T4) == "x/t4"
    assert json.dumps({Target.CPU: [Target.H100]}) == '{"cpu": ["h100"]}'
    assert Target.H100.hardware.plan_filename == "model.sm90.plan" and not Target.CPU.is_gpu
    with pytest.raises(SpecError, match=r"catalog: unknown target 'v100' \(one of: cpu, t4, a10g, l4, a100, h100\)"):
        Target.parse("v100", "catalog")


def test_a_tensor_dtype_is_typed_and_checked_where_it_is_read():
    assert Tensor(name="x", dtype="FP32", dims=(4,)).dtype is DType.FP32
    with pytest.raises(SpecError, match="tensor 'x': unknown dtype 'FLOAT'.*FP32"):
        Tensor(name="x", dtype="FLOAT", dims=(4,))
