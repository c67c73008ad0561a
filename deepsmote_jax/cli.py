"""The `deepsmote` command: one command line over the jobs, absl flags and ml_collections configs.

  deepsmote --help                 the commands, one line each
  deepsmote <command> --help       that command's own flags
  deepsmote pipeline --config default --workdir runs/default

Every command parses its flags into its own `absl.flags.FlagValues` (a fresh one per call, so `main` can run
twice in one process), calls one job function of `deepsmote_jax.jobs` and prints its result. One name per
setting: `--workdir` is the output folder, `--model` an exported model folder, `--images` an input image
folder; whatever a config holds is set as `--config.<section>.<key>=value`. `--config` takes a packaged config
by name (`default`, `amoled_dent_200:local`, `magnetic_tile:blowhole`) or a path (`configs/default.py`).
Bad input ends as one line `error: ...` with exit code 2 (`--verbose`: the traceback).
`deepsmote-pipeline` is `deepsmote pipeline`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import textwrap
from collections.abc import Callable

from absl import flags
from ml_collections import config_flags

from deepsmote_jax import compilation_cache, config_lib, configs
from deepsmote_jax.jobs import (
  boundary,
  evaluate,
  generate,
  pipeline,
  predict,
  serving,
  train_autoencoder,
  train_classifier,
)
from deepsmote_jax.train import distributed

PROG = "deepsmote"
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")
PREDICTIONS_CSV = "predictions.csv"  # what `deepsmote predict` writes into --workdir


class UsageError(Exception):
  """A command line that cannot run: reported as `error: ...`, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Command:
  name: str
  summary: str  # one line, for `deepsmote --help`
  usage: str  # the synopsis after `deepsmote <name>`
  doc: str  # examples and what the command writes
  define: Callable[[flags.FlagValues], None]  # the command's own flags (--config and --verbose are added)
  run: Callable[[flags.FlagValues], None]  # the parsed flags (config: fv.config) -> calls a job, prints
  config: str | None = None  # "required" / "optional": whether the command takes --config
  required: tuple[str, ...] = ()  # flags that must be given


# ----------------------------------------------------------------------------------------------- flags


def _string(fv, name: str, help_: str, default=None) -> None:
  flags.DEFINE_string(name, default, help_, flag_values=fv)


def _bool(fv, name: str, help_: str, default: bool = False) -> None:
  flags.DEFINE_bool(name, default, help_, flag_values=fv)


def _enum(fv, name: str, choices, help_: str) -> None:
  """An enum flag whose default is the first choice."""
  flags.DEFINE_enum(name, list(choices)[0], list(choices), help_, flag_values=fv)


def _config_help(cmd: Command) -> str:
  need = "required" if cmd.config == "required" else "optional"
  return (
    f"({need}) A packaged config by name ({', '.join(configs.names())}) or a path to a config file, "
    "with ':<arg>' for a variant (default:local, magnetic_tile:blowhole). Any setting: --config.<section>.<key>=value."
  )


# ---------------------------------------------------------------------------------------------- commands


def _stage_list() -> str:
  """The pipeline's stages in order (jobs/pipeline.stages), one autoencoder/generate pair per penalty."""
  c = config_lib.autoencoder_config(preset="tiny_64", channels=1, epochs=1, batch_size=1)
  c.pipeline.methods = tuple(pipeline.METHODS)
  c.pipeline.penalties = ("<penalty>",)
  return ", ".join(pipeline.stage_names(c))


def _define_pipeline(fv) -> None:
  _string(fv, "workdir", "Output folder (default: config.workdir). Rerunning resumes it.")
  _string(fv, "stage", "Run only this stage (its inputs must be finished); the stages after it are invalidated.")
  _bool(fv, "progress", "Show progress bars.", True)


def _run_pipeline(fv) -> None:
  compilation_cache.enable()
  workdir = fv.workdir or fv.config.workdir
  summary = pipeline.run_pipeline(fv.config, workdir, progress=fv.progress, only=fv.stage)
  print(pipeline.summary_text(summary, workdir))


