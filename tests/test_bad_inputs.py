"""A corpus of bad and odd inputs for `load_image_folder`, each with its outcome under both `on_error` settings.

Every case builds a small image folder (a healthy OK/NG base plus the oddity) and states what must happen
with `on_error='raise'` and with `on_error='skip'`: an error whose message names the file or folder, a
file skipped and recorded with its reason, a file loaded (with a counted note for lossy conversions), or
a file ignored. Whatever loads is also checked for what a user cannot see: no image twice (by inode), no
image under the wrong class, the base images all there, and at most one warning per load.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from deepsmote_jax.data import image_io
from deepsmote_jax.data.folder import list_image_folder, load_image_folder

SIZE = 16  # the model's side in this corpus: tiny means a shorter side below 16 / 4 = 4 px
BASE = {"OK/ok0.png": 10, "OK/ok1.png": 20, "OK/ok2.png": 30, "NG/ng0.png": 200, "NG/ng1.png": 210}


@dataclasses.dataclass(frozen=True)
class Error:
  """A ValueError whose message matches `match` (it names the file, folder or setting)."""

  match: str


@dataclasses.dataclass(frozen=True)
class Skipped:
  """Left out and recorded in `ImageSet.skipped` as (file, reason matching `reason`)."""

  file: str
  reason: str


@dataclasses.dataclass(frozen=True)
class Loaded:
  """In `ImageSet.files`, with `note` in `ImageSet.notes` (or no note at all)."""

  file: str
  note: str | None = None


@dataclasses.dataclass(frozen=True)
class Ignored:
  """Neither loaded nor recorded (not an image by name, or hidden)."""

  file: str


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  build: Callable
  on_raise: tuple
  on_skip: tuple
  base: bool = True  # write the healthy OK/NG images too
  check: Callable | None = None  # extra checks of the loaded ImageSet


# --- builders -------------------------------------------------------------------------------------------


def _png(path, arr, **kw):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(arr).save(path, **kw)


def _gray(value, h=8, w=8):
  return np.full((h, w), value, np.uint8)


def _write_base(root):
  for rel, value in BASE.items():
    _png(root / rel, _gray(value))


def _bytes(rel, data):
  def build(root):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)

  return build


def _cut(rel, fmt, keep):
  """A valid noisy image of format `fmt`, cut to `keep` of its bytes."""

  def build(root):
    path = root / rel
    _png(path, np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8), format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])

  return build


def _image(rel, make):
  def build(root):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    make(root / rel)

  return build


def _bomb_png(path):
  """A 1x1 PNG whose header claims 30000x30000 pixels (900 Mpixel): Pillow refuses it on open."""
  _png(path, _gray(5, 1, 1))
  data = bytearray(path.read_bytes())
  data[16:24] = struct.pack(">II", 30000, 30000)
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  path.write_bytes(bytes(data))


def _palette(path, transparent=False):
  im = Image.new("P", (8, 8), 1)
  im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
  im.putpixel((0, 0), 0)
  im.save(path, transparency=0) if transparent else im.save(path)


def _rgba(path, alpha):
  a = np.zeros((8, 8, 4), np.uint8)
  a[..., :3], a[..., 3] = (200, 100, 50), 255
  a[4:, :, 3] = alpha
  Image.fromarray(a).save(path)


def _frames(path):
  frames = [Image.fromarray(_gray(v)) for v in (60, 250)]
  frames[0].save(path, save_all=True, append_images=frames[1:])


def _symlink(rel, target, directory=False):
  def build(root):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    try:
      os.symlink(target, root / rel, target_is_directory=directory)
    except (OSError, NotImplementedError) as e:
      pytest.skip(f"symbolic links unavailable: {e}")

  return build


def _archive(root):
  """Two images in a folder beside (outside) the image folder root."""
  outside = root.parent / f"{root.name}_archive"
  _png(outside / "a.png", _gray(120))
  _png(outside / "b.png", _gray(130))
  return outside


def _shared_file(root):
  """One image outside the root, linked into both class folders."""
  outside = root.parent / "shared.png"
  _png(outside, _gray(140))
  _all(_symlink("NG/shared.png", outside), _symlink("OK/shared.png", outside))(root)


def _all(*builders):
  def build(root):
    for b in builders:
      b(root)

  return build


def _fifo(root):
  if not hasattr(os, "mkfifo"):
    pytest.skip("no FIFOs on this platform")
  (root / "NG").mkdir(parents=True, exist_ok=True)
  os.mkfifo(root / "NG" / "pipe.png")  # reading it would block forever


def _hard_link(root):
  try:
    os.link(root / "OK" / "ok1.png", root / "NG" / "hard.png")
  except OSError as e:
    pytest.skip(f"hard links unavailable: {e}")


def _values(expect):
  """A check that the named loaded files have the given (mean) pixel values."""

  def check(s):
    by_file = dict(zip(s.files, s.images))
    for f, value in expect.items():
      np.testing.assert_allclose(by_file[f].reshape(-1, 3).mean(0), value, atol=3, err_msg=f)

  return check


def _named(rel):
  return re.escape(rel)


# --- the corpus -----------------------------------------------------------------------------------------

CASES = [
  # Not an image at all, or a broken one: an error naming the file, or skipped with the reason.
  Case(
    "zero_byte",
    _bytes("NG/zero.png", b""),
    (Error(_named("NG/zero.png") + r".*empty file \(0 bytes\)"),),
    (Skipped("NG/zero.png", "0 bytes"),),
  ),
  Case(
    "truncated_png",
    _cut("NG/cut.png", "PNG", 0.5),
    (Error(_named("NG/cut.png") + ".*cannot decode"),),
    (Skipped("NG/cut.png", "cannot decode"),),
  ),
  Case(
    "truncated_jpeg",
    _cut("NG/cut.jpg", "JPEG", 0.3),
    (Error(_named("NG/cut.jpg") + ".*cannot decode.*truncated"),),
    (Skipped("NG/cut.jpg", "truncated"),),
  ),
  Case(
    "text_named_png",
    _bytes("NG/text.png", b"hello, I am not a PNG\n" * 10),
    (Error(_named("NG/text.png") + ".*not a recognised image"),),
    (Skipped("NG/text.png", "not a recognised image"),),
  ),
  Case(
    "html_renamed_jpg",
    _bytes("OK/page.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"),
    (Error(_named("OK/page.jpg") + ".*not a recognised image"),),
    (Skipped("OK/page.jpg", "not a recognised image"),),
  ),
  Case(
    "decompression_bomb",
    _image("NG/bomb.png", _bomb_png),
    (Error(_named("NG/bomb.png") + ".*DecompressionBomb"),),
    (Skipped("NG/bomb.png", "DecompressionBomb"),),
  ),
  # Far smaller than the model's 16x16: upscaled garbage.
  Case(
    "one_by_one",
    _image("NG/dot.png", lambda p: _png(p, _gray(99, 1, 1))),
    (Error(_named("NG/dot.png") + ".*1x1, far smaller than the 16x16"),),
    (Skipped("NG/dot.png", "1x1, far smaller than the 16x16"),),
  ),
  Case(
    "three_by_three",
    _image("NG/tiny.png", lambda p: _png(p, _gray(99, 3, 3))),
    (Error(_named("NG/tiny.png") + ".*3x3, far smaller than the 16x16.*shorter side 3 px < 16/4"),),
    (Skipped("NG/tiny.png", "3x3, far smaller"),),
  ),
  Case(
    "single_row",
    _image("OK/row.png", lambda p: _png(p, _gray(99, 1, 200))),
    (Error(_named("OK/row.png") + ".*200x1, far smaller"),),
    (Skipped("OK/row.png", "200x1"),),
  ),
  Case(
    "four_by_four_is_enough",
    _image("NG/small.png", lambda p: _png(p, _gray(99, 4, 4))),
    (Loaded("NG/small.png"),),
    (Loaded("NG/small.png"),),
    check=_values({"NG/small.png": 99}),
  ),
  # Unusual but usable: loaded; lossy conversions counted in ImageSet.notes.
  Case(
    "png_16bit",
    _image("NG/deep.png", lambda p: _png(p, np.full((8, 8), 32896, np.uint16))),
    (Loaded("NG/deep.png", image_io.NOTE_16BIT),),
    (Loaded("NG/deep.png", image_io.NOTE_16BIT),),
    check=_values({"NG/deep.png": 128}),
  ),
  Case(
    "palette_png",
    _image("NG/pal.png", _palette),
    (Loaded("NG/pal.png"),),
    (Loaded("NG/pal.png"),),
    check=_values({"NG/pal.png": [10 * 63 / 64, 20 * 63 / 64, 30 * 63 / 64]}),
  ),
  Case(
    "palette_png_transparent",
    _image("NG/paltr.png", lambda p: _palette(p, transparent=True)),
    (Loaded("NG/paltr.png", image_io.NOTE_ALPHA),),
    (Loaded("NG/paltr.png", image_io.NOTE_ALPHA),),
  ),
  Case(
    "rgba_transparent",
    _image("NG/rgba.png", lambda p: _rgba(p, 0)),
    (Loaded("NG/rgba.png", image_io.NOTE_ALPHA),),
    (Loaded("NG/rgba.png", image_io.NOTE_ALPHA),),
    check=_values({"NG/rgba.png": [100, 50, 25]}),
  ),  # bottom half black
  Case(
    "rgba_opaque",
    _image("NG/opaque.png", lambda p: _rgba(p, 255)),
    (Loaded("NG/opaque.png"),),
    (Loaded("NG/opaque.png"),),
    check=_values({"NG/opaque.png": [200, 100, 50]}),
  ),
  Case(
    "la_transparent",
    _image("NG/la.png", lambda p: _png(p, np.dstack([_gray(100), _gray(0)]))),
    (Loaded("NG/la.png", image_io.NOTE_ALPHA),),
    (Loaded("NG/la.png", image_io.NOTE_ALPHA),),
    check=_values({"NG/la.png": 0}),
  ),
  Case(
    "cmyk_jpeg",
    _image("NG/cmyk.jpg", lambda p: Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(p)),
    (Loaded("NG/cmyk.jpg", "CMYK converted to RGB"),),
    (Loaded("NG/cmyk.jpg", "CMYK converted to RGB"),),
    check=_values({"NG/cmyk.jpg": [255, 0, 255]}),
  ),
  Case(
    "multi_frame_tiff",
    _image("NG/stack.tif", _frames),
    (Loaded("NG/stack.tif", image_io.NOTE_FRAMES),),
    (Loaded("NG/stack.tif", image_io.NOTE_FRAMES),),
    check=_values({"NG/stack.tif": 60}),
  ),
  Case(
    "huge_8000x8000",
    _image("OK/huge.jpg", lambda p: Image.new("L", (8000, 8000), 77).save(p, quality=90)),
    (Loaded("OK/huge.jpg"),),
    (Loaded("OK/huge.jpg"),),
    check=_values({"OK/huge.jpg": 77}),
  ),
  Case(
    "upper_case_extension",
    _image("NG/LOUD.PNG", lambda p: _png(p, _gray(66), format="PNG")),
    (Loaded("NG/LOUD.PNG"),),
    (Loaded("NG/LOUD.PNG"),),
  ),
  # Not images by name: ignored without a word.
  Case(
    "hidden_files",
    _all(
      _image("NG/.hidden.png", lambda p: _png(p, _gray(1))),
      _bytes("NG/.DS_Store", b"\0\1"),
      _image("NG/.thumbs/t.png", lambda p: _png(p, _gray(2))),
    ),
    (Ignored("NG/.hidden.png"), Ignored("NG/.thumbs/t.png")),
    (Ignored("NG/.hidden.png"), Ignored("NG/.thumbs/t.png")),
  ),
  Case(
    "non_image_extension",
    _all(_bytes("NG/readme.txt", b"notes"), _image("NG/scan.gif", lambda p: _png(p, _gray(3), format="GIF"))),
    (Ignored("NG/readme.txt"), Ignored("NG/scan.gif")),
    (Ignored("NG/readme.txt"), Ignored("NG/scan.gif")),
  ),
  # Links, loops and files reached twice.
  Case(
    "symlink_loop_to_root",
    _symlink("NG/loop", "..", directory=True),
    (Error(_named("NG/loop/") + ": directory link loops back to the image folder root"),),
    (Skipped("NG/loop/", "loops back to the image folder root"),),
  ),
  Case(
    "symlink_to_own_folder",
    _symlink("NG/sub/up", "..", directory=True),
    (Error(_named("NG/sub/up/") + ": directory link loops back to 'NG/'"),),
    (Skipped("NG/sub/up/", "loops back to 'NG/'"),),
  ),
  Case(
    "archive_linked_from_outside",
    lambda root: _symlink("NG/archive", _archive(root), directory=True)(root),
    (Loaded("NG/archive/a.png"), Loaded("NG/archive/b.png")),
    (Loaded("NG/archive/a.png"), Loaded("NG/archive/b.png")),
  ),
  Case(
    "archive_linked_twice",
    lambda root: _all(
      _symlink("NG/a1", _archive(root), directory=True), _symlink("NG/a2", _archive(root), directory=True)
    )(root),
    (Error(_named("NG/a2/") + ": same folder as 'NG/a1/'"),),
    (Loaded("NG/a1/a.png"), Loaded("NG/a1/b.png"), Skipped("NG/a2/", "same folder as 'NG/a1/'")),
  ),
  Case(
    "folder_linked_into_other_class",
    _symlink("NG/more", "../OK", directory=True),
    (Error(_named("NG/more/") + ": same folder as 'OK/'"),),
    (Skipped("NG/more/", "same folder as 'OK/'"),),
  ),
  Case(
    "class_folder_linked_to_other_class",
    _symlink("ZZ", "OK", directory=True),
    (Error(_named("ZZ/") + ": same folder as 'OK/'"),),
    (Skipped("ZZ/", "same folder as 'OK/'"), Skipped("ZZ/", r"class has 0 usable image\(s\)")),
  ),
  Case(
    "file_linked_from_other_class",
    _symlink("NG/dup.png", "../OK/ok0.png"),
    (Error(_named("NG/dup.png") + ": same file as 'OK/ok0.png'"),),
    (Skipped("NG/dup.png", "same file as 'OK/ok0.png'"),),
  ),
  Case(
    "file_linked_into_two_classes",
    _shared_file,
    (Error(_named("OK/shared.png") + ": same file as 'NG/shared.png'"),),
    (Loaded("NG/shared.png"), Skipped("OK/shared.png", "same file as 'NG/shared.png'")),
  ),
  # Two hard links are equally real: the first in class order is kept (NG sorts before OK).
  Case(
    "hard_link_across_classes",
    _hard_link,
    (Error(_named("OK/ok1.png") + ": same file as 'NG/hard.png'"),),
    (Loaded("NG/hard.png"), Skipped("OK/ok1.png", "same file as 'NG/hard.png'")),
  ),
  Case(
    "file_symlink_cycle",
    _all(_symlink("NG/a.png", "b.png"), _symlink("NG/b.png", "a.png")),
    (Error(_named("NG/a.png") + ": symbolic link to 'b.png' cannot be resolved"),),
    (Skipped("NG/a.png", "cannot be resolved"), Skipped("NG/b.png", "cannot be resolved")),
  ),
  Case(
    "broken_folder_link",
    _symlink("NG/archive", "/nonexistent/unmounted/share", directory=True),
    (Error(_named("NG/archive") + ": broken symbolic link"),),
    (Skipped("NG/archive", "broken symbolic link"),),
  ),
  Case(
    "broken_symlink",
    _symlink("NG/gone.png", "nowhere.png"),
    (Error(_named("NG/gone.png") + ": broken symbolic link \\(to 'nowhere.png'"),),
    (Skipped("NG/gone.png", "broken symbolic link"),),
  ),
  Case(
    "fifo_named_png",
    _fifo,
    (Error(_named("NG/pipe.png") + ": not a regular file"),),
    (Skipped("NG/pipe.png", "not a regular file"),),
  ),
  # Folder structure.
  Case(
    "class_without_images",
    _bytes("EMPTY/readme.txt", b"no images here"),
    (Error(r"class folder '.*EMPTY' has 0 image file\(s\)"),),
    (Skipped("EMPTY/", r"class has 0 usable image\(s\) < min_per_class=1"),),
  ),
  Case(
    "root_without_class_folders",
    _image("flat.png", lambda p: _png(p, _gray(1))),
    (Error("has no class subfolders"),),
    (Error("has no class subfolders"),),
    base=False,
  ),
  Case("empty_root", lambda root: root.mkdir(), (Error("is empty"),), (Error("is empty"),), base=False),
  Case("missing_root", lambda root: None, (Error("does not exist"),), (Error("does not exist"),), base=False),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Builds each case's folder once (on first use), shared by its raise and skip tests."""
  built = {}

  def get(case: Case):
    if case.name not in built:
      root = tmp_path_factory.mktemp(case.name) / "images"
      if case.base:
        _write_base(root)
      case.build(root)
      built[case.name] = root
    return built[case.name]

  return get


