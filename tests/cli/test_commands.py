"""The commands: installed as phd-* scripts, reachable under their earlier `python -m` names (the
README promises them), one convention (required flags marked, expected failures as one `error:`
line, no traceback)."""
import os

import pytest

from tests import commands

pytestmark = pytest.mark.integration
COMMANDS = ("train", "generate", "evaluate", "prepare", "tokenizer", "hf")


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_is_a_script_and_keeps_its_old_module_name(name):
  script = commands.phd(f"phd-{name}", "--helpshort", expect=None)
  old = commands.module(f"phd_jax.{name}", "--helpshort", expect=None)
  assert "Traceback" not in script.stderr + old.stderr
  flag_lines = lambda text: sorted(l.strip() for l in text.splitlines()
                                   if l.strip().startswith("--"))
  assert flag_lines(script.stdout) and flag_lines(script.stdout) == flag_lines(old.stdout)
  assert script.stdout.lstrip().startswith(f"phd-{name}:")  # the command's own help text


def test_eval_data_is_a_script_with_its_own_help():
  script = commands.phd("phd-eval-data", "--helpshort", expect=None)
  module = commands.module("phd_jax.cli.eval_data", "--helpshort", expect=None)  # the __main__
  assert script.stdout.lstrip().startswith("phd-eval-data:") and "Traceback" not in script.stderr
  assert "--cache_dir" in script.stdout and "--wheel" in script.stdout  # branch of cli/common.py
  assert "--cache_dir" in module.stdout


@pytest.mark.parametrize("name, required", [("train", "workdir"), ("generate", "workdir"),
                                            ("evaluate", "workdir"), ("prepare", "out"),
                                            ("tokenizer", "input"), ("hf", "workdir")])
def test_a_missing_required_flag_is_named(name, required):
  p = commands.phd(f"phd-{name}", expect=None)
  assert p.returncode != 0 and f"--{required}" in p.stderr and "Traceback" not in p.stderr


def test_expected_failures_are_one_error_line(tmp_path):
  p = commands.phd("phd-train", f"--workdir={tmp_path / 'new'}", expect=1)
  assert "Traceback" not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith("error: --config is required")
  assert not os.path.exists(tmp_path / "new" / "checkpoints")
  p = commands.phd("phd-evaluate", f"--workdir={tmp_path}", "--out=r.json", "--tasks=,", expect=1)
  assert p.stderr.strip() == "error: --tasks is empty (task names, comma separated, or 'paper')"
  p = commands.phd("phd-hf", "convert", f"--workdir={tmp_path}", expect=1)
  assert "error: usage: phd-hf import" in p.stderr


def test_evaluate_takes_out_and_its_earlier_name_output():
  help_text = commands.phd("phd-evaluate", "--helpfull", expect=None).stdout  # absl: exit 1
  assert "--out:" in help_text and "--output:" in help_text  # the alias