def _split_flag(fv) -> None:
  _string(
    fv,
    "split",
    "A data-stage folder of an earlier run (<workdir>/data of train-autoencoder, train-classifier or the pipeline): "
    "its train/validation/test split is used, checked against the config. Default: the split is made with the "
    "config (config.split, same seed = same split) into <workdir>/data.",
  )


def _values(fv, *names: str) -> dict:
  """{name: value} of the flags `names`, passed on as keyword arguments of the same names."""
  return {name: getattr(fv, name) for name in names}


def _define_train_autoencoder(fv) -> None:
  _string(fv, "workdir", "Output folder (default: config.workdir).")
  _split_flag(fv)
  _bool(fv, "resume", "Continue from the latest checkpoint in --workdir (same settings and data).")
  _bool(fv, "overwrite", "Discard the checkpoints of an earlier run in --workdir.")
  _bool(fv, "progress", "Show progress bars.", True)


def _run_train_autoencoder(fv) -> None:
  compilation_cache.enable()
  summary = train_autoencoder.train_and_export(
    fv.config, fv.workdir or fv.config.workdir, **_values(fv, "resume", "overwrite", "progress", "split")
  )
  print(
    f"trained {summary['final_step']} steps in {summary['wall_s']:.1f} s; "
    f"final loss {summary.get('loss', float('nan')):.4f}; exported to {summary['export']}"
  )
  val = summary.get("validation")
  if val:
    print(
      f"exported the state of step {val['step']} (best validation {val['select_metric']}): "
      f"PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.3f} (means over classes)"
    )


def _define_generate(fv) -> None:
  _string(fv, "model", "(required) Exported encoder/decoder folder (<train-autoencoder workdir>/autoencoder).")
  _string(fv, "workdir", "(required) Output folder, the balanced dataset (must be absent or empty, see --overwrite).")
  _split_flag(fv)
  _enum(
    fv,
    "copy_originals",
    list(generate.COPY_MODES),
    "The original images: copy / link the files, write them as PNG at the model's size, or leave them out.",
  )
  _bool(fv, "strict", "Error (not warning) for a class with config.generate.k_neighbors images or fewer.")
  _bool(fv, "overwrite", "Replace an existing non-empty --workdir.")
  flags.DEFINE_integer("batch_size", 256, "Images per encode/decode call.", lower_bound=1, flag_values=fv)


def _run_generate(fv) -> None:
  summary = generate.generate_from_config(
    fv.config, fv.model, fv.workdir, **_values(fv, "split", "strict", "copy_originals", "batch_size", "overwrite")
  )
  print(generate.format_counts(summary))
  written = sum(summary["counts_written"].values())
  print(f"wrote {written} images to {summary['out_dir']} in {summary['seconds']['total']:.1f} s")


def _define_train_classifier(fv) -> None:
  _string(fv, "workdir", "Output folder (default: config.workdir + '_classifier').")
  _string(fv, "synthetic", "A balanced dataset folder written by `deepsmote generate`: its synthetic images are added.")
  _split_flag(fv)
  _enum(fv, "method", list(train_classifier.BASELINES), "Imbalance baseline applied to the training split.")
  flags.DEFINE_integer("seed", 0, "Seed of the classifier run.", flag_values=fv)
  _bool(fv, "progress", "Show progress bars.", True)


def _run_train_classifier(fv) -> None:
  compilation_cache.enable()
  info = train_classifier.train_classifier_job(
    fv.config,
    fv.workdir or fv.config.workdir + "_classifier",
    synthetic_dir=fv.synthetic,
    split_dir=fv.split,
    **_values(fv, "method", "seed", "progress"),
  )
  test = info["test"]
  print(f"best model: {info['model']} (step {info['best_step']}); test: acc {test.get('accuracy')}, ", end="")
  print(f"ACSA {test.get('acsa')}; report: {info['evaluation']}/report.md")


def _define_evaluate(fv) -> None:
  _string(fv, "model", "(required) Exported classifier folder (<train-classifier workdir>/classifier/best).")
  _string(fv, "images", "(required) Labelled test images, one subfolder per class.")
  _string(fv, "val_images", "Labelled validation images (one subfolder per class) for the recall-first threshold.")
  _string(fv, "workdir", "(required) Output folder for metrics.json, report.md and the figures.")