def _identity(path):
  st = os.stat(path)
  return st.st_dev, st.st_ino


@pytest.mark.parametrize("mode", ["raise", "skip"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(corpus, case, mode):
  root = corpus(case)
  outcomes = case.on_raise if mode == "raise" else case.on_skip
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    errors = [o for o in outcomes if isinstance(o, Error)]
    if errors:
      with pytest.raises(ValueError, match=errors[0].match):
        load_image_folder(root, image_size=SIZE, channels=3, on_error=mode, num_workers=2)
      return
    s = load_image_folder(root, image_size=SIZE, channels=3, on_error=mode, num_workers=2)
  assert s.images.shape[1:] == (SIZE, SIZE, 3)
  skipped = [o for o in outcomes if isinstance(o, Skipped)]
  loaded = [o for o in outcomes if isinstance(o, Loaded)]
  # Exactly the expected skips, each with its reason.
  assert sorted(f for f, _ in s.skipped) == sorted(o.file for o in skipped), s.skipped
  for o in skipped:
    assert any(f == o.file and re.search(o.reason, r) for f, r in s.skipped), (o, s.skipped)
  # Exactly the expected files: the base minus what was skipped, plus what was added.
  gone = {o.file for o in skipped}
  expected = {f for f in BASE if f not in gone} | {o.file for o in loaded}
  assert set(s.files) == expected
  assert not {o.file for o in outcomes if isinstance(o, Ignored)} & (set(s.files) | gone)
  # Nothing twice (by name or by inode), every image under its own folder's class.
  assert len(set(s.files)) == len(s.files)
  assert len({_identity(root / f) for f in s.files}) == len(s.files)
  assert all(f.split("/")[0] == s.class_names[lab] for f, lab in zip(s.files, s.labels))
  by_file = dict(zip(s.files, s.images))
  for f, value in BASE.items():
    if f in by_file:
      assert (by_file[f] == value).all(), f
  # Notes: exactly the lossy conversions; one warning per load, with the counts.
  assert sorted(s.notes) == sorted((o.file, o.note) for o in loaded if o.note)
  user_warnings = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
  assert len(user_warnings) == int(bool(s.skipped or s.notes)), user_warnings
  if s.skipped:
    assert f"skipped {len(s.skipped)} file(s)" in user_warnings[0]
  for note in {n for _, n in s.notes}:
    count = sum(n == note for _, n in s.notes)
    assert f"{note}: {count} (e.g. " in user_warnings[0]
  if case.check:
    case.check(s)


def test_corpus_is_broad():
  assert len(CASES) >= 15 and len({c.name for c in CASES}) == len(CASES)


def test_symlink_loop_keeps_class_counts(tmp_path):
  """The reported bug: `NG/loop -> ..` relabelled every OK image as NG, about 40 levels deep, exit code 0."""
  root = tmp_path / "images"
  for i in range(16):
    _png(root / "NG" / f"ng{i:02d}.png", _gray(200 + i % 50))
  for i in range(40):
    _png(root / "OK" / f"ok{i:02d}.png", _gray(i))
  _symlink("NG/loop", "..", directory=True)(root)
  _symlink("NG/deeper/self", ".", directory=True)(root)
  with pytest.raises(ValueError, match=_named("NG/deeper/self/") + ": directory link loops back to 'NG/deeper/'"):
    load_image_folder(root, image_size=SIZE, channels=1)
  with pytest.raises(ValueError, match="NG/deeper/self/.*loops back"):
    list_image_folder(root)
  with pytest.warns(UserWarning, match=r"skipped 2 file\(s\)"):
    s = load_image_folder(root, image_size=SIZE, channels=1, on_error="skip")
  assert s.counts() == {"NG": 16, "OK": 40}
  assert len(set(s.files)) == len(s.files) == 56 and not any("loop" in f or "self" in f for f in s.files)
  assert sorted(f for f, _ in s.skipped) == ["NG/deeper/self/", "NG/loop/"]
  with pytest.warns(UserWarning, match=r"list_image_folder.*skipped 2"):
    names, files, labels = list_image_folder(root, on_error="skip")
  assert names == ["NG", "OK"] and files == s.files and labels == list(s.labels)


def test_list_image_folder_checks_on_error(tmp_path):
  _write_base(tmp_path)
  with pytest.raises(ValueError, match="on_error"):
    list_image_folder(tmp_path, on_error="ignore")


def test_notes_follow_images_through_subset(corpus):
  with pytest.warns(UserWarning, match=r"1 file\(s\) loaded with changes: alpha composited on black: 1"):
    s = load_image_folder(corpus(CASES[[c.name for c in CASES].index("rgba_transparent")]), image_size=SIZE, channels=3)
  ng = s.subset(s.labels == s.class_names.index("NG"))
  ok = s.subset(s.labels == s.class_names.index("OK"))
  assert ng.notes == [("NG/rgba.png", image_io.NOTE_ALPHA)] and ok.notes == []
  assert ok.concat(ng).notes == s.notes
