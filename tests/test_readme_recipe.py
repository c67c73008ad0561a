"""README's stage-by-stage recipe runs as written and never leaks: the commands between `<!-- recipe` and
`<!-- /recipe -->` run in order (`python -m deepsmote_jax.cli ...`) on a tiny image folder with tiny config
overrides, and no test-split file reaches the autoencoder's training data or the synthetic set's bases."""

from __future__ import annotations

import csv
import json
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from test_jobs_pipeline import _write_images as write_dent_images

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# Appended to every command that takes --config: the recipe's shape at CPU-test size (about a minute).
TINY = [
  "--config.model.preset=micro_16",
  "--config.model.channels=1",
  "--config.train.epochs=2",
  "--config.train.batch_size=8",
  "--config.train.penalty_sample_size=8",
  "--config.train.steps_per_call=4",
  "--config.train.compute_dtype=float32",
  "--config.checkpoint.every_steps=0",
  "--config.split.ratios=(0.5,0.25,0.25)",
  "--config.generate.k_neighbors=3",
  "--config.classifier.name=small_cnn",
  "--config.classifier.epochs=2",
  "--config.classifier.batch_size=8",
  "--config.classifier.steps_per_call=4",
  "--config.classifier.max_shift=1",
  "--config.classifier.compute_dtype=float32",
  "--config.pipeline.bootstrap=50",
]


def recipe_commands(text: str) -> list[list[str]]:
  """The recipe block's commands, continuation lines joined, each split like a shell would."""
  m = re.search(r"<!-- recipe.*?-->\s*```bash\n(.*?)```\s*<!-- /recipe -->", text, re.S)
  assert m, f"no <!-- recipe --> ... <!-- /recipe --> block around a bash block in {README}"
  joined = m.group(1).replace("\\\n", " ")
  return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _write_images(root: pathlib.Path, counts: dict[str, int], seed: int) -> None:
  """16x16 images, NG with a dark round dent (the pipeline tests' writer)."""
  write_dent_images(root, counts=tuple(counts.items()), seed=seed)


def _run(args: list[str], cwd: pathlib.Path) -> None:
  assert args[0] == "deepsmote", args
  cmd = [sys.executable, "-m", "deepsmote_jax.cli", *args[1:]]
  if any(a == "--config" or a.startswith("--config=") for a in args):
    cmd += TINY
  cmd += ["--noprogress"] if args[1] in ("train-autoencoder", "train-classifier") else []
  done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, f"{shlex.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def test_recipe_commands_are_found():
  commands = recipe_commands(README.read_text())
  assert [c[1] for c in commands] == ["train-autoencoder", "generate", "train-classifier", "evaluate"]
  assert all("--split" in c for c in commands if c[1] in ("generate", "train-classifier"))


@pytest.mark.slow
def test_readme_recipe_runs_without_leaking(tmp_path):
  _write_images(tmp_path / "my_images", {"NG": 14, "OK": 40}, seed=0)
  _write_images(tmp_path / "my_test_images", {"NG": 4, "OK": 6}, seed=1)
  for args in recipe_commands(README.read_text()):
    _run(args, tmp_path)

  runs = tmp_path / "runs"
  manifest = json.loads((runs / "ae" / "data" / "split_manifest.json").read_text())
  test_files = set(manifest["splits"]["test"])
  held_out = test_files | set(manifest["splits"]["validation"])
  train_files = set(manifest["splits"]["train"])
  assert test_files and train_files

  # The autoencoder trained on the training split only (and was selected on the validation split).
  used = json.loads((runs / "ae" / "training_data.json").read_text())
  assert set(used["train_files"]) == train_files
  assert not set(used["train_files"]) & held_out
  assert not set(used["validation_files"]) & test_files

  # The synthetic set: bases, neighbours and copied originals all from the same split's training files.
  with open(runs / "balanced" / "manifest.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  synthetic = [r for r in rows if r["synthetic"] == "1"]
  assert synthetic
  sources = {r[k] for r in synthetic for k in ("base_file", "neighbor_file")}
  sources |= {r["source"] for r in rows if r["synthetic"] == "0"}
  assert sources <= train_files and not sources & test_files
  assert {r["split"] for r in rows} == {"train"}
  summary = json.loads((runs / "balanced" / "summary.json").read_text())
  digest = json.loads((runs / "ae" / "train_summary.json").read_text())["data_split"]["manifest_digest"]
  assert summary["data_split"]["split"] == "train" and summary["data_split"]["manifest_digest"] == digest

  # The classifier used that split (no split of its own) and evaluate wrote its report.
  assert not (runs / "cls" / "data").exists()
  assert (runs / "cls" / "evaluation" / "report.md").is_file()
  assert (runs / "eval" / "report.md").is_file()


def test_split_is_made_once_and_checked_against_the_config(tmp_path):
  """`--split DIR` is accepted only with the settings and images it was made from; a synthetic set whose bases
  are held-out images of the split is refused."""
  from test_jobs_pipeline import tiny_config

  from deepsmote_jax.jobs import prepare_data, stage
  from deepsmote_jax.jobs.train_classifier import check_synthetic

  _write_images(tmp_path / "imgs", {"NG": 14, "OK": 40}, seed=0)
  config = tiny_config(tmp_path / "imgs")
  data = prepare_data.ensure(config, tmp_path / "a")
  done = (data / stage.DONE).stat().st_mtime_ns
  assert prepare_data.ensure(config, tmp_path / "a") == data and (data / stage.DONE).stat().st_mtime_ns == done
  # The same settings in another workdir: the same split.
  again = prepare_data.ensure(config, tmp_path / "b")
  assert (again / "split_manifest.json").read_bytes() == (data / "split_manifest.json").read_bytes()
  assert prepare_data.check_split(config, data) == data
  bare = tiny_config(tmp_path / "imgs")
  bare.data.root = ""  # no image folder given: the split is taken as it is
  assert prepare_data.check_split(bare, data) == data
  other = tiny_config(tmp_path / "imgs")
  other.split.seed = 3
  with pytest.raises(ValueError, match=r"^--split .* was made with config\.split\.seed=0, the config has 3"):
    prepare_data.check_split(other, data)
  with pytest.raises(ValueError, match="not a finished data stage"):
    prepare_data.check_split(config, tmp_path / "imgs")
  _write_images(tmp_path / "imgs" / "extra", {"NG": 1}, seed=2)
  with pytest.raises(ValueError, match=r"made from other images than config\.data\.root="):
    prepare_data.check_split(config, data)

  split = prepare_data.split_record(data)
  train_file, test_file = split["splits"]["train"][0], split["splits"]["test"][0]
  synth = tmp_path / "synthetic"
  synth.mkdir()
  header = "file,class,synthetic,base_file,neighbor_file,gap,source,split\n"
  (synth / "manifest.csv").write_text(header + f"NG/s1.png,NG,1,{train_file},{train_file},0.5,,train\n")
  check_synthetic(synth, split)
  (synth / "manifest.csv").write_text(header + f"NG/s1.png,NG,1,{train_file},{test_file},0.5,,train\n")
  with pytest.raises(ValueError, match=r"^--synthetic .* a test image of the split"):
    check_synthetic(synth, split)