def _from_config(config, keys: dict[str, str]) -> dict:
  """{argument: config value} for `keys` = {argument: 'section.key'}; nothing without a config."""
  if config is None:
    return {}
  out = {}
  for arg, path in keys.items():
    section, key = path.split(".")
    out[arg] = config[section][key]
  return out


def _run_evaluate(fv) -> None:
  kw = _from_config(
    fv.config,
    {
      "positive_class": "pipeline.positive_class",
      "target_recall": "pipeline.target_recall",
      "resize": "data.resize",
      "on_error": "data.on_error",
    },
  )
  if "positive_class" in kw:
    kw["positive_class"] = kw["positive_class"] or None
  result = evaluate.evaluate_folder(fv.model, fv.images, fv.workdir, val_folder=fv.val_images, **kw)
  print(f"accuracy {result.get('accuracy')}, ACSA {result.get('acsa')}; report: {fv.workdir}/report.md")


def _define_predict(fv) -> None:
  _string(fv, "model", "(required) Exported classifier folder (<train-classifier workdir>/classifier/best).")
  _string(fv, "images", "(required) Folder of unlabelled images (searched recursively).")
  _string(fv, "workdir", f"(required) Output folder: {PREDICTIONS_CSV} is written into it.")
  flags.DEFINE_float(
    "threshold",
    None,
    "P(positive class) at or above which an image is flagged (default: the one saved with the model).",
    flag_values=fv,
  )


def _run_predict(fv) -> None:
  kw = _from_config(
    fv.config, {"positive_class": "pipeline.positive_class", "resize": "data.resize", "on_error": "data.on_error"}
  )
  out = pathlib.Path(fv.workdir) / PREDICTIONS_CSV
  s = predict.predict_folder(fv.model, fv.images, out, threshold=fv.threshold, **kw)
  flagged = (
    f"; {s['flagged_at_threshold']} flagged {s['positive_class']} at P >= {s['threshold_p']:.4g} "
    f"({s['threshold_source']})"
    if s["threshold_p"] is not None
    else f"; no threshold ({s['threshold_source']}): argmax only"
  )
  print(f"scored {s['scored']} of {s['images']} images ({s['skipped']} skipped){flagged}; wrote {s['csv']}")


def _define_export(fv) -> None:
  _string(fv, "model", "(required) Exported classifier folder (<train-classifier workdir>/classifier/best).")
  _string(fv, "workdir", "(required) Output folder for the serving forms (model.stablehlo, saved_model/, ...).")
  flags.DEFINE_list(
    "platforms", list(serving.PLATFORMS), "Platforms the StableHLO export is lowered for.", flag_values=fv
  )
  _enum(fv, "savedmodel", ["auto", "yes", "no"], "Also write a TensorFlow SavedModel (auto: when importable).")
  _bool(fv, "overwrite", "Replace an existing --workdir.")


def _run_export(fv) -> None:
  savedmodel = {"auto": "auto", "yes": True, "no": False}[fv.savedmodel]
  record = serving.export_serving(
    fv.model, fv.workdir, platforms=tuple(fv.platforms), savedmodel=savedmodel, overwrite=fv.overwrite
  )
  checked = ", ".join(f"{k} {v:.1e}" for k, v in record.get("checked_max_abs_diff", {}).items())
  print(f"wrote {fv.workdir}: {', '.join(sorted(os.listdir(fv.workdir)))}; max |probability difference|: {checked}")


def _define_summary(fv) -> None:
  del fv  # the model is config.model (preset, channels, out_channels)


def _run_summary(fv) -> None:
  print(train_autoencoder.layer_summary(fv.config))


