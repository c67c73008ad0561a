"""The `deepsmote` command line: each command's own flags in its --help, configs by name and by path, bad
command lines as one `error:` line with exit code 2, and two calls in one process. (Runs of the jobs
themselves are tested in tests/test_jobs_*.py.)"""

from __future__ import annotations

import csv
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deepsmote_jax import cli, configs
from deepsmote_jax.export import export_classifier
from deepsmote_jax.jobs.serving import load_serving
from deepsmote_jax.models.classifiers import build_classifier
from deepsmote_jax.train.classifier import predict_proba

REPO = pathlib.Path(__file__).resolve().parents[1]
# A flag of each command that no other command has (None: the command's only own flag is --config).
OWN_FLAG = {
  "pipeline": "--stage",
  "train-autoencoder": "--[no]resume",
  "generate": "--copy_originals",
  "train-classifier": "--synthetic",
  "evaluate": "--val_images",
  "predict": "--threshold",
  "export": "--platforms",
  "summary": None,
}


def _flag_names(help_text: str) -> set[str]:
  return {line.split()[0].split("=")[0] for line in help_text.splitlines() if line.startswith("  --")}


def _run(*args, cwd=REPO):
  return subprocess.run(
    [sys.executable, "-m", "deepsmote_jax.cli", *args], capture_output=True, text=True, timeout=120, cwd=cwd
  )


def test_overview_lists_every_command_once_in_a_subprocess():
  proc = _run("--help")
  assert proc.returncode == 0, proc.stderr
  listed = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ") and line.split()]
  assert listed == list(OWN_FLAG) == list(cli.COMMANDS)
  assert "default" in proc.stdout and "--config.<section>.<key>" in proc.stdout


@pytest.mark.parametrize("name", list(OWN_FLAG))
def test_each_command_help_shows_its_own_flags(name, capsys):
  cli.main([name, "--help"])
  out = capsys.readouterr().out
  assert out.startswith(f"usage: deepsmote {name} ")
  names = _flag_names(out)
  assert "--[no]verbose" in names
  if OWN_FLAG[name]:
    assert OWN_FLAG[name] in names
  others = {flag for other, flag in OWN_FLAG.items() if other != name and flag}
  assert not names & others, names & others
  assert "--out" not in names and "--data" not in names  # one name per setting: --workdir, --images


def test_one_name_per_setting():
  helps = {name: _flag_names(cli.command_help(c)) for name, c in cli.COMMANDS.items()}
  everything = set().union(*helps.values())
  for old in ("--out", "--data", "--k", "--positive", "--sampling_strategy", "--kind", "--target_recall", "--resize"):
    assert old not in everything, old
  for name in ("generate", "evaluate", "predict", "export"):
    assert {"--model", "--workdir"} <= helps[name]
  assert "--images" in helps["evaluate"] and "--images" in helps["predict"]


def test_pipeline_help_names_the_stages_in_a_subprocess():
  proc = _run("pipeline", "--help")
  assert proc.returncode == 0, proc.stderr
  assert "data, autoencoder_<penalty>, generate_<penalty>, classifiers, report" in proc.stdout
  assert "--stage" in proc.stdout and "--copy_originals" not in proc.stdout


def _parsed_config(value: str, *overrides: str):
  return cli._parse(cli.COMMANDS["summary"], ["--config", value, *overrides]).config


@pytest.mark.parametrize(
  "name,path",
  [
    ("default", "configs/default.py"),
    ("amoled_dent_200:local", "configs/amoled_dent_200.py:local"),
    ("magnetic_tile:blowhole", "configs/magnetic_tile.py:blowhole"),
  ],
)
def test_a_config_by_name_is_the_config_by_path(name, path, monkeypatch):
  monkeypatch.chdir(REPO)
  by_name, by_path = _parsed_config(name), _parsed_config(path)
  assert by_name.to_dict() == by_path.to_dict()
  assert configs.resolve(path) == path  # the checkout's file is used as given
  assert _parsed_config(f"--config={name}".split("=", 1)[1]).to_dict() == by_name.to_dict()


