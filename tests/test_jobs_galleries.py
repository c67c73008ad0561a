"""deepsmote_jax.jobs.galleries: which test images a run got wrong, their gallery, labelled triplets."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from deepsmote_jax.jobs import galleries


def _rows(threshold: bool) -> list[dict]:
  # (file, actual, argmax, flagged at the threshold)
  spec = [
    ("NG/a.png", "NG", "NG", "True"),
    ("NG/b.png", "NG", "OK", "True"),  # missed by argmax, caught by the threshold
    ("NG/c.png", "NG", "OK", "False"),  # missed by both
    ("OK/d.png", "OK", "OK", "True"),  # overkill at the threshold only
    ("OK/e.png", "OK", "NG", "True"),  # overkill by both
    ("OK/f.png", "OK", "OK", "False"),
  ]
  rows = [{"file": "OK/val.png", "split": "validation", "actual": "OK", "argmax": "NG", "NG_at_threshold": "True"}]
  rows += [
    {"file": f, "split": "test", "actual": a, "argmax": m, "NG_at_threshold": t if threshold else ""}
    for f, a, m, t in spec
  ]
  return rows


def test_wrong_images_at_the_threshold_else_argmax():
  at_thr = galleries.wrong_images(_rows(True), "NG")
  assert at_thr["decision"] == "threshold"
  assert at_thr["missed"] == ["NG/c.png"] and at_thr["overkill"] == ["OK/d.png", "OK/e.png"]
  assert at_thr["n_positive"] == 3 and at_thr["n_negative"] == 3
  argmax = galleries.wrong_images(_rows(False), "NG")
  assert argmax["decision"] == "argmax"
  assert argmax["missed"] == ["NG/b.png", "NG/c.png"] and argmax["overkill"] == ["OK/e.png"]


class _Lookup(galleries.ImageLookup):
  def __init__(self, images: dict):
    self.by_file, self.roots = dict(images), []


def test_gallery_is_capped_and_not_written_when_empty(tmp_path):
  files = [f"OK/{i:03d}.png" for i in range(30)]
  lookup = _Lookup({f: np.full((8, 8, 1), 10 * i % 255, np.uint8) for i, f in enumerate(files)})
  path = tmp_path / "gallery.png"
  g = galleries.write_gallery(files + ["OK/missing.png"], lookup, path, "title")
  assert g["count"] == 31 and g["shown"] == galleries.MAX_IMAGES and g["path"] == str(path) and path.is_file()
  empty = galleries.write_gallery([], lookup, path, "title")
  assert empty["path"] is None and empty["count"] == 0 and not path.exists()  # a stale one is removed
  assert galleries.write_gallery(["OK/missing.png"], lookup, path, "t")["not_found"] == ["OK/missing.png"]


def test_image_lookup_reads_files_under_a_root(tmp_path):
  (tmp_path / "OK").mkdir()
  Image.fromarray(np.full((4, 5), 7, np.uint8)).save(tmp_path / "OK" / "x.png")
  lookup = galleries.ImageLookup(tmp_path / "no_work", "test", (str(tmp_path),))
  assert lookup("OK/x.png").shape == (4, 5, 1) and lookup("OK/y.png") is None


def test_triplets_follow_the_manifest_provenance(tmp_path):
  ds = tmp_path / "dataset"
  (ds / "NG").mkdir(parents=True)
  rows = [{"file": "NG/r0.png", "class": "NG", "synthetic": 0, "base_file": "", "neighbor_file": "", "gap": ""}]
  for i in range(3):
    Image.fromarray(np.full((6, 6), 50 * i, np.uint8)).save(ds / "NG" / f"synthetic_NG_{i:05d}.png")
    rows.append(
      {
        "file": f"NG/synthetic_NG_{i:05d}.png",
        "class": "NG",
        "synthetic": 1,
        "base_file": "NG/r0.png",
        "neighbor_file": "NG/r1.png" if i else "NG/gone.png",  # the first one's neighbour is not found
        "gap": "0.5",
      }
    )
  with (ds / "manifest.csv").open("w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  lookup = _Lookup({"NG/r0.png": np.zeros((6, 6, 1), np.uint8), "NG/r1.png": np.full((6, 6, 1), 255, np.uint8)})
  out = galleries.write_triplets(ds, lookup, tmp_path, "reference")
  assert list(out) == ["NG"] and out["NG"].endswith("triplets_reference_NG.png")
  with Image.open(out["NG"]) as im:
    assert 2 * 220 < im.height < 3 * 220 and im.width == 3 * 220  # two base | synthetic | neighbour rows