COMMANDS = {
  c.name: c
  for c in (
    Command(
      "pipeline",
      "The main job: DeepSMOTE, a balanced set, classifiers with and without it, the report.",
      "--config NAME|PATH [--workdir DIR] [--stage NAME]",
      "  deepsmote pipeline --config default --workdir runs/default\n"
      "  deepsmote pipeline --config amoled_dent_200 --config.data.root=my_images --workdir runs/dents\n"
      "Rerunning the same command resumes: finished stages are reused while their settings and inputs are\n"
      "unchanged. Stages, in order (--stage NAME): {stages}.",
      _define_pipeline,
      _run_pipeline,
      config="required",
    ),
    Command(
      "train-autoencoder",
      "Train a DeepSMOTE encoder/decoder on config.data and export it (<workdir>/autoencoder).",
      "--config NAME|PATH [--workdir DIR] [--split DIR] [--resume | --overwrite]",
      "  deepsmote train-autoencoder --config amoled_dent_200 --config.data.root=my_images --workdir runs/ae\n"
      "Splits the data (config.split, config.imbalance) into <workdir>/data, or uses --split DIR, and trains on\n"
      "the training split only; the exported state is the best on the validation split by\n"
      "config.train.select_metric. Writes data/, checkpoints/, metrics.jsonl, autoencoder/ (the export `generate`\n"
      "reads), reconstructions.png and training_data.json (the split and the files trained on).",
      _define_train_autoencoder,
      _run_train_autoencoder,
      config="required",
    ),
    Command(
      "generate",
      "Balance an image set with a trained encoder/decoder: originals plus synthetic images.",
      "--config NAME|PATH --model DIR --workdir DIR [--split DIR] [--copy_originals MODE] [--overwrite]",
      "  deepsmote generate --config amoled_dent_200 --config.data.root=my_images --split runs/ae/data \\\n"
      "      --model runs/ae/autoencoder --workdir runs/balanced --config.generate.k_neighbors=3\n"
      "Over-samples the TRAINING split only: of --split DIR (the autoencoder's, checked against the config), or\n"
      "of the split made with the config and kept as <workdir>/data. Reads config.generate (sampling_strategy:\n"
      "auto | minority | 'not majority' | 'not minority' | all | a ratio | '{\"NG\": 200}'; kind; k_neighbors;\n"
      "seed; synthesis: decode | residual, the base image plus the decoded change). Writes <workdir>/<class>/*,\n"
      "manifest.csv (base and neighbour files, their split), grids/,\n"
      "summary.json (data_split: the split's folder and manifest digest).",
      _define_generate,
      _run_generate,
      config="required",
      required=("model", "workdir"),
    ),
    Command(
      "train-classifier",
      "Train one defect classifier (optionally with synthetic images) and evaluate it on the test split.",
      "--config NAME|PATH [--workdir DIR] [--split DIR] [--synthetic DIR] [--method NAME] [--seed N]",
      "  deepsmote train-classifier --config amoled_dent_200 --config.data.root=my_images \\\n"
      "      --config.classifier.name=inception_v3 --workdir runs/cls --split runs/ae/data --synthetic runs/balanced\n"
      "Uses the split of --split DIR (checked against the config) or splits the data (config.split) into\n"
      "<workdir>/data; the synthetic images' bases must be training images of that split. Keeps the best epoch\n"
      "by config.classifier.select_metric (<workdir>/classifier/best) and evaluates it on the test split\n"
      "(<workdir>/evaluation). config.classifier.weights: a .keras/.h5 file loaded before training.",
      _define_train_classifier,
      _run_train_classifier,
      config="required",
    ),
    Command(
      "evaluate",
      "Evaluate an exported classifier on a labelled image folder: metrics, report.md, figures.",
      "--model DIR --images DIR --workdir DIR [--val_images DIR] [--config NAME|PATH]",
      "  deepsmote evaluate --model runs/cls/classifier/best --images my_test_images --workdir runs/eval\n"
      "With --config: its pipeline.positive_class ('' for none), pipeline.target_recall, data.resize and\n"
      "data.on_error (without: NG, 0.98, resize, raise). With --val_images the recall-first threshold is\n"
      "chosen on them.",
      _define_evaluate,
      _run_evaluate,
      config="optional",
      required=("model", "images", "workdir"),
    ),
    Command(
      "predict",
      "Score a folder of unlabelled images with an exported classifier: one CSV row per file.",
      "--model DIR --images DIR --workdir DIR [--threshold P] [--config NAME|PATH]",
      f"  deepsmote predict --model runs/cls/classifier/best --images new_images --workdir runs/predict\n"
      f"Writes <workdir>/{PREDICTIONS_CSV}: file, status, P(class) per class, argmax, the decision at the\n"
      "threshold saved with the model (or --threshold). With --config: its pipeline.positive_class,\n"
      "data.resize and data.on_error (without: the model's saved positive class, resize, unreadable files skipped).",
      _define_predict,
      _run_predict,
      config="optional",
      required=("model", "images", "workdir"),
    ),
    Command(
      "export",
      "Write an exported classifier's serving forms (StableHLO, SavedModel), checked, with a model card.",
      "--model DIR --workdir DIR [--platforms cpu,cuda] [--savedmodel auto|yes|no] [--overwrite]",
      "  deepsmote export --model runs/cls/classifier/best --workdir runs/serving\n"
      "Writes model.stablehlo, saved_model/ (with TensorFlow), serving.json and MODEL_CARD.md.",
      _define_export,
      _run_export,
      required=("model", "workdir"),
    ),
    Command(
      "summary",
      "Print config.model's encoder/decoder: layers, output shapes, parameter counts (the paper's tables).",
      "--config NAME|PATH",
      "  deepsmote summary --config amoled_dent_200 --config.model.channels=1",
      _define_summary,
      _run_summary,
      config="required",
    ),
  )
}


