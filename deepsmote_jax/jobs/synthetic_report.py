"""The report's section on synthetic images: are DeepSMOTE's images new, faithful, diverse and recognised?

For each penalty's generated dataset (`<work>/generate_<penalty>/dataset`) and each class it over-samples,
against that class's real training images (the images SMOTE interpolated from):

* memorisation -- each synthetic image's nearest real training image (RMS pixel distance) and whether it is a
  near copy (`synthetic_quality.memorisation`; per image in `synthetic_nearest_<penalty>.csv`, the closest
  pairs in `synthetic_nearest_<penalty>_<class>.png`);
* k-NN precision / recall (k = 3) and diversity in a feature space: the penultimate (pooled) features of the
  pipeline's real-only classifier (method `none`, first seed), or pixels downsampled to 32x32 where that
  export is absent (the section says which);
* the share of synthetic images of a class that the real-only classifier assigns to it (for NG: calls NG),
  beside the same share on the real validation images of the class;
* collapsed (near-constant) sets, flagged at the top of the section;
* the autoencoders' validation reconstruction quality (PSNR / SSIM per class of the exported state).

`run(config, work, out) -> (markdown, summary)`; figures and CSVs are written to `out`; the Markdown is empty
when the config runs no DeepSMOTE.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from deepsmote_jax import files, visualize
from deepsmote_jax import synthetic_quality as sq
from deepsmote_jax.export import load_classifier
from deepsmote_jax.jobs import prepare_data
from deepsmote_jax.jobs.generate import read_synthetic
from deepsmote_jax.train import loop
from deepsmote_jax.train.classifier import predict_proba, to_model_input

PIXEL_SIZE = 32  # side of the pixel feature space used without a real-only classifier
BATCH = 64  # images per classifier call


class FeatureSpace:
  """Features for precision / recall: the real-only classifier's pooled features, or 32x32 pixels."""

  def __init__(self, classifier_dir: pathlib.Path | None):
    self.model, self.meta, self.where = None, None, None
    if classifier_dir is not None and (classifier_dir / "meta.json").is_file():
      self.model, self.meta = load_classifier(classifier_dir)
      self.where = classifier_dir
      graphdef, params, stats = loop.split_model(self.model)
      headless = loop.merge_model(graphdef, params, stats)
      headless.head.dense = None  # the head's pooled input: the penultimate features
      self._features = loop.split_model(headless)
      self._features = (self._features[0], *jax.device_put(self._features[1:]))

  @property
  def description(self) -> str:
    if self.model is None:
      return (
        f"pixels downsampled to {PIXEL_SIZE}x{PIXEL_SIZE} (no real-only classifier export found: the "
        "pipeline's `none` method was not run)"
      )
    return f"penultimate (pooled) features of the real-only classifier `{self.meta['name']}` ({self.where})"

  def features(self, images_u8: np.ndarray) -> np.ndarray:
    if self.model is None:
      return np.asarray(_downsample(jnp.asarray(images_u8)), np.float64).reshape(len(images_u8), -1)
    graphdef, params, stats = self._features
    fn = functools.partial(_pooled, graphdef, int(self.meta["in_channels"]), params, stats)
    return loop.batched(fn, _pad(images_u8), BATCH)[: len(images_u8)].astype(np.float64)

  def proba(self, images_u8: np.ndarray) -> np.ndarray | None:
    if self.model is None or not len(images_u8):
      return None
    proba = predict_proba(self.model, _pad(images_u8), in_channels=int(self.meta["in_channels"]), batch_size=BATCH)
    return proba[: len(images_u8)]


def _pad(images_u8: np.ndarray) -> np.ndarray:
  """Images padded to whole batches of `BATCH` (one compiled shape for every class and set)."""
  images_u8 = np.asarray(images_u8)
  extra = -len(images_u8) % BATCH
  return np.concatenate([images_u8, np.repeat(images_u8[-1:], extra, axis=0)]) if extra else images_u8


@functools.partial(jax.jit, static_argnums=(0, 1))
def _pooled(graphdef, in_channels, params, stats, x):
  return loop.merge_model(graphdef, params, stats)(to_model_input(x, in_channels), train=False)


@jax.jit
def _downsample(images_u8):
  x = images_u8.astype(jnp.float32) / 255.0
  return jax.image.resize(x, (x.shape[0], PIXEL_SIZE, PIXEL_SIZE, x.shape[-1]), "linear", antialias=True)


