"""Images left on disk until read (`FileImages`), the streamed `ImageSet` and the `config.data.stream` rule."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from deepsmote_jax.data import file_images, folder, image_io, sources
from deepsmote_jax.data.file_images import FileImages


@pytest.fixture(scope="module")
def png_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("lazy")
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (11, 20, 20, 1), dtype=np.uint8)
  folder.save_image_folder(images, np.arange(11) % 2, ["NG", "OK"], root)
  return root


def test_streamed_set_reads_the_same_images_as_the_decoded_one(png_root):
  loaded = folder.load_image_folder(png_root, image_size=12, channels=1)
  listed = folder.load_image_folder(png_root, image_size=12, channels=1, stream=True)
  assert listed.streamed and not loaded.streamed
  assert listed.files == loaded.files and listed.class_names == loaded.class_names
  np.testing.assert_array_equal(listed.labels, loaded.labels)
  assert listed.images.shape == loaded.images.shape and listed.image_shape == (12, 12, 1)
  np.testing.assert_array_equal(np.asarray(listed.images), loaded.images)
  np.testing.assert_array_equal(listed.images[3], loaded.images[3])
  np.testing.assert_array_equal(listed.images[2:7:2], loaded.images[2:7:2])
  mask = loaded.labels == 0
  np.testing.assert_array_equal(listed.images[mask], loaded.images[mask])


def test_subsets_and_concat_stay_on_disk(png_root):
  listed = folder.load_image_folder(png_root, image_size=12, channels=1, stream=True)
  loaded = folder.load_image_folder(png_root, image_size=12, channels=1)
  part = listed.subset([5, 1, 8])
  assert part.streamed and len(part) == 3 and part.files == [listed.files[i] for i in (5, 1, 8)]
  np.testing.assert_array_equal(np.asarray(part.images), loaded.images[[5, 1, 8]])
  both = part.concat(listed.subset([0]))
  assert both.streamed and len(both) == 4
  np.testing.assert_array_equal(np.asarray(both.images), loaded.images[[5, 1, 8, 0]])
  mixed = part.concat(loaded.subset([0]))  # pixels in memory joined: decoded
  assert not mixed.streamed
  np.testing.assert_array_equal(mixed.images, loaded.images[[5, 1, 8, 0]])


def test_stream_steps_decode_in_order(png_root):
  listed = folder.load_image_folder(png_root, image_size=12, channels=1, stream=True)
  loaded = folder.load_image_folder(png_root, image_size=12, channels=1)
  reads = {s: np.array([s % 11, (3 * s) % 11, 10]) for s in range(2, 6)}
  out = list(listed.images.stream(lambda s: reads[s], 2, 6))
  assert len(out) == 4
  for s, images in zip(range(2, 6), out):
    np.testing.assert_array_equal(images, loaded.images[reads[s]])


def test_fingerprint_follows_files_and_settings(png_root):
  a = FileImages(["NG/a.png"], root=png_root, image_size=12, channels=1)
  assert a.fingerprint() == FileImages(["NG/a.png"], root=png_root, image_size=12, channels=1).fingerprint()
  assert a.fingerprint() != FileImages(["NG/b.png"], root=png_root, image_size=12, channels=1).fingerprint()
  assert a.fingerprint() != FileImages(["NG/a.png"], root=png_root, image_size=16, channels=1).fingerprint()


def test_streaming_refuses_what_needs_decoded_images(png_root):
  with pytest.raises(ValueError, match=r"on_error='skip' needs every image decoded.*config.data.stream=false"):
    folder.load_image_folder(png_root, image_size=12, channels=1, stream=True, on_error="skip")
  with pytest.raises(ValueError, match="decoder must be one of"):
    FileImages(["a.png"], root=png_root, image_size=12, channels=1, decoder="cv2")


def _data(**kw):
  return ml_collections.ConfigDict(dict(source="folder", root="", stream="auto", stream_budget_mb=1, **kw))


def test_auto_streams_above_the_memory_budget_only():
  assert sources.streams(_data(), lambda: 2 * 2**20)
  assert not sources.streams(_data(), lambda: 2**20 - 1)
  forced = _data()
  forced.stream = "false"
  assert not sources.streams(forced, lambda: 10 * 2**30)
  forced.stream = "true"
  assert sources.streams(forced, lambda: 1)


def test_bad_stream_settings_name_the_setting(png_root):
  bad = _data()
  bad.stream = "sometimes"
  with pytest.raises(ValueError, match=r"config.data.stream='sometimes': choose one of"):
    sources.streams(bad, lambda: 1)
  with pytest.raises(ValueError, match=r"config.data.stream_budget_mb=0 must be > 0"):
    sources.streams(ml_collections.ConfigDict(dict(stream="auto", stream_budget_mb=0)), lambda: 1)
  elpv = ml_collections.ConfigDict(dict(source="elpv", stream="true"))
  with pytest.raises(ValueError, match=r"stream=true streams image folders only, not config.data.source='elpv'"):
    sources.load_source(elpv, image_size=16, channels=1)


def test_a_streamed_folder_is_listed_not_decoded(png_root):
  data = _data(resize="resize", on_error="raise", min_per_class=2, classes=())
  data.root = str(png_root)
  data.stream = "true"
  ds = sources.load_source(data, image_size=12, channels=1)
  assert ds.streamed and len(ds) == 11
  data.stream = "auto"  # 11 images of 12x12 are far below 1 MB
  assert not sources.load_source(data, image_size=12, channels=1).streamed


def _open_cache_files() -> set[str]:
  """The decoded-image cache files this process holds open (unlinked ones included; other tests' streams that
  wait for the garbage collector too: compare with a set taken before)."""
  fds = "/proc/self/fd"
  if not os.path.isdir(fds):
    pytest.skip("needs /proc")
  links = []
  for fd in os.listdir(fds):
    try:
      links.append(os.readlink(os.path.join(fds, fd)))
    except OSError:
      pass
  return {link for link in links if "deepsmote-decoded-" in link}


def _epochs(n_images: int, per_step: int, epochs: int) -> dict[int, np.ndarray]:
  order = np.concatenate([np.random.default_rng(e).permutation(n_images) for e in range(epochs)])
  return {s: order[s * per_step : (s + 1) * per_step] for s in range(len(order) // per_step)}


def test_cached_stream_equals_decoding_and_stops_decoding(png_root, tmp_path, monkeypatch):
  """Later epochs read the cache: the same bytes as decoding, and (once it is full) no file decoded again."""
  loaded = folder.load_image_folder(png_root, image_size=12, channels=1)
  listed = folder.load_image_folder(png_root, image_size=12, channels=1, stream=True, stream_cache=str(tmp_path))
  decoded = []
  real = image_io.decode_image
  monkeypatch.setattr(image_io, "decode_image", lambda path, *a, **k: decoded.append(path) or real(path, *a, **k))
  reads = _epochs(11, 1, 20)  # 20 epochs of one image a step: 220 reads
  before = _open_cache_files()
  stream = listed.images.stream(lambda s: reads[s], 0, len(reads))
  assert len(_open_cache_files() - before) == 1 and not os.listdir(tmp_path)  # open, and already unlinked
  for s, images in enumerate(stream):
    np.testing.assert_array_equal(images, loaded.images[reads[s]])
  assert stream.cache.cached().all()
  assert 11 <= len(decoded) <= 60, len(decoded)  # each file once, plus what the read-ahead saw before its write
  stream.close()
  assert stream.cache.closed and _open_cache_files() <= before


def test_cache_rows_round_trip_and_survive_a_closed_cache(tmp_path):
  cache = file_images.DecodedCache.open(str(tmp_path), 5, (2, 3, 1))
  images = np.arange(3 * 6, dtype=np.uint8).reshape(3, 2, 3, 1)
  idx = np.array([4, 0, 4])
  got, missing = cache.read(idx)
  assert missing.all() and not got.any()
  cache.write(idx, np.array([True, True, False]), images)
  got, missing = cache.read(np.array([0, 1, 4]))
  np.testing.assert_array_equal(missing, [False, True, False])
  np.testing.assert_array_equal(got[[0, 2]], images[[1, 0]])
  cache.close()
  cache.close()
  assert cache.read(idx)[1].all()  # closed under a running pipeline: every row a miss, writes ignored
  np.testing.assert_array_equal(cache.write(idx, np.ones(3, bool), images), images)


def test_dropping_a_stream_frees_its_cache(png_root, tmp_path):
  listed = FileImages(["NG/000000.png", "OK/000001.png"], root=png_root, image_size=12, channels=1)
  before = _open_cache_files()
  stream = listed.stream(lambda s: np.array([s % 2]), 0, 4)
  next(stream)
  assert len(_open_cache_files() - before) == 1
  del stream
  gc.collect()
  assert _open_cache_files() <= before


def test_stream_cache_off_or_a_full_disk_streams_uncached(png_root, tmp_path, monkeypatch, caplog):
  loaded = folder.load_image_folder(png_root, image_size=12, channels=1)
  reads = _epochs(11, 2, 2)
  for setting in ("off", str(tmp_path)):
    listed = folder.load_image_folder(png_root, image_size=12, channels=1, stream=True, stream_cache=setting)
    if setting != "off":
      full = shutil.disk_usage(tmp_path)._replace(free=11 * 12 * 12 - 1)  # one byte short
      monkeypatch.setattr(shutil, "disk_usage", lambda path, full=full: full)
    before = _open_cache_files()
    stream = listed.images.stream(lambda s: reads[s], 0, len(reads))
    assert stream.cache is None and _open_cache_files() <= before and not os.listdir(tmp_path)
    for s, images in enumerate(stream):
      np.testing.assert_array_equal(images, loaded.images[reads[s]])
  assert "streaming without the cache" in caplog.text


def test_stream_cache_setting_is_checked_and_is_not_an_image_setting(png_root, tmp_path):
  assert sources.stream_cache_setting(ml_collections.ConfigDict()) == "disk"
  for value, want in (("OFF", "off"), ("disk", "disk"), (str(tmp_path), str(tmp_path)), (False, "off")):
    assert sources.stream_cache_setting(ml_collections.ConfigDict(dict(stream_cache=value))) == want
  for bad in ("ram", str(tmp_path / "missing"), ""):
    with pytest.raises(ValueError, match=r"^config.data.stream_cache=.*: choose 'disk'.*existing directory$"):
      sources.stream_cache_setting(ml_collections.ConfigDict(dict(stream_cache=bad)))
  data = _data(stream_cache="ram")
  data.root = str(png_root)
  with pytest.raises(ValueError, match=r"config.data.stream_cache='ram'"):
    sources.load_source(data, image_size=12, channels=1)
  a = FileImages(["NG/a.png", "OK/b.png"], root=png_root, image_size=12, channels=1, stream_cache="off")
  b = FileImages(["NG/a.png", "OK/b.png"], root=png_root, image_size=12, channels=1)
  assert a.settings() == b.settings() and a.fingerprint() == b.fingerprint()
  assert a.take([1]).stream_cache == a.concat(b).stream_cache == "off"


@pytest.mark.parametrize("cache", ["disk", "off"])
def test_a_corrupt_file_met_while_streaming_is_a_one_line_error_naming_it(png_root, tmp_path, cache):
  """A file that cannot be decoded surfaces from the stream as a `BadImageError` (a ValueError: one line from
  the command line) naming the file, not as TensorFlow's error with a Python traceback inside it."""
  root = tmp_path / "copy"
  shutil.copytree(png_root, root)
  listed = folder.load_image_folder(root, image_size=12, channels=1, stream=True)
  bad = listed.images.paths[4]
  with open(bad, "wb") as f:
    f.write(b"not an image")
  where = "off" if cache == "off" else str(tmp_path)
  images = FileImages(listed.images.paths, root=None, **listed.images.settings(), stream_cache=where)
  stream = images.stream(lambda s: np.arange(2 * s, 2 * s + 2) % len(images), 0, 5)
  try:
    with pytest.raises(image_io.BadImageError) as raised:
      for _ in range(5):
        next(stream)
  finally:
    stream.close()
  message = str(raised.value)
  assert bad in message and "not a recognised image file" in message and "\n" not in message