# ------------------------------------------------------------------------------------------------- help


def _flag_help(fv: flags.FlagValues) -> list[str]:
  lines = []
  for name in fv:
    f = fv[name]
    if f.boolean:
      head = f"--[no]{name}"
    elif isinstance(f.parser, flags.EnumParser):
      head = f"--{name}={'|'.join(f.parser.enum_values)}"
    else:
      head = f"--{name}"
    text = f.help.split(">: ", 1)[-1] if isinstance(f.parser, flags.EnumParser) else f.help  # absl prefixes <a|b>
    if f.default not in (None, False):
      default = (
        ",".join(f.default) if isinstance(f.default, list) else str(f.default).lower() if f.boolean else f.default
      )
      text += f" (default: {default})"
    lines += ["  " + head, *textwrap.wrap(text, 116, initial_indent="      ", subsequent_indent="      ")]
  return lines


def command_help(cmd: Command) -> str:
  fv = _flag_values(cmd, [PROG])
  doc = cmd.doc.replace("{stages}", _stage_list()) if "{stages}" in cmd.doc else cmd.doc
  return "\n".join(
    [f"usage: {PROG} {cmd.name} {cmd.usage}", "", cmd.summary, "", doc, "", "flags:", *_flag_help(fv), ""]
  )


def overview() -> str:
  width = max(map(len, COMMANDS)) + 2
  return "\n".join(
    [
      f"usage: {PROG} <command> [flags]   ({PROG} <command> --help: that command's flags)",
      "",
      "DeepSMOTE (encoder/decoder + latent SMOTE) for imbalanced defect images.",
      "",
      "commands:",
      *(f"  {name:<{width}}{c.summary}" for name, c in COMMANDS.items()),
      "",
      "--config NAME[:ARG] takes a packaged config or a path to a config file; any setting of it is",
      "overridden with --config.<section>.<key>=value. Packaged: " + ", ".join(configs.names()) + ".",
      "",
    ]
  )


# ---------------------------------------------------------------------------------------------- parsing


def _define_distributed(fv: flags.FlagValues) -> None:
  """Every command's flags for running as one of several processes (hosts); see `_start_distributed`."""
  _string(fv, "coordinator_address", "Several processes: HOST:PORT of process 0, which hosts the coordinator.")
  flags.DEFINE_integer("num_processes", None, "Several processes: how many in all.", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "Several processes: this one's index in [0, num_processes).", flag_values=fv)
  _bool(fv, "distributed", "Several processes, detected from the cluster (Slurm, Open MPI, Cloud TPU); flags override.")
  flags.DEFINE_float(
    "coordinator_timeout_s",
    distributed.DEFAULT_TIMEOUT_S,
    "Several processes: seconds to wait for the coordinator and the other processes.",
    flag_values=fv,
  )


def _start_distributed(fv: flags.FlagValues) -> None:
  """Joins the other processes (jax.distributed) before the command touches JAX; nothing for one process."""
  distributed.initialize(
    fv.coordinator_address,
    fv.num_processes,
    fv.process_id,
    auto=fv.distributed,
    timeout_s=fv.coordinator_timeout_s,
  )