def _synthetic_files(dataset_dir: pathlib.Path) -> list[str]:
  """The synthetic rows' file names, in `read_synthetic`'s order."""
  with (dataset_dir / "manifest.csv").open() as f:
    return [r["file"] for r in csv.DictReader(f) if str(r.get("synthetic")) in ("1", "True", "true")]


def assess_penalty(penalty: str, ds_dir: pathlib.Path, train, val, space: FeatureSpace, out: pathlib.Path) -> dict:
  """Every over-sampled class of one generated dataset: metrics, the per-image CSV, the closest-pairs figure."""
  synth, labels = read_synthetic(ds_dir, train.class_names)
  if not len(synth):
    return {"classes": {}, "note": "no synthetic images"}
  if synth.shape[1:] != train.images.shape[1:]:
    return {"classes": {}, "note": f"synthetic images are {synth.shape[1:]}, training images {train.images.shape[1:]}"}
  names = _synthetic_files(ds_dir)
  rows, classes = [], {}
  for ci, cname in enumerate(train.class_names):
    s_idx, r_idx = np.flatnonzero(labels == ci), np.flatnonzero(train.labels == ci)
    if not len(s_idx) or not len(r_idx):
      continue
    s_img, r_img = synth[s_idx], train.images[r_idx]
    summary, per_image = sq.assess(
      sq.unit_pixels(r_img), sq.unit_pixels(s_img), space.features(r_img), space.features(s_img)
    )
    proba = space.proba(s_img)
    summary["called_own_class"] = None if proba is None else sq.share_called(proba, ci)
    real_val = val.images[val.labels == ci] if val is not None else np.zeros((0,))
    proba = space.proba(real_val)
    summary["real_validation_called_own_class"] = None if proba is None else sq.share_called(proba, ci)
    classes[cname] = summary
    for j, i in enumerate(s_idx):
      near = r_idx[per_image["nearest"][j]]
      rows.append(
        [names[i], cname, train.files[near], f"{per_image['distance'][j]:.6f}", int(per_image["memorised"][j])]
      )
    closest = np.argsort(per_image["distance"], kind="stable")[:8]
    visualize.side_by_side(
      s_img[closest], r_img[per_image["nearest"][closest]], out / f"synthetic_nearest_{penalty}_{cname}.png"
    )
  text = io.StringIO()
  csv.writer(text, lineterminator="\n").writerows(
    [["file", "class", "nearest_real_file", "nearest_rms", "memorised"]] + rows
  )
  files.atomic_write_text(out / f"synthetic_nearest_{penalty}.csv", text.getvalue())
  return {"classes": classes}


def _autoencoder_validation(work: pathlib.Path, penalty: str) -> dict | None:
  path = work / f"autoencoder_{penalty}" / "train_summary.json"
  if not path.is_file():
    return None
  return json.loads(path.read_text()).get("validation")


def _synthesis(ds_dir: pathlib.Path) -> str | None:
  """How the generated images were made (their summary.json; folders from before the setting: 'decode')."""
  path = ds_dir / "summary.json"
  return json.loads(path.read_text()).get("synthesis", "decode") if path.is_file() else None


_SYNTHESIS_TEXT = {
  "decode": "the decoded synthetic codes (the paper's)",
  "residual": "each synthetic image is its real base image plus the decoded change from the base's code "
  "(detail the decoder loses is the base's; at small gaps the images are near copies of their bases)",
}


def run(config, work: pathlib.Path, out: pathlib.Path) -> tuple[str, dict]:
  """The section (Markdown) and its numbers (JSON-able) for every penalty of `config.pipeline.penalties`."""
  work, out = pathlib.Path(work), pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  train = prepare_data.load_split(work / "data", "train")
  val_file = work / "data" / "validation.npz"
  val = prepare_data.load_split(work / "data", "validation") if val_file.is_file() else None
  seeds = list(config.pipeline.seeds)
  classifier_dir = work / "classifiers" / f"none_seed{seeds[0]}" / "best" if seeds else None
  space = FeatureSpace(classifier_dir)
  penalties = {}
  for p in config.pipeline.penalties if "deepsmote" in config.pipeline.methods else []:
    ds_dir = work / f"generate_{p}" / "dataset"
    result = (
      assess_penalty(p, ds_dir, train, val, space, out)
      if (ds_dir / "manifest.csv").is_file()
      else {"classes": {}, "note": f"no generated dataset at {ds_dir}"}
    )
    result["autoencoder_validation"] = _autoencoder_validation(work, p)
    result["synthesis"] = _synthesis(ds_dir)
    penalties[p] = result
  collapsed = [
    {"penalty": p, "class": c, "reasons": s["reasons"]}
    for p, r in penalties.items()
    for c, s in r["classes"].items()
    if s["collapsed"]
  ]
  summary = {
    "feature_space": "classifier" if space.model is not None else f"pixels_{PIXEL_SIZE}",
    "classifier": str(space.where) if space.where else None,
    "collapsed": collapsed,
    "penalties": penalties,
  }
  md = _markdown(summary, space.description, config.pipeline.get("positive_class") or None) if penalties else ""
  return md, files.json_safe(summary)


