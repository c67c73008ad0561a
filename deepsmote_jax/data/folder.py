"""Image folders (one subfolder per class) to an in-memory `ImageSet`, and back.

`load_image_folder` decodes PNG/JPEG/BMP/TIFF files of any size and mode with Pillow in a thread pool
(Pillow releases the GIL while decoding), converts them to 1 or 3 channels of uint8 and brings them to a
square `image_size` by a resize policy. Bad input (missing folders, under-populated classes, corrupt,
truncated, zero-byte or non-image files, broken links, FIFOs, images too small for `center_crop` or far
smaller than `image_size`, see `image_io.check_not_tiny`) either raises a `ValueError` naming the file or
folder (`on_error='raise'`) or is skipped, listed in `ImageSet.skipped` and summarised in one warning
(`on_error='skip'`): never a crash deep inside Pillow halfway through a training run. Lossy but usable
conversions (transparency composited on black, 16-bit scaled to 8-bit, CMYK to RGB, ...) are listed in
`ImageSet.notes` and counted in the same single warning.

Links. Directory symlinks are followed (an image archive linked into a class folder is fine), but every
folder is listed once, recognised by (st_dev, st_ino): a link to the folder itself or to an ancestor (the
root included) is a loop, and a second path to an already listed folder is a repeat. An image file reached
twice (two symlinks, a symlink and the real path, a hard link; within one class or across two) is a
repeat as well. With `on_error='raise'` each is a ValueError naming the link (a loop) or both paths (a
repeat); with 'skip' the loop or second path is not followed and is recorded in `skipped`. The copy kept
is the one reached through the fewest links below the class folders (the real path beats a link; a class
folder that is itself a link loses ties to a real one), then the first in class and path order, so a link
from NG into OK never relabels OK images as NG.

No TensorFlow here: this module only needs NumPy and Pillow.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import heapq
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from deepsmote_jax.data import image_io
from deepsmote_jax.data import patches as patches_lib
from deepsmote_jax.data.file_images import FileImages
from deepsmote_jax.data.image_io import BadImageError

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_MAX_LISTED = 5  # file names quoted in the skip warning


@dataclasses.dataclass
class ImageSet:
  """Images in memory with integer labels, their class names and source files.

  Attributes:
    images: uint8 array (N, H, W, C).
    labels: int32 array (N,), indices into `class_names`.
    class_names: class of each label index.
    files: source of each image, relative to the loaded root (e.g. 'blowhole/exp1_num_3667.jpg').
    skipped: (file, reason) of the inputs that were left out with `on_error='skip'` (folders end in
      '/'); a record of the whole load, copied by `subset` and joined by `concat`.
    attrs: optional per-image arrays of length N (e.g. ELPV cell type), kept aligned by `subset`/`concat`.
    notes: (source file, what happened) for each lossy but accepted conversion of a loaded file (e.g.
      'alpha composited on black'); they follow their images: `subset` keeps the notes of the files it
      keeps (a patch '<file>#<y>_<x>' keeps the notes of '<file>'), `concat` joins them.
  """

  images: np.ndarray
  labels: np.ndarray
  class_names: list[str]
  files: list[str]
  skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  attrs: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  notes: list[tuple[str, str]] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    if not isinstance(self.images, FileImages):  # a FileImages stays on disk until read (streaming)
      self.images = np.asarray(self.images)
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError(f"ImageSet.images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
    self.labels = np.asarray(self.labels).astype(np.int32, copy=False).reshape(-1)
    self.class_names = list(self.class_names)
    self.files = list(self.files)
    self.skipped = [tuple(s) for s in self.skipped]
    self.notes = [tuple(s) for s in self.notes]
    self.attrs = {k: np.asarray(v) for k, v in self.attrs.items()}
    n = len(self.images)
    if len(self.labels) != n or len(self.files) != n:
      raise ValueError(f"ImageSet: {n} images, {len(self.labels)} labels, {len(self.files)} files")
    for key, value in self.attrs.items():
      if len(value) != n:
        raise ValueError(f"ImageSet.attrs[{key!r}] has {len(value)} entries for {n} images")
    if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
      raise ValueError(f"ImageSet labels must lie in [0, {len(self.class_names)})")

  def __len__(self) -> int:
    return len(self.images)

  @property
  def streamed(self) -> bool:
    """True when `images` is a `FileImages` (decoded when read) instead of pixels in memory."""
    return isinstance(self.images, FileImages)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  def counts(self) -> dict[str, int]:
    """Number of images per class name (every class listed, zero included)."""
    per_label = np.bincount(self.labels, minlength=len(self.class_names))
    return {name: int(c) for name, c in zip(self.class_names, per_label)}

  def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
    """The images at `indices` (integer indices or a boolean mask of length N), same class names."""
    idx = np.asarray(indices)
    if idx.dtype == bool:
      if idx.shape != (len(self),):
        raise ValueError(f"boolean mask of shape {idx.shape} for {len(self)} images")
      idx = np.flatnonzero(idx)
    idx = idx.astype(np.int64).reshape(-1)
    files = [self.files[i] for i in idx]
    return ImageSet(
      images=self.images.take(idx) if self.streamed else self.images[idx],
      labels=self.labels[idx],
      class_names=self.class_names,
      files=files,
      skipped=list(self.skipped),
      attrs={k: v[idx] for k, v in self.attrs.items()},
      notes=_notes_of(self.notes, files),
    )

  def concat(self, other: ImageSet) -> ImageSet:
    """This set followed by `other`; both must have the same class names, image shape and attrs keys."""
    if list(other.class_names) != self.class_names:
      raise ValueError(f"concat: class names differ: {self.class_names} vs {other.class_names}")
    if len(self) and len(other) and other.image_shape != self.image_shape:
      raise ValueError(f"concat: image shapes differ: {self.image_shape} vs {other.image_shape}")
    if set(self.attrs) != set(other.attrs):
      raise ValueError(f"concat: attrs differ: {sorted(self.attrs)} vs {sorted(other.attrs)}")
    if self.streamed and other.streamed:
      images = self.images.concat(other.images)
    elif len(self) and len(other):
      images = np.concatenate([np.asarray(self.images), np.asarray(other.images)])
    else:
      images = np.array(self.images if len(other) == 0 else other.images)
    return ImageSet(
      images=images,
      labels=np.concatenate([self.labels, other.labels]),
      class_names=self.class_names,
      files=self.files + other.files,
      skipped=self.skipped + other.skipped,
      attrs={k: np.concatenate([v, other.attrs[k]]) for k, v in self.attrs.items()},
      notes=self.notes + other.notes,
    )


def _notes_of(notes: list[tuple[str, str]], files: Sequence[str]) -> list[tuple[str, str]]:
  """The notes whose source file is among `files` (patches '<file>#<tag>' count for '<file>')."""
  sources = set(files) | {f.rpartition("#")[0] for f in files if "#" in f}
  return [n for n in notes if n[0] in sources]


def _normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
  exts = tuple(("." + e.lstrip(".")).lower() for e in extensions)
  if not exts:
    raise ValueError("extensions must not be empty")
  return exts


def _identity(st: os.stat_result, path: str) -> tuple:
  """(st_dev, st_ino) of a file or folder; its resolved path where the file system reports no inode numbers."""
  return (st.st_dev, st.st_ino) if st.st_ino else ("path", os.path.realpath(path))


def _unresolved(entry: os.DirEntry, err: OSError) -> str:
  """Why an entry cannot be stat'ed: a broken or cyclic symbolic link, or an unreadable file."""
  if entry.is_symlink():
    try:
      target = repr(os.readlink(entry.path))
    except OSError:
      target = "an unreadable target"
    if isinstance(err, FileNotFoundError):
      return f"broken symbolic link (to {target}, which does not exist)"
    return f"symbolic link to {target} cannot be resolved ({err.strerror or err})"
  return f"cannot read ({type(err).__name__}: {err.strerror or err})"