def _flag_values(cmd: Command, argv: list[str]) -> flags.FlagValues:
  """A fresh FlagValues with the command's flags; `argv` is what the config flag reads its overrides from."""
  fv = flags.FlagValues()
  if cmd.config:
    config_flags.DEFINE_config_file("config", None, _config_help(cmd), flag_values=fv, sys_argv=argv)
  cmd.define(fv)
  _define_distributed(fv)
  _bool(fv, "verbose", "Show the traceback of an error.")
  return fv


def _config_arg(args: list[str]) -> int:
  """Index in `args` of --config's value (-1: not given)."""
  for i, a in enumerate(args):
    if a == "--":
      break
    if a in ("--config", "-config"):
      return i + 1 if i + 1 < len(args) else -1
    if a.startswith(("--config=", "-config=")):
      return i
  return -1


def _resolve_config(cmd: Command, args: list[str]) -> list[str]:
  """`args` with --config's name resolved to a path (packaged configs by name)."""
  i = _config_arg(args)
  if i < 0:
    if cmd.config == "required":
      raise UsageError(
        f"--config is required, e.g. --config default or --config configs/default.py ({PROG} {cmd.name} --help)"
      )
    return args
  args = list(args)
  prefix, eq, value = args[i].partition("=") if args[i].startswith("-") else ("", "", args[i])
  args[i] = prefix + eq + configs.resolve(value)
  return args


def _error_line(e: BaseException) -> str:
  """One line for a parse error; a config file's own error is the last line of the traceback absl wraps."""
  text = str(e.args[0] if isinstance(e, (KeyError, AttributeError)) and e.args else e)
  if isinstance(e, AttributeError) and e.args and isinstance(e.args[0], KeyError):
    text = "unknown config key " + "; ".join(line.strip() for line in str(e.args[0].args[0]).splitlines())
  lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(e).__name__]
  if "Error whilst parsing config file" in text:
    return f"{lines[0].split(':', 1)[0]}: {lines[-1]}"
  return "; ".join(lines) if len(lines) <= 2 else lines[0]


def _parse(cmd: Command, args: list[str]) -> flags.FlagValues:
  if cmd.config:
    args = _resolve_config(cmd, args)
  argv = [f"{PROG} {cmd.name}", *args]
  fv = _flag_values(cmd, argv)
  rest = fv(argv)
  if rest[1:]:
    raise UsageError(f"unexpected arguments {rest[1:]} ({PROG} {cmd.name} --help lists the flags)")
  missing = [f"--{n}" for n in cmd.required if fv[n].value is None]
  if missing:
    verb = "is" if len(missing) == 1 else "are"
    raise UsageError(f"{' and '.join(missing)} {verb} required ({PROG} {cmd.name} --help)")
  return fv


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  raise SystemExit(2)


def run_command(cmd: Command, args: list[str]) -> None:
  """Parses `args` (the command's flags) and runs the command; errors end as one line and exit code 2."""
  head = args[: args.index("--")] if "--" in args else args
  if any(a in HELP_FLAGS for a in head):
    print(command_help(cmd))
    return
  verbose = any(a in ("--verbose", "-verbose", "--verbose=true", "--verbose=True") for a in head)
  boundary.quiet_logs()
  try:
    fv = _parse(cmd, args)
  except (UsageError, flags.Error, ValueError, TypeError, KeyError, AttributeError) as e:
    if verbose:
      raise
    _fail(_error_line(e))
  with boundary.user_errors(fv.verbose):
    _start_distributed(fv)
    cmd.run(fv)


def main(argv: list[str] | None = None) -> None:
  """`deepsmote <command> [flags]`; `argv` without the program name (default: sys.argv[1:])."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv:
    _fail(f"no command given; choose one of: {', '.join(COMMANDS)} ({PROG} --help)")
  name, args = argv[0], argv[1:]
  if name in HELP_FLAGS or name == "help":
    print(overview())
    return
  if name not in COMMANDS:
    _fail(f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)} ({PROG} --help)")
  run_command(COMMANDS[name], args)


def run_pipeline_main(argv: list[str] | None = None) -> None:
  """`deepsmote-pipeline [flags]`: the same as `deepsmote pipeline [flags]`."""
  main(["pipeline", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
  main()