def test_the_command_line_stopped_by_a_corrupt_streamed_file_exits_with_one_line(tmp_path):
  """`deepsmote train-autoencoder` on a streamed folder with a corrupt file: `error: <file>: ...` and exit code
  2, not TensorFlow's traceback (exit 1), and no hang (TensorFlow's error, if kept, holds the tf.data iterator
  until interpreter exit, where it deadlocks with its threads)."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (40, 16, 16, 1), dtype=np.uint8)
  folder.save_image_folder(images, (np.arange(40) % 4 == 0).astype(int), ["NG", "OK"], tmp_path / "images")
  bad = sorted((tmp_path / "images" / "OK").iterdir())[::5]  # some land in the training split
  for path in bad:
    path.write_bytes(b"not an image")
  overrides = ["--config.data.source=folder", f"--config.data.root={tmp_path / 'images'}", "--config.data.stream=true"]
  overrides += ["--config.model.preset=micro_16", "--config.imbalance.ok_class=OK", "--config.train.epochs=2"]
  cmd = [sys.executable, "-m", "deepsmote_jax.cli", "train-autoencoder", "--noprogress", "--config", "default:local"]
  cmd += [*overrides, f"--workdir={tmp_path / 'run'}"]
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
  last = (proc.stderr.strip().splitlines() or [""])[-1]
  assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert last in [f"error: {path}: not a recognised image file" for path in bad], last
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