def _scan(
  root: str, class_names: Sequence[str], extensions: tuple[str, ...], skip: bool
) -> tuple[list[str], list[int], list[tuple[str, str]]]:
  """(files relative to root, labels, skipped) of the class folders, in class then path order.

  Hidden entries are ignored; links are handled as the module docstring says. Problems (loops, repeats,
  broken links, non-regular files, unreadable folders) raise a ValueError unless `skip`, which records
  them as (path, reason) instead.
  """
  skipped: list[tuple[str, str]] = []

  def problem(rel: str, reason: str) -> None:
    if not skip:
      raise ValueError(f"{os.path.join(root, rel)}: {reason} (on_error='skip' leaves it out)")
    skipped.append((rel, reason))

  # Folders are listed in order of (links followed below the class folder, class folder is a link, label,
  # path): the first listing of any folder, and of any file, is then its preferred one.
  root_id = _identity(os.stat(root), root)
  heap = [
    (0, int(os.path.islink(os.path.join(root, name))), label, name, ((root_id, "."),))
    for label, name in enumerate(class_names)
  ]
  heapq.heapify(heap)
  listed: dict[tuple, str] = {}  # folder identity -> its first path
  found: list[tuple[tuple[int, int, int, str], tuple]] = []  # (priority key, identity) of each image file
  while heap:
    links, class_link, label, rel, ancestors = heapq.heappop(heap)
    path = os.path.join(root, rel)
    try:
      ident = _identity(os.stat(path), path)
    except OSError as e:
      problem(rel + "/", f"cannot read folder ({type(e).__name__}: {e.strerror or e})")
      continue
    loop = next((a_rel for a_id, a_rel in ancestors if a_id == ident), None)
    if loop is not None:
      where = "the image folder root" if loop == "." else repr(loop + "/")
      problem(rel + "/", f"directory link loops back to {where}, which contains it")
      continue
    if ident in listed:
      problem(rel + "/", f"same folder as {listed[ident] + '/'!r} (reached twice through a link)")
      continue
    listed[ident] = rel
    try:
      with os.scandir(path) as it:
        entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
      problem(rel + "/", f"cannot list folder ({type(e).__name__}: {e.strerror or e})")
      continue
    below = ancestors + ((ident, rel),)
    for e in entries:
      child = os.path.join(rel, e.name)
      is_link = int(e.is_symlink())
      ext = os.path.splitext(e.name)[1].lower()
      try:
        st = e.stat()  # follows links
      except OSError as err:
        if ext in extensions or not ext:  # an image, or maybe a folder (an unmounted archive): say so
          problem(child, _unresolved(e, err))
        continue
      if stat.S_ISDIR(st.st_mode):
        heapq.heappush(heap, (links + is_link, class_link, label, child, below))
        continue
      if ext not in extensions:
        continue
      if not stat.S_ISREG(st.st_mode):
        problem(child, "not a regular file (a FIFO, socket or device named like an image)")
        continue
      found.append(((links + is_link, class_link, label, child), _identity(st, e.path)))

  files, labels = _first_copies(found, problem)
  return files, labels, skipped