def _pct(v) -> str:
  return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.0f} %"


def _markdown(summary: dict, space: str, positive: str | None) -> str:
  md = ["## Synthetic images", ""]
  if summary["collapsed"]:
    md += [
      f"**Collapsed synthetic set: {s['penalty']} / {s['class']}** -- {'; '.join(s['reasons'])}."
      for s in summary["collapsed"]
    ] + [""]
  elif summary["penalties"]:
    md += ["No synthetic set is flagged as collapsed.", ""]
  made = {p: r["synthesis"] for p, r in summary["penalties"].items() if r.get("synthesis")}
  md += [f"Synthesis ({p}): `{m}` -- {_SYNTHESIS_TEXT.get(m, m)}." for p, m in made.items()]
  md += [
    "",
    f"Feature space for precision / recall and diversity: {space}.",
    "",
    "| penalty | class | synthetic | real | nearest real RMS (median) | real-to-real RMS (median) | memorised "
    "| precision | recall | diversity | called its class (synthetic / real validation) |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for p, r in summary["penalties"].items():
    if r.get("note"):
      md.append(f"| {p} | - | {r['note']} | | | | | | | | |")
    for c, s in r["classes"].items():
      loo = s["real_loo_median_rms"]
      md.append(
        f"| {p} | {'**' + c + '**' if c == positive else c} | {s['synthetic']} | {s['real']} "
        f"| {s['nearest_rms']['median']:.4f} | {'n/a' if loo is None else f'{loo:.4f}'} | {_pct(s['memorised_share'])} "
        f"| {_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['diversity_ratio'])} "
        f"| {_pct(s['called_own_class'])} / {_pct(s['real_validation_called_own_class'])} |"
      )
  md += [
    "",
    f"Memorised: nearest real training image of the class closer than the {100 * sq.MEMORISATION_QUANTILE:.0f} % "
    "quantile of the real images' leave-one-out nearest distances (RMS on [0, 1] pixels). Precision / recall: "
    f"k-NN manifolds, k = {sq.K} (Kynkaanniemi et al. 2019). Diversity: mean pairwise feature distance of the "
    f"synthetic set over the real set's; collapsed below {100 * sq.DIVERSITY_FLOOR:.0f} % or with recall "
    f"< {sq.RECALL_FLOOR}. Closest pairs: synthetic_nearest_<penalty>_<class>.png (synthetic left, real right); "
    "every image: synthetic_nearest_<penalty>.csv.",
    "",
  ]
  md += _autoencoder_table(summary["penalties"])
  return "\n".join(md)


def _autoencoder_table(penalties: dict) -> list[str]:
  rows = [(p, r["autoencoder_validation"]) for p, r in penalties.items() if r.get("autoencoder_validation")]
  if not rows:
    return []
  md = [
    "### Autoencoder reconstructions of the validation split (exported state)",
    "",
    "| penalty | step (selected by) | PSNR dB | SSIM | per class PSNR / SSIM |",
    "|---|---|---|---|---|",
  ]
  for p, v in rows:
    per_class = ", ".join(
      f"{c} {_num(v['psnr_per_class'].get(c), 1)} / {_num(v['ssim_per_class'].get(c), 3)}" for c in v["psnr_per_class"]
    )
    md.append(
      f"| {p} | {v.get('step')} ({v.get('select_metric')}) | {_num(v['psnr'], 2)} | {_num(v['ssim'], 3)} "
      f"| {per_class} |"
    )
  return md + ["", "PSNR and SSIM: means over classes of the per-class means (each class weighs the same).", ""]


def _num(v, digits: int) -> str:
  return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"
