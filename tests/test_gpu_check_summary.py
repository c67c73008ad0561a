"""`benchmarks/gpu_check_summary.py`: a part cut off by its time limit keeps the rows its log printed."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_check_summary as summary
from benchmarks import step_profile

# What the first H200 run's logs looked like: rows printed as Python dicts (part a) and as JSON (part c),
# between warnings and progress lines.
LOG_A = """\
W1127 18:42:48.273439   21508 cuda_timer.cc:88] Delay kernel timed out
{'impl': 'jax bfloat16', 'preset': 'amoled_dent_200', 'channels': 3, 'batch': 256, 'loss_finite': True, 'error': None}
{'impl': 'torch bf16_cl', 'preset': 'amoled_dent_200', 'channels': 3, 'batch': 256, 'img_per_s': 32611.8, 'error': None}
{'impl': 'jax float32', 'preset': 'amoled_dent_200', 'channels': 3, 'batch': 256, 'img_per_s': 33089.7}
{not a row}
"""
LOG_C = """\
{"impl": "deepsmote_jax fit_resample", "op": "resample", "n": 20000, "d": 512, "median_s": 0.0418}
{"impl": "imblearn SMOTE.fit_resample", "op": "resample", "n": 20000, "d": 512, "median_s": 1.2723}
{"impl": "deepsmote_jax fit_resample", "op": "resample", "n": 1000000, "d": 512, "median_s": 87.6, "tiles": "1024"}
"""


def test_rows_from_log_reads_json_and_python_dicts_and_nothing_else():
  rows = summary.rows_from_log(LOG_A + LOG_C + "step=300 val_average_precision=0.38\n{'progress': 1}\n")
  assert [r["impl"] for r in rows] == [
    "jax bfloat16",
    "torch bf16_cl",
    "jax float32",
    "deepsmote_jax fit_resample",
    "imblearn SMOTE.fit_resample",
    "deepsmote_jax fit_resample",
  ]
  assert rows[0]["loss_finite"] is True and rows[0]["error"] is None and "img_per_s" not in rows[0]


@pytest.fixture
def timed_out_work(tmp_path):
  (tmp_path / "machine.json").write_text(
    json.dumps({"jax": "0.11.2", "torch": "2.11.0", "gpus": [{"name": "H200", "driver_version": "580"}]})
  )
  (tmp_path / "a.log").write_text(LOG_A)
  (tmp_path / "c.log").write_text(LOG_C)
  for part, name in (("a", "autoencoder_step"), ("c", "smote")):
    summary.record(tmp_path, part, name, "timeout", 124, 130, 130)
  return tmp_path


def test_a_timed_out_part_keeps_its_rows_and_the_machine(timed_out_work):
  a = json.loads((timed_out_work / "a_autoencoder_step.json").read_text())
  assert a["status"] == "timeout" and a["rows_from_log"] is True and len(a["rows"]) == 3
  assert a["machine"]["jax"] == "0.11.2" and a["machine"]["date_utc"]
  status = [json.loads(x) for x in (timed_out_work / "status.jsonl").read_text().splitlines()]
  assert [s["rows_from_log"] for s in status] == [3, 3]


def test_headlines_of_kept_rows_against_the_targets(timed_out_work):
  lines = {(x["part"], x["what"]): x for x in summary.headlines(timed_out_work, smoke=False)}
  step = lines[("a", "DeepSMOTE step amoled_dent_200 x3ch B=256")]
  assert "33,090 img/s (jax float32)" in step["result"] and "1.01x" in step["result"] and step["met"] == "NO"
  small = lines[("c", "SMOTE n=20,000 d=512")]
  assert "30.4x imblearn" in small["result"] and small["met"] == "yes"  # speed-up computed from the kept rows
  large = lines[("c", "SMOTE n=1,000,000 d=512")]
  assert "tiles 1024" in large["result"] and large["met"] == "NO"


def test_summary_names_the_versions_from_machine_json(timed_out_work, tmp_path_factory):
  out = tmp_path_factory.mktemp("out")
  summary.summarize(timed_out_work, out, smoke=False)
  md = (out / "summary.md").read_text()
  assert "jax 0.11.2" in md and "torch 2.11.0" in md


# A Perfetto trace as jax.profiler writes it: metadata naming processes and threads, then complete events.
def _trace(device: bool):
  meta = [
    {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/host:CPU"}},
    {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "tf_XLACpuClient/1"}},
    {"ph": "M", "name": "thread_name", "pid": 1, "tid": 8, "args": {"name": "python"}},
  ]
  if device:
    meta.append({"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/device:GPU:0"}})
  pid, tid = (2, 0) if device else (1, 7)
  events = [
    {"ph": "X", "pid": pid, "tid": tid, "name": "sm90_xmma_fprop_implicit_gemm_bf16", "dur": 600.0,
     "args": {"hlo_op": "conv.1"}},
    {"ph": "X", "pid": pid, "tid": tid, "name": "loop_convert_fusion", "dur": 300.0, "args": {"hlo_op": "fusion.2"}},
    {"ph": "X", "pid": pid, "tid": tid, "name": "transpose_copy_fusion", "dur": 100.0},
    {"ph": "X", "pid": 1, "tid": 8, "name": "PjitFunction(step)", "dur": 5000.0},  # host: never counted
  ]  # fmt: skip
  if not device:
    events.append({"ph": "X", "pid": 1, "tid": 7, "name": "ThunkExecutor::Execute", "dur": 1000.0})
  return {"traceEvents": meta + events}


@pytest.mark.parametrize("device", [True, False])
def test_trace_summary_counts_device_time_once(device):
  s = step_profile.summarize_trace(_trace(device), steps=2)
  assert s["source"] == ("device" if device else "XLA host threads")
  assert s["device_ms_per_step"] == pytest.approx(0.5)  # (600 + 300 + 100) us over 2 steps
  shares = {r["class"]: r["share"] for r in s["by_class"]}
  assert shares == pytest.approx({"convolution/matmul (library)": 0.6, "XLA fusion": 0.3, "copy/transpose": 0.1})
  assert s["by_kernel"][0]["kernel"].startswith("sm90_xmma") and s["by_kernel"][0]["calls_per_step"] == 0.5
  assert {r["hlo_op"] for r in s["by_hlo_op"]} == {"conv.1", "fusion.2"}


def test_convert_fusions_are_not_convolutions():
  assert step_profile.kernel_class("convert_tanh_fusion.1") == "XLA fusion"
  assert step_profile.kernel_class("conv_general_dilated.40") == "convolution/matmul (library)"