def test_a_config_path_works_outside_the_checkout_and_overrides_apply(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  c = _parsed_config("configs/default.py:local", "--config.generate.k_neighbors=3")
  assert c.generate.k_neighbors == 3 and c.train.epochs == 2
  own = tmp_path / "mine.py"
  own.write_text((configs.DIR / "default.py").read_text())
  assert _parsed_config(str(own)).to_dict() == _parsed_config("default").to_dict()


@pytest.mark.parametrize(
  "args,message",
  [
    (["no-such-command"], "error: unknown command 'no-such-command'"),
    ([], "error: no command given"),
    (["generate", "--config", "default", "--model", "m"], "error: --workdir is required"),
    (["pipeline"], "error: --config is required"),
    (["pipeline", "--config", "no_such_config"], "error: --config no_such_config: 'no_such_config' is neither"),
    (["pipeline", "--config", "default", "--config.train.epoch=3"], "error: unknown config key 'epoch'"),
    (["pipeline", "--config", "default", "--config.train.epochs=many"], "error: flag --config.train.epochs=many"),
    (["pipeline", "--config", "magnetic_tile:free"], "choose the defect class"),
    (["generate", "--config", "default", "--out", "x"], "error: Unknown command line flag 'out'"),
    (["summary", "--config", "default", "extra"], "error: unexpected arguments ['extra']"),
    (["predict", "--model", "/no/such/model", "--images", ".", "--workdir", "w"], "error: exported model directory"),
  ],
)
def test_bad_command_lines_are_one_error_line_and_exit_code_2(args, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(args)
  err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
  assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_errors_in_a_subprocess_have_no_traceback_unless_verbose(tmp_path):
  proc = _run("bogus")
  assert proc.returncode == 2 and proc.stderr.startswith("error: unknown command") and "Traceback" not in proc.stderr
  bad = ["pipeline", "--config", "default", "--config.data.source=folder", f"--config.data.root={tmp_path / 'none'}"]
  proc = _run(*bad, f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith("error: config.data.root=")
  proc = _run(*bad, f"--workdir={tmp_path / 'w'}", "--verbose")
  assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_main_runs_twice_in_one_process(capsys, monkeypatch):
  monkeypatch.chdir(REPO)
  for _ in range(2):
    cli.main(["summary", "--config", "default"])
    cli.main(["summary", "--config", "configs/amoled_dent_200.py", "--config.model.channels=1"])
  out = capsys.readouterr().out
  assert out.count("tiny_64: 64x64x1") == 2 and out.count("amoled_dent_200: 200x200x1") == 2
  for _ in range(2):  # a flag given in one call does not leak into the next
    with pytest.raises(SystemExit):
      cli.main(["pipeline", "--config", "default", "--config.data.source=folder", "--config.data.root="])
  assert capsys.readouterr().err.count("error: config.data.root is empty") == 2


def test_old_script_and_alias_are_the_new_command(capsys):
  proc = subprocess.run(
    [sys.executable, str(REPO / "scripts" / "generate.py"), "--help"], capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0 and proc.stdout.startswith("usage: deepsmote generate ")
  cli.run_pipeline_main(["--help"])
  assert capsys.readouterr().out.startswith("usage: deepsmote pipeline ")


def test_predict_and_export_round_trip_through_the_command(tmp_path, capsys):
  """`deepsmote predict` and `deepsmote export` on an exported classifier: the CSV's scores are the model's,
  the StableHLO export reloads to the same probabilities, a second export into the same folder is refused."""
  model = build_classifier("small_cnn", 2, in_channels=1, seed=1)
  export_classifier(model, tmp_path / "model", name="small_cnn", class_names=["NG", "OK"], image_size=32, in_channels=1)
  images = np.random.default_rng(0).integers(0, 256, (3, 32, 32), dtype=np.uint8)
  (tmp_path / "imgs").mkdir()
  for i, im in enumerate(images):
    Image.fromarray(im).save(tmp_path / "imgs" / f"p{i}.png")
  model_dir, out = str(tmp_path / "model"), str(tmp_path / "pred")
  cli.main(["predict", "--model", model_dir, "--images", str(tmp_path / "imgs"), "--workdir", out])
  rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
  want = predict_proba(model, images[..., None], in_channels=1)
  np.testing.assert_allclose([float(r["p_NG"]) for r in rows], want[:, 0], rtol=1e-5)
  cli.main(["export", "--model", model_dir, "--workdir", str(tmp_path / "served"), "--savedmodel", "no"])
  predict, info = load_serving(tmp_path / "served")
  np.testing.assert_allclose(predict(images[..., None]), want, atol=1e-6)
  assert info["class_names"] == ["NG", "OK"] and (tmp_path / "served" / "MODEL_CARD.md").is_file()
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.main(["export", "--model", model_dir, "--workdir", str(tmp_path / "served"), "--savedmodel", "no"])
  err = capsys.readouterr().err
  assert e.value.code == 2 and err.startswith("error: ") and "exists" in err and "Traceback" not in err