def _first_copies(found: list, problem) -> tuple[list[str], list[int]]:
  """(files, labels) in class then path order, each file kept once: at its preferred listing (fewest links
  followed, then class order, then path); every other listing of it is a `problem`."""
  first: dict[tuple, tuple[int, int, int, str]] = {}  # file identity -> key of the copy kept
  for key, ident in found:
    if ident not in first or key < first[ident]:
      first[ident] = key
  files, labels = [], []
  for key, ident in sorted(found, key=lambda f: (f[0][2], f[0][3])):
    kept = first[ident]
    if kept != key:
      problem(key[3], f"same file as {kept[3]!r} (reached twice through a symbolic or hard link)")
      continue
    files.append(key[3])
    labels.append(key[2])
  return files, labels


def default_workers() -> int:
  return min(32, (os.cpu_count() or 1) + 2)


def parallel_map(
  fn: Callable[[Any], Any], items: Sequence[Any], num_workers: int | None = None, stop_on_error: bool = False
) -> list[tuple[Any, BaseException | None]]:
  """[(fn(item), None) or (None, error)] in item order, run on a thread pool.

  With `stop_on_error` the first failing item (in order) stops the map: pending items are cancelled
  and only the results up to it are returned.
  """
  workers = num_workers or default_workers()

  def call(item):
    try:
      return fn(item), None
    except Exception as e:  # noqa: BLE001 - reported to the caller
      return None, e

  if workers <= 1 or len(items) <= 1:
    out = []
    for item in items:
      out.append(call(item))
      if stop_on_error and out[-1][1] is not None:
        break
    return out
  ex = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
  out = []
  try:
    for res in ex.map(call, items):
      out.append(res)
      if stop_on_error and res[1] is not None:
        break
  finally:
    ex.shutdown(wait=True, cancel_futures=True)
  return out


