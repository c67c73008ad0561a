"""The AMOLED paper's published results as data: Table 1 (four classifiers) and Table 2 (InceptionV3 on an
unseen production line, without and with synthetic images).

Confusion matrices are rows = actual class, columns = predicted class, classes (OK, NG). The printed
'Precision' / 'Recall' / 'F1' columns treat OK as the positive class with precision and recall swapped
(`metrics.paper_columns` computes them the paper's way); `ng_positive` gives the numbers an inspection
engineer acts on (NG recall, overkill, leak). Every printed percentage is kept exactly as printed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepsmote_jax import metrics

CLASSES = ("OK", "NG")
PRINTED_COLUMNS = ("accuracy", "precision", "recall", "f1")

# Rows: name -> (confusion matrix, printed accuracy, precision, recall, F1 in percent).
# Table 1: test set #1, 2,724 OK / 949 NG.
_TABLE1 = {
  "InceptionV3": (((2457, 267), (22, 927)), (92.13, 90.20, 99.11, 94.46)),
  "ResNet50": (((2538, 186), (119, 830)), (91.70, 93.17, 95.52, 94.33)),
  "EfficientNetB5": (((2378, 346), (60, 889)), (88.95, 87.30, 97.54, 92.13)),
  "Xception": (((2487, 237), (29, 920)), (92.76, 91.30, 98.85, 94.92)),
}
TABLE1_SUPPORT = {"OK": 2724, "NG": 949}
# Printed values that the counts do not reproduce at two decimals (recomputed value given).
TABLE1_MISPRINTS = {("InceptionV3", "f1"): 94.45}

# Table 2: test set #2 from another line (278 OK / 228 NG), InceptionV3.
_TABLE2 = {
  "trained_only_trainset": (((65, 213), (12, 216)), (55.53, 23.38, 84.42, 36.62)),
  # Printed under a swapped header "NG OK": read literally the diagonal would be 5 / 21; the numbers
  # printed below it (accuracy 94.86 %) only follow with the columns in the order OK, NG.
  "trained_with_synthetics": (((273, 5), (21, 207)), (94.86, 98.20, 92.86, 95.45)),
}
TABLE2_SUPPORT = {"OK": 278, "NG": 228}
TABLE2_NOTES = (
  "The 'trained with synthetics' block is headed 'NG OK' but its diagonal is 273 / 207: the header is "
  "swapped; the printed accuracy 94.86 % holds only for the columns read as OK, NG.",
  "Read with NG as the positive class, the synthetics cut overkill from 76.6 % to 1.8 % of OK panels "
  "(213 -> 5 of 278) and NG recall goes from 94.74 % to 90.79 % (216 -> 207 of 228): they buy precision, "
  "not recall.",
)


def _as_dicts(rows) -> dict[str, Any]:
  """Table rows as fresh dicts: name -> {'confusion_matrix': [[...], [...]], 'printed': {column: percent}}."""
  return {
    name: {"confusion_matrix": [list(row) for row in cm], "printed": dict(zip(PRINTED_COLUMNS, printed))}
    for name, (cm, printed) in rows.items()
  }


def table1() -> dict[str, Any]:
  """Table 1 (all four classifiers) as a fresh dict: model -> confusion matrix and printed columns."""
  return _as_dicts(_TABLE1)


def table2() -> dict[str, Any]:
  """Table 2 (both columns) as a fresh dict: setting -> confusion matrix and printed columns."""
  return _as_dicts(_TABLE2)


def recomputed(cm) -> dict[str, float]:
  """The paper's four columns recomputed from counts, in percent rounded as printed (two decimals)."""
  pc = metrics.paper_columns(np.asarray(cm), ng=1)
  return {k: round(100 * pc[k], 2) for k in PRINTED_COLUMNS}


def ng_positive(cm) -> dict[str, float]:
  """What the counts mean for inspection: NG recall, NG precision, overkill and leak rates (fractions)."""
  rep = metrics.binary_report(np.asarray(cm), positive=1)
  return {k: rep[k] for k in ("recall", "precision", "overkill_rate", "leak_rate")}
