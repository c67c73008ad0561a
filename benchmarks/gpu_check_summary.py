"""Bookkeeping of `benchmarks/gpu_check.sh`: each part's status, and the one summary table printed last.

  --record WORK --part a --name autoencoder_step --status ok --rc 0 --wall 93 --limit 130
      appends the part's status to WORK/status.jsonl; a part that left no JSON (crash, time-out, skipped) gets
      one holding its status, the last lines of its log and every result row its log printed (the benchmarks
      print each row as it is measured), so a part cut off by its time limit keeps what it measured.
  --summarize WORK --out OUT [--smoke 1]
      prints the summary table (each part's headline numbers against the targets of ../shared/PERFORMANCE.md)
      and writes OUT/summary.md and OUT/summary.json.

Standard library only (it must run whatever else failed).
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (no JAX or PyTorch at import)

PARTS = {
  "a": "autoencoder_step",
  "b": "paper_run",
  "c": "smote",
  "d": "classifier_step",
  "e": "quality_run",
  "f": "step_profile",
}


def rows_from_log(text: str) -> list[dict]:
  """The result rows a benchmark printed, one per line, as JSON or as a Python dict (`print(row)`)."""
  rows = []
  for line in text.splitlines():
    line = line.strip()
    if not (line.startswith("{") and line.endswith("}")):
      continue
    try:
      row = json.loads(line)
    except ValueError:
      try:
        row = ast.literal_eval(line)
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        continue
    if isinstance(row, dict) and ("impl" in row or "run" in row or "layer" in row):
      rows.append(row)
  return rows


def record(work: pathlib.Path, part: str, name: str, status: str, rc: int, wall: int, limit: int) -> None:
  path = work / f"{part}_{name}.json"
  log = work / f"{part}.log"
  text = log.read_text(errors="replace") if log.exists() else ""
  tail = text.strip().splitlines()[-8:]
  if status == "ok" and not path.exists():
    status = "failed"  # exit code 0 without a result is not a success
  entry = {"part": part, "name": name, "status": status, "exit_code": rc, "wall_s": wall, "limit_s": limit}
  if status != "ok":
    entry["log_tail"] = tail
    if not path.exists():
      machine = _machine(work) or {"gpus": common.nvidia_smi()}
      machine = machine | {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
      rows = rows_from_log(text)
      entry["rows_from_log"] = len(rows)
      common.write_json(
        path,
        {
          "benchmark": name,
          "status": status,
          "machine": machine,
          "rows": rows,
          "rows_from_log": True,
          "error": f"part {part} {status} (exit code {rc}) after {wall} s",
          "log_tail": tail,
        },
      )
  with (work / "status.jsonl").open("a") as f:
    f.write(json.dumps(entry) + "\n")


def _machine(work: pathlib.Path) -> dict:
  """WORK/machine.json (versions and devices, written by gpu_check.sh before the first part), or {}."""
  path = work / "machine.json"
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError):
    return {}


def _load(work: pathlib.Path, part: str) -> dict:
  path = work / f"{part}_{PARTS[part]}.json"
  return json.loads(path.read_text()) if path.exists() else {}


def _fmt(v, unit=""):
  return "-" if v is None else f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:.2f}{unit}"


def _met(ok: bool | None, smoke: bool) -> str:
  if smoke:
    return "n/a (smoke)"
  return "-" if ok is None else ("yes" if ok else "NO")


def headlines(work: pathlib.Path, smoke: bool) -> list[dict]:
  """One line per measured result: part, what, result, target, met."""
  lines = []
  a = _load(work, "a").get("rows", [])
  for case in dict.fromkeys((r["preset"], r.get("channels"), r["batch"]) for r in a):
    rows = [r for r in a if (r["preset"], r.get("channels"), r["batch"]) == case and r.get("img_per_s")]
    jax_rows = [r for r in rows if r["impl"].startswith("jax")]
    torch_rows = [r for r in rows if r["impl"].startswith("torch")]
    best_j = max(jax_rows, key=lambda r: r["img_per_s"], default=None)
    best_t = max(torch_rows, key=lambda r: r["img_per_s"], default=None)
    ratio = best_j["img_per_s"] / best_t["img_per_s"] if best_j and best_t else None
    what = f"DeepSMOTE step {case[0]} x{case[1]}ch B={case[2]}"
    result = (
      f"{_fmt(best_j and best_j['img_per_s'])} img/s ({best_j['impl'] if best_j else 'failed'}) vs "
      f"{_fmt(best_t and best_t['img_per_s'])} ({best_t['impl'] if best_t else 'no baseline'})"
      + (f" = {ratio:.2f}x" if ratio else "")
    )
    lines.append(
      {
        "part": "a",
        "what": what,
        "result": result,
        "target": ">= 3x best PyTorch",
        "met": _met(None if ratio is None else ratio >= 3, smoke),
      }
    )
  b = _load(work, "b").get("rows", [])
  steps = [r["steps_s"] for r in b if r.get("steps_s")]
  warm = next((r.get("job_wall_s") for r in b if r.get("run") == "warm cache"), None)
  cold = next((r.get("job_wall_s") for r in b if r.get("run") == "cold cache"), None)
  if b:
    lines.append(
      {
        "part": "b",
        "what": f"paper run: 1,000 epochs, steps only ({b[0].get('dtype', 'auto dtype')})",
        "result": _fmt(min(steps) if steps else None, " s"),
        "target": "<= 3 s",
        "met": _met(min(steps) <= 3 if steps else None, smoke),
      }
    )
    lines.append(
      {
        "part": "b",
        "what": "paper run: wall, cold / warm cache",
        "result": f"{_fmt(cold, ' s')} / {_fmt(warm, ' s')}",
        "target": "warm <= 15 s",
        "met": _met(None if warm is None else warm <= 15, smoke),
      }
    )
  c = [r for r in _load(work, "c").get("rows", []) if r.get("op") == "resample"]
  for r in c:  # rows kept from a log lack the speed-up the benchmark adds at its end
    base = [
      b["median_s"] for b in c if not b["impl"].startswith("deepsmote") and b.get("median_s") and b["n"] == r["n"]
    ]
    if r["impl"].startswith("deepsmote") and r.get("median_s") and base and "speedup" not in r:
      r["speedup"] = base[0] / r["median_s"]
  for r in c:
    if not r["impl"].startswith("deepsmote"):
      continue
    if r.get("error"):
      lines.append(
        {
          "part": "c",
          "what": f"SMOTE n={r['n']:,} d={r['d']}",
          "result": r["error"][:60],
          "target": "-",
          "met": _met(False, smoke),
        }
      )
      continue
    speed = r.get("speedup")
    result = f"{_fmt(r['median_s'], ' s')}" + (f", {speed:.1f}x imblearn" if speed else "")
    if r.get("tiles"):
      result += f" (tiles {r['tiles']})"
    if r["n"] >= 1_000_000:
      target, ok = "<= 30 s", r["median_s"] <= 30
    else:
      target, ok = ">= 20x imblearn", (None if speed is None else speed >= 20)
    lines.append(
      {
        "part": "c",
        "what": f"SMOTE n={r['n']:,} d={r['d']}",
        "result": result,
        "target": target,
        "met": _met(ok, smoke),
      }
    )
  d = _load(work, "d").get("rows", [])
  for model in dict.fromkeys(r["model"] for r in d):
    rows = [r for r in d if r["model"] == model and r.get("img_per_s")]
    best_j = max((r for r in rows if r["impl"].startswith("jax")), key=lambda r: r["img_per_s"], default=None)
    best_t = max((r for r in rows if r["impl"].startswith("torchvision")), key=lambda r: r["img_per_s"], default=None)
    ratio = best_j["img_per_s"] / best_t["img_per_s"] if best_j and best_t else None
    target = ">= 2x torchvision" if model == "inception_v3" else "-"
    lines.append(
      {
        "part": "d",
        "what": f"{model} train step",
        "target": target,
        "result": (
          f"{_fmt(best_j and best_j['img_per_s'])} img/s vs "
          f"{_fmt(best_t and best_t['img_per_s'])}" + (f" = {ratio:.2f}x" if ratio else "")
        ),
        "met": _met(None if ratio is None or model != "inception_v3" else ratio >= 2, smoke),
      }
    )
  for r in _load(work, "e").get("rows", []):
    lines.append(
      {
        "part": "e",
        "what": f"quality: {r['method']}",
        "target": "NG recall >= 98 % at low overkill",
        "result": (
          f"ACSA {_fmt(r.get('acsa'), '%')}, NG recall@thr {_fmt(r.get('ng_recall_at_threshold'), '%')}, "
          f"overkill@thr {_fmt(r.get('overkill_at_threshold'), '%')}"
        ),
        "met": "-",
      }
    )
  for t in _load(work, "f").get("traces", []):
    what = f"step profile {t['preset']} B={t['batch']} {t['dtype']}"
    if t.get("error"):
      lines.append({"part": "f", "what": what, "result": t["error"][:60], "target": "-", "met": "-"})
      continue
    classes = ", ".join(f"{c['class']} {100 * c['share']:.0f}%" for c in t.get("by_class", [])[:3] if c.get("share"))
    lines.append(
      {
        "part": "f",
        "what": what,
        "result": f"{t['device_ms_per_step']:.2f} ms/step on the device: {classes}",
        "target": "-",
        "met": "-",
      }
    )
  return lines


def summarize(work: pathlib.Path, out: pathlib.Path, smoke: bool) -> None:
  status_path = work / "status.jsonl"
  statuses = [json.loads(x) for x in status_path.read_text().splitlines()] if status_path.exists() else []
  machine = _machine(work) or next(
    (j["machine"] for p in PARTS if (j := _load(work, p)).get("machine")), common.machine_info()
  )
  lines = headlines(work, smoke)
  status_cols = ["part", "name", "status", "wall_s", "limit_s", "exit_code"]
  line_cols = ["part", "what", "result", "target", "met"]
  md = [
    f"# gpu_check {'(smoke, CPU sizes: no target applies)' if smoke else ''}".rstrip(),
    "",
    f"Machine: {common.device_label(machine)}; date {machine.get('date_utc')}; jax {machine.get('jax')}, "
    f"torch {machine.get('torch')}, torchvision {machine.get('torchvision')}.",
    "",
    common.markdown_table(statuses, status_cols),
    "",
    common.markdown_table(lines, line_cols),
    "",
  ]
  for s in statuses:
    if s.get("log_tail"):
      md += [f"Part {s['part']} ({s['status']}), last log lines:", "", "```", *s["log_tail"], "```", ""]
  out.mkdir(parents=True, exist_ok=True)
  (out / "summary.md").write_text("\n".join(md))
  common.write_json(out / "summary.json", {"smoke": smoke, "machine": machine, "parts": statuses, "results": lines})
  print()
  common.print_table(statuses, status_cols)
  print()
  common.print_table(lines, line_cols, max_width=70)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--record", type=pathlib.Path)
  p.add_argument("--summarize", type=pathlib.Path)
  p.add_argument("--part")
  p.add_argument("--name")
  p.add_argument("--status")
  p.add_argument("--rc", type=int, default=0)
  p.add_argument("--wall", type=int, default=0)
  p.add_argument("--limit", type=int, default=0)
  p.add_argument("--out", type=pathlib.Path)
  p.add_argument("--smoke", default="0")
  args = p.parse_args(argv)
  if args.record:
    record(args.record, args.part, args.name, args.status, args.rc, args.wall, args.limit)
  elif args.summarize:
    summarize(args.summarize, args.out, args.smoke not in ("0", "", "false"))
  else:
    p.error("give --record or --summarize")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