def _summary_warning(where: str, skipped: list[tuple[str, str]], notes: list[tuple[str, str]]) -> None:
  """One warning for a whole load: the skipped files (first few named) and the notes counted by kind."""
  parts = []
  if skipped:
    shown = "; ".join(f"{f} ({r})" for f, r in skipped[:_MAX_LISTED])
    more = f"; and {len(skipped) - _MAX_LISTED} more" if len(skipped) > _MAX_LISTED else ""
    parts.append(f"skipped {len(skipped)} file(s): {shown}{more}")
  if notes:
    example = {}
    for f, what in notes:
      example.setdefault(what, f)
    counts = collections.Counter(what for _, what in notes)
    kinds = "; ".join(f"{what}: {counts[what]} (e.g. {f})" for what, f in example.items())
    parts.append(f"{len({f for f, _ in notes})} file(s) loaded with changes: {kinds}")
  warnings.warn(f"{where}: " + ". ".join(parts) + " (details in ImageSet.skipped / ImageSet.notes)", stacklevel=3)


def _list(
  root: str, classes: Sequence[str] | None, extensions: Iterable[str], skip: bool
) -> tuple[list[str], list[str], list[int], list[tuple[str, str]]]:
  """`list_image_folder` plus the (path, reason) of the entries left out with `skip`."""
  exts = _normalise_extensions(extensions)
  if not os.path.exists(root):
    raise ValueError(f"image folder {root!r} does not exist")
  if not os.path.isdir(root):
    raise ValueError(f"image folder {root!r} is not a directory")
  subdirs = sorted(d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
  if classes is None:
    if not subdirs:
      what = "is empty" if not os.listdir(root) else "has no class subfolders (expected root/<class>/<image>)"
      raise ValueError(f"image folder {root!r} {what}")
    class_names = subdirs
  else:
    class_names = list(classes)
    if not class_names:
      raise ValueError("classes must not be empty")
    if len(set(class_names)) != len(class_names):
      raise ValueError(f"classes has duplicates: {class_names}")
    missing = [c for c in class_names if not os.path.isdir(os.path.join(root, c))]
    if missing:
      raise ValueError(f"class folder(s) {missing} not found under {root!r} (found {subdirs})")
  files, labels, skipped = _scan(root, class_names, exts, skip)
  return class_names, files, labels, skipped


def list_image_folder(
  root: str | os.PathLike,
  *,
  classes: Sequence[str] | None = None,
  extensions: Iterable[str] = DEFAULT_EXTENSIONS,
  on_error: str = "raise",
) -> tuple[list[str], list[str], list[int]]:
  """(class_names, files relative to root, labels) of a class-per-subfolder tree, without decoding.

  Raises ValueError for a missing root, a root without class subfolders or a requested class folder that
  does not exist. Files with other extensions and hidden entries are ignored. Link loops, files or
  folders reached twice, broken links and non-regular files raise too, or with `on_error='skip'` are left
  out with one warning (see the module docstring).
  """
  if on_error not in image_io.ON_ERROR:
    raise ValueError(f"on_error must be one of {image_io.ON_ERROR}, got {on_error!r}")
  root = os.fspath(root)
  class_names, files, labels, skipped = _list(root, classes, extensions, on_error == "skip")
  if skipped:
    _summary_warning(f"list_image_folder({root!r})", skipped, [])
  return class_names, files, labels


def load_image_folder(
  root: str | os.PathLike,
  *,
  image_size: int,
  channels: int,
  resize: str = "resize",
  on_error: str = "raise",
  min_per_class: int = 1,
  classes: Sequence[str] | None = None,
  extensions: Iterable[str] = DEFAULT_EXTENSIONS,
  num_workers: int | None = None,
  patches: Any = None,
  stream: bool = False,
  stream_cache: str = "disk",
) -> ImageSet:
  """Decode `root/<class>/<image>` into an `ImageSet` of uint8 (N, image_size, image_size, channels).

  Args:
    root: folder with one subfolder per class (nested folders inside a class are included, directory
      links followed once each: loops and repeats are bad input, see the module docstring).
    image_size: side of the square output images.
    channels: 1 (grayscale) or 3 (RGB); every input mode is converted (see `image_io.to_8bit`).
    resize: 'resize' (stretch), 'center_crop' (shorter side to image_size, central square; smaller
      images are bad input) or 'pad' (longer side to image_size, black borders).
    on_error: 'raise' -> ValueError naming the first bad file/folder; 'skip' -> bad files (and classes
      left with fewer than `min_per_class` images, unless named in `classes`) are left out, listed in
      `ImageSet.skipped` and summarised in a warning. Tiny images (shorter side < image_size / 4, or a
      single row/column; `image_io.check_not_tiny`) are bad files. Lossy conversions are never fatal:
      they go to `ImageSet.notes` and the same one warning, under either setting.
    min_per_class: fewest usable images a class may have.
    classes: class folders to load, in label order; default all subfolders, sorted.
    extensions: file suffixes (case-insensitive) taken as images; other files are ignored.
    num_workers: decoding threads (default cpu_count + 2, at most 32).
    patches: optional `deepsmote_jax.data.patches` spec (`TileSpec` / `DefectCropSpec`): each file then
      gives several patches, named '<file>#<y>_<x>' in `files`.
    stream: list the files only: `images` is a `FileImages`, decoded when read (training streams it). A
      file that cannot be decoded then fails when it is read, so `on_error` must be 'raise'.
    stream_cache: where a stream keeps the images it decoded (`file_images.check_stream_cache`): 'disk'
      (under $TMPDIR), 'off' or a directory.

  Returns:
    The `ImageSet`, images in class order then sorted file order; `skipped` lists folder problems first,
    then undecodable files, then dropped classes.
  """
  image_io.check_settings(image_size, channels, resize, on_error)
  if min_per_class < 0:
    raise ValueError(f"min_per_class must be >= 0, got {min_per_class}")
  root = os.fspath(root)
  skip = on_error == "skip"
  class_names, files, labels, skipped = _list(root, classes, extensions, skip)
  explicit = classes is not None

  # Classes that cannot reach min_per_class even before decoding.
  _check_class_counts(root, class_names, labels, min_per_class, "image file(s)", strict=not skip or explicit)
  if stream:
    return _listed_set(root, class_names, files, labels, image_size, channels, resize, skip, patches, stream_cache)

  fn = functools.partial(_decode_file, root, image_size, channels, resize, patches)
  results = parallel_map(fn, files, num_workers, stop_on_error=not skip)
  failed_to = skipped if skip else None  # None: the first failure raises
  out_images, out_labels, out_files, notes = _collect(root, files, labels, results, failed_to, patches is not None)

  # Classes left under min_per_class after decoding.
  _check_class_counts(root, class_names, out_labels, min_per_class, "usable image(s)", strict=not skip or explicit)
  remap, sel, class_names = _drop_small_classes(root, class_names, out_labels, min_per_class, skipped)
  if sel is not None:
    out_images = [out_images[i] for i in sel]
    out_files = [out_files[i] for i in sel]
    out_labels = [remap[out_labels[i]] for i in sel]

  images = np.stack(out_images) if out_images else np.zeros((0, image_size, image_size, channels), np.uint8)
  notes = _notes_of(notes, out_files)
  if skipped or notes:
    _summary_warning(f"load_image_folder({root!r})", skipped, notes)
  return ImageSet(
    images=images,
    labels=np.asarray(out_labels, np.int32),
    class_names=class_names,
    files=out_files,
    skipped=skipped,
    notes=notes,
  )


def _listed_set(root, class_names, files, labels, image_size, channels, resize, skip, patches, cache) -> ImageSet:
  """The `ImageSet` of a listed folder whose images stay on disk (`load_image_folder(stream=True)`)."""
  if skip:
    raise ValueError(
      "on_error='skip' needs every image decoded up front to leave the bad ones out; stream with on_error='raise' "
      "(config.data.on_error) or load in memory (config.data.stream=false)"
    )
  if patches is not None:
    raise ValueError("tiles and defect crops are cut from decoded images: set config.data.stream=false to use them")
  images = FileImages(files, root=root, image_size=image_size, channels=channels, resize=resize, stream_cache=cache)
  return ImageSet(images=images, labels=np.asarray(labels, np.int32), class_names=class_names, files=files)


def _decode_file(root: str, image_size: int, channels: int, resize: str, patches, rel: str):
  """(the decoded image, or its patches, of `root/rel`; the lossy conversions noted on the way)."""
  notes: list[str] = []
  if patches is not None:
    out = patches_lib.extract_file_patches(root, rel, patches, image_size=image_size, channels=channels, notes=notes)
  else:
    out = image_io.decode_image(os.path.join(root, rel), image_size, channels, resize, notes=notes)
  return out, notes


def _check_class_counts(root, class_names, labels, min_per_class: int, what: str, *, strict: bool) -> None:
  """ValueError naming the first class folder with fewer than `min_per_class` images (when `strict`)."""
  if not strict:
    return
  counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
  for label, name in enumerate(class_names):
    if counts[label] < min_per_class:
      raise ValueError(
        f"class folder {os.path.join(root, name)!r} has {counts[label]} {what}, "
        f"fewer than min_per_class={min_per_class}"
      )


def _collect(root, files, labels, results, skipped: list | None, patched: bool):
  """Decoded images, labels, names and conversion notes in file order; a failed file raises (`skipped` is
  None: on_error='raise') or is appended to `skipped`."""
  notes: list[tuple[str, str]] = []
  out_images, out_labels, out_files = [], [], []
  for rel, label, (res, err) in zip(files, labels, results):
    if err is not None:
      if skipped is None:
        raise ValueError(f"{os.path.join(root, rel)}: {err}") from (None if isinstance(err, BadImageError) else err)
      skipped.append((rel, str(err)))
      continue
    res, file_notes = res
    notes.extend((rel, what) for what in dict.fromkeys(file_notes))
    for arr, tag in res if patched else [(res, None)]:
      out_images.append(arr)
      out_labels.append(label)
      out_files.append(rel if tag is None else f"{rel}#{tag}")
  return out_images, out_labels, out_files, notes


def _drop_small_classes(root, class_names, labels, min_per_class: int, skipped: list):
  """(old -> new label map, indices of the images kept or None when every class stays, class names kept);
  each dropped class is recorded in `skipped`."""
  valid = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
  keep = [c for c in range(len(class_names)) if valid[c] >= min_per_class]
  if len(keep) == len(class_names):
    return None, None, class_names
  if not keep:
    raise ValueError(f"image folder {root!r}: no class has min_per_class={min_per_class} usable images")
  remap = {old: new for new, old in enumerate(keep)}
  for c in range(len(class_names)):
    if c not in remap:
      skipped.append((class_names[c] + "/", f"class has {valid[c]} usable image(s) < min_per_class={min_per_class}"))
  sel = [i for i, lab in enumerate(labels) if lab in remap]
  return remap, sel, [class_names[c] for c in keep]


def save_image_folder(
  images_uint8: np.ndarray,
  labels: Sequence[int] | np.ndarray,
  class_names: Sequence[str],
  out_dir: str | os.PathLike,
  names: Sequence[str] | None = None,
) -> list[str]:
  """Write images as PNGs to `out_dir/<class>/<name>.png`; returns the paths relative to out_dir.

  A folder is created for every class (so a reload with `classes=class_names` keeps the label order).
  `names` default to the running index ('000000.png', ...); '.png' is appended where missing.
  """
  images = np.asarray(images_uint8)
  if images.dtype != np.uint8:
    raise ValueError(f"save_image_folder expects uint8 images, got {images.dtype}")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
    raise ValueError(f"images must be (N, H, W[, 1|3|4]), got {images.shape}")
  labels = np.asarray(labels).reshape(-1)
  if len(labels) != len(images):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  class_names = list(class_names)
  if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
    raise ValueError(f"labels must lie in [0, {len(class_names)})")
  if names is None:
    names = [f"{i:06d}.png" for i in range(len(images))]
  names = [n if n.lower().endswith(".png") else n + ".png" for n in names]
  if len(names) != len(images):
    raise ValueError(f"{len(images)} images but {len(names)} names")
  out_dir = os.fspath(out_dir)
  for name in class_names:
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
  rels = [os.path.join(class_names[int(lab)], n) for lab, n in zip(labels, names)]
  if len(set(rels)) != len(rels):
    raise ValueError("save_image_folder: duplicate names within a class")
  mode = {1: "L", 3: "RGB", 4: "RGBA"}[images.shape[-1]]

  def write(i):
    path = os.path.join(out_dir, rels[i])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arr = images[i][..., 0] if mode == "L" else images[i]
    Image.fromarray(arr, mode).save(path, format="PNG")

  for _, err in parallel_map(write, range(len(images))):
    if err is not None:
      raise err
  return rels
