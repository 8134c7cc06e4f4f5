"""The commands: installed as phd-* scripts, reachable under their earlier `python -m` names, one
convention (required flags marked, expected failures as one `error:` line, no traceback)."""
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

COMMANDS = ("train", "generate", "evaluate", "prepare", "tokenizer", "hf")
BIN = os.path.dirname(sys.executable)


def _run(args, **kw):
  return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_is_a_script_and_keeps_its_old_module_name(name):
  script = _run([os.path.join(BIN, f"phd-{name}"), "--helpshort"])
  old = _run([sys.executable, "-m", f"phd_jax.{name}", "--helpshort"])
  new = _run([sys.executable, "-m", f"phd_jax.cli.{name}", "--helpshort"])
  assert "Traceback" not in script.stderr + old.stderr + new.stderr
  flag_lines = lambda text: sorted(l.strip() for l in text.splitlines()
                                   if l.strip().startswith("--"))
  assert flag_lines(script.stdout) and flag_lines(script.stdout) == flag_lines(old.stdout) \
      == flag_lines(new.stdout)  # the same flags under every name
  assert script.stdout.lstrip().startswith(f"phd-{name}:")  # the command's own help text


def test_eval_data_is_a_script_with_its_own_help():
  script = _run([os.path.join(BIN, "phd-eval-data"), "--helpshort"])
  module = _run([sys.executable, "-m", "phd_jax.cli.eval_data", "--helpshort"])
  assert script.stdout.lstrip().startswith("phd-eval-data:") and "Traceback" not in script.stderr
  assert "--cache_dir" in script.stdout and "--wheel" in script.stdout
  assert "--cache_dir" in module.stdout


@pytest.mark.parametrize("name, required", [("train", "workdir"), ("generate", "workdir"),
                                            ("evaluate", "workdir"), ("prepare", "out"),
                                            ("tokenizer", "input"), ("hf", "workdir")])
def test_a_missing_required_flag_is_named(name, required):
  p = _run([os.path.join(BIN, f"phd-{name}")])
  assert p.returncode != 0 and f"--{required}" in p.stderr and "Traceback" not in p.stderr


def test_expected_failures_are_one_error_line(tmp_path):
  p = _run([os.path.join(BIN, "phd-train"), f"--workdir={tmp_path / 'new'}"])
  assert p.returncode == 1 and "Traceback" not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith("error: --config is required")
  assert not os.path.exists(tmp_path / "new" / "checkpoints")
  p = _run([os.path.join(BIN, "phd-evaluate"), f"--workdir={tmp_path}", "--out=r.json",
            "--tasks=,"])
  assert p.returncode == 1 and p.stderr.strip() == "error: --tasks is empty (task names, comma " \
                                                   "separated, or 'paper')"
  p = _run([os.path.join(BIN, "phd-hf"), "convert", f"--workdir={tmp_path}"])
  assert p.returncode == 1 and "error: usage: phd-hf import" in p.stderr


def test_evaluate_takes_out_and_its_earlier_name_output():
  help_text = _run([os.path.join(BIN, "phd-evaluate"), "--helpfull"]).stdout
  assert "--out:" in help_text and "--output:" in help_text  # the alias
