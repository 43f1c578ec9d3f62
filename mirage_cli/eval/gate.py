"""``mirage eval check``: the quality gate. An ``eval.json`` against a committed baseline.

The baseline (``quality/baseline.json``, format ``mirage.quality-baseline``) holds the per-clip
means and the aggregate means of one ``mirage eval recon`` run, with why it was made, when, by
which command, and the facts of the machine that matter (torch version, threads, device). Every
metric of the baseline is compared per clip and for the aggregate (mean over clips) with the
tolerance of :func:`rule_for`:

* ``REGRESSION``: worse than the baseline by more than the tolerance (a PSNR lower, an LPIPS
  higher, a count that should not move moved), or present in the baseline but missing (None) in the
  run, or a baseline clip the run lacks;
* ``improved``: better by more than the tolerance (passes; the baseline should be renewed);
* ``new``: a metric or clip the baseline does not have (reported, passes).

The run is deterministic (same command, same machine: identical numbers), so a tolerance is not
noise allowance for one machine: it absorbs the last-bit differences of another CPU or torch
build while staying far below the clip-to-clip spread (a PSNR sd of about 0.5 dB over the
synthetic suite, an SSIM sd of about 0.03).

The aggregate is compared over the baseline's clips: with extra clips in the run (a suite being
added) the run's aggregate is recomputed over the clips the baseline has, so a new clip does not
move it.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.markup import escape
from rich.table import Table

from .. import __version__
from ..errors import MirageError
from ..io import write_json
from .metrics import PSNR_CAP, aggregate

if TYPE_CHECKING:
    from rich.console import JustifyMethod

BASELINE_FORMAT = "mirage.quality-baseline"
BASELINE_VERSION = 1
AGGREGATE = "(all)"
"""The ``clip`` of the aggregate rows (the mean over the baseline's clips)."""


@dataclass(frozen=True)
class Rule:
    """How one metric is judged: ``better`` is ``higher``, ``lower`` or ``same`` (a quantity that
    describes the clip or the protocol: any change beyond ``tolerance`` fails)."""

    better: str
    tolerance: float
    unit: str = ""

    def describe(self) -> str:
        """The change allowed: ``-0.05 dB`` (a drop of at most), ``+0.002`` (a rise), ``±0`` (none)."""
        sign = {"higher": "-", "lower": "+", "same": "±"}[self.better]
        return f"{sign}{self.tolerance:g}" + (f" {self.unit}" if self.unit else "")


PSNR = Rule("higher", 0.05, "dB")
"""PSNR-like (``psnr_*``, ``read_psnr_known``, ``follow_psnr``): a drop of more than 0.05 dB fails
(0.05 dB is a 1.2 % larger mean squared error, a tenth of the suite's clip-to-clip sd)."""
SSIM = Rule("higher", 0.002)
"""``ssim_*``: a drop of more than 0.002 fails (about a fifteenth of the clip-to-clip sd)."""
LPIPS = Rule("lower", 0.002)
"""``lpips_*`` (lower is better): a rise of more than 0.002 fails."""
COVERAGE = Rule("higher", 0.002)
"""``known_fraction`` (what the final memory knows): a drop of 0.2 % of the pixels fails."""
REGION = Rule("same", 0.002)
"""``memory_fraction``: the region ``*_memory`` is scored on (what frame 0's lift covers). Not a
quality: a change means the memory metrics are over other pixels, so it fails either way."""
TRUTH = Rule("same", 0.05, "dB")
"""``follow_psnr_truth``: the true frames against frame 0 reprojected, no generation involved; a
change means the clip or the protocol changed."""
COUNT = Rule("same", 0.0)
"""Counts (``revisit_frames``, ``capped_frames``, any ``*_frames``): decided by the cameras and the
protocol; any change fails."""
CHANGED = Rule("lower", 0.0005)
"""``*_changed`` (``loop_memory_changed``: the fraction of the input view's pixels the final memory
changed): a rise of 0.05 % of the pixels fails (a tenth of the spread over the loop clips)."""
OTHER = Rule("same", 1e-6)
"""A field without a rule: must not change (the run is deterministic); give it a rule here."""


def rule_for(field: str) -> Rule:
    """The :class:`Rule` of a metric, by its name."""
    if field.endswith("_frames"):
        return COUNT
    if field == "follow_psnr_truth":
        return TRUTH
    if field == "memory_fraction":
        return REGION
    if field == "known_fraction":
        return COVERAGE
    if field.endswith("_changed"):
        return CHANGED
    if field.startswith("lpips"):
        return LPIPS
    if field.startswith("ssim"):
        return SSIM
    if "psnr" in field:
        return PSNR
    return OTHER


def judge(field: str, base: float | None, now: float | None) -> tuple[str, float | None]:
    """``(status, delta)`` of one metric: ``ok``, ``improved``, ``REGRESSION``, ``MISSING`` (in the
    baseline, None in the run: fails) or ``new`` (None in the baseline, a value now)."""
    if base is None:
        return ("ok", None) if now is None else ("new", None)
    if now is None:
        return "MISSING", None
    rule = rule_for(field)
    delta = round(now - base, 6)  # eval.json rounds to 6 places: no float dust in the comparison
    worse = {"higher": -delta, "lower": delta, "same": abs(delta)}[rule.better]
    if worse > rule.tolerance + 1e-9:
        return "REGRESSION", delta
    if rule.better != "same" and -worse > rule.tolerance + 1e-9:
        return "improved", delta
    return "ok", delta


# ------------------------------------------------------------------------------------ inputs
def _number(v, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise MirageError(f"{where} is not a number ({v!r})")
    return float(v)


def _means(table, where: str) -> dict[str, float | None]:
    if not isinstance(table, dict):
        raise MirageError(f"{where}: expected an object of metric means")
    return {str(k): _number(v, f"{where}.{k}") for k, v in table.items()}


def eval_means(doc: dict, path: Path | str) -> tuple[dict[str, dict], dict[str, float | None]]:
    """``(clips {name: {metric: mean}}, aggregate {metric: mean})`` of an eval.json document (one
    line on a malformed one)."""
    clips, agg = doc.get("clips"), doc.get("aggregate")
    if not isinstance(clips, list) or not isinstance(agg, dict):
        raise MirageError(f"{path}: not a complete eval.json (no 'clips' list or 'aggregate' object)")
    out = {}
    for i, c in enumerate(clips):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise MirageError(f"{path}: clips[{i}] has no name")
        out[c["name"]] = _means(c.get("means"), f"{path}: clip {c['name']} means")
    aggregate = {}
    for k, v in agg.items():
        if not isinstance(v, dict) or "mean" not in v:
            raise MirageError(f"{path}: aggregate.{k} has no mean")
        aggregate[k] = _number(v["mean"], f"{path}: aggregate.{k}.mean")
    return out, aggregate


def read_baseline(path: Path | str) -> dict:
    """A baseline file, checked (one line on anything else)."""
    path = Path(path)
    if not path.is_file():
        raise MirageError(f"{path}: no baseline file here (make one with --update --why \"...\")")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MirageError(f"{path}: not a readable baseline ({e.__class__.__name__})") from e
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise MirageError(f"{path}: not a mirage quality baseline (format is not '{BASELINE_FORMAT}')")
    if doc.get("version") != BASELINE_VERSION:
        raise MirageError(f"{path}: baseline version {doc.get('version')!r}, this mirage reads {BASELINE_VERSION}")
    clips = doc.get("clips")
    if not isinstance(clips, dict) or not clips:
        raise MirageError(f"{path}: the baseline has no clips")
    for name, c in clips.items():
        _means(c.get("means") if isinstance(c, dict) else None, f"{path}: clip {name}")
    _means(doc.get("aggregate"), f"{path}: aggregate")
    return doc


# ------------------------------------------------------------------------------------ check
def check(doc: dict, baseline: dict, eval_path: Path | str = "eval.json") -> dict:
    """Compare an eval.json document with a baseline.

    Returns ``{"rows": [{clip, field, base, now, delta, tolerance, better, status}], "regressions":
    [line, ...], "improved": n, "new": n, "notes": [line, ...]}``; the aggregate rows come first
    (``clip`` = :data:`AGGREGATE`), then each baseline clip's, then clips only the run has.
    """
    clips, agg = eval_means(doc, eval_path)
    base_clips = {name: c["means"] for name, c in baseline["clips"].items()}
    notes = []
    missing_clips = [n for n in base_clips if n not in clips]
    extra = [n for n in clips if n not in base_clips]
    if extra or missing_clips:
        shared = [clips[n] for n in base_clips if n in clips]
        agg = {k: v["mean"] for k, v in aggregate(shared).items()} if shared else {}
        notes.append(f"the run's clips differ from the baseline's ({len(missing_clips)} missing, {len(extra)} new): "
                     f"its aggregate is recomputed over the {len(shared)} clips both have")
    rows = _rows(AGGREGATE, baseline["aggregate"], agg)
    for name, means in base_clips.items():
        if name in clips:
            rows += _rows(name, means, clips[name])
        else:
            rows.append({"clip": name, "field": "(clip)", "base": None, "now": None, "delta": None, "tolerance": "",
                         "better": "", "status": "MISSING"})
    for name in extra:
        rows += [{"clip": name, "field": f, "base": None, "now": v, "delta": None, "tolerance": "", "better": "",
                  "status": "new"} for f, v in clips[name].items() if v is not None]
    _capped_means(rows, base_clips, clips, notes)
    regressions = [_regression_line(r) for r in rows if r["status"] in ("REGRESSION", "MISSING")]
    facts = run_facts(eval_path)
    for key in ("torch", "threads", "device"):
        was, now = (baseline.get("machine") or {}).get(key), facts.get(key)
        if was is not None and now is not None and was != now:
            notes.append(f"{key}: {was} for the baseline, {now} now (numbers may differ in the last digits)")
    return {"rows": rows, "regressions": regressions, "improved": sum(r["status"] == "improved" for r in rows),
            "new": sum(r["status"] == "new" for r in rows), "notes": notes}


def _capped_means(rows: list[dict], base_clips: dict, clips: dict, notes: list[str]) -> None:
    """An aggregate PSNR that dropped only because a clip reached :data:`~.metrics.PSNR_CAP` (an
    identical pair: left out of the mean over clips, as the protocol does for capped frames) is not
    a regression: the mean is then over other clips. Such rows get status ``recomposed`` and a note;
    every clip is still judged on its own rows."""
    for r in rows:
        if r["clip"] != AGGREGATE or r["status"] != "REGRESSION" or rule_for(r["field"]) is not PSNR:
            continue
        newly = [n for n in base_clips if n in clips and (clips[n].get(r["field"]) or 0) >= PSNR_CAP
                 and (base_clips[n].get(r["field"]) or 0) < PSNR_CAP]
        if newly:
            r["status"] = "recomposed"
            notes.append(f"aggregate {r['field']}: {', '.join(newly)} reached the {PSNR_CAP:g} dB cap (identical) and "
                         f"left the mean, which is now over other clips; judged per clip")


def _rows(clip: str, base: dict, now: dict) -> list[dict]:
    rows = []
    for field in list(base) + [f for f in now if f not in base]:
        b, n = base.get(field), now.get(field)
        if b is None and n is None:
            continue  # e.g. psnr_revisit of a clip that never revisits: nothing to judge
        status, delta = judge(field, b, n)
        rule = rule_for(field)
        rows.append({"clip": clip, "field": field, "base": b, "now": n, "delta": delta,
                     "tolerance": rule.describe(), "better": rule.better, "status": status})
    return rows


def _regression_line(r: dict) -> str:
    where = "aggregate" if r["clip"] == AGGREGATE else f"clip {r['clip']}"
    if r["field"] == "(clip)":
        return f"regression: clip {r['clip']} is in the baseline but not in the run"
    if r["status"] == "MISSING":
        return f"regression: {where} {r['field']}: {_fmt(r['base'])} in the baseline, missing now"
    what = "must not change" if r["better"] == "same" else f"{r['better']} is better"
    return (f"regression: {where} {r['field']}: {_fmt(r['base'])} -> {_fmt(r['now'])} ({r['delta']:+.4f}; "
            f"allowed {r['tolerance']}, {what})")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 1.5 else f"{v:.3f}"


def check_table(result: dict, show_all: bool = False):
    """A rich Table of :func:`check`: baseline, now, delta, allowed change, status per metric,
    grouped under a line per clip; every row of the aggregate, and of the clips those that are not
    ``ok`` (every row with ``show_all``)."""
    shown = [r for r in result["rows"] if show_all or r["clip"] == AGGREGATE or r["status"] != "ok"]
    hidden = len(result["rows"]) - len(shown)
    t = Table(title="mirage eval check: the run against the baseline", box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True, caption=f"{hidden} clip rows ok, not shown (--all shows them)" if hidden else None)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("clip / metric", "left"), ("baseline", "right"), ("now", "right"), ("delta", "right"), ("allowed", "left"),
        ("", "left"))
    for name, justify in columns:
        t.add_column(name, justify=justify, no_wrap=name != "clip / metric", overflow="fold")
    style = {"ok": "green", "improved": "cyan", "new": "cyan", "recomposed": "yellow", "REGRESSION": "bold red",
             "MISSING": "bold red"}
    clip = None
    for r in shown:
        if r["clip"] != clip:
            clip = r["clip"]
            t.add_row("[bold]" + ("all clips (mean)" if clip == AGGREGATE else escape(clip)) + "[/]")
        delta = "" if r["delta"] is None else f"{r['delta']:+.4f}"
        t.add_row(f"  {r['field']}", _fmt(r["base"]), _fmt(r["now"]), delta, r["tolerance"],
                  f"[{style[r['status']]}]{r['status']}[/]")
    return t


def summary(result: dict) -> str:
    """One line: passed or not, with the improvements and new metrics."""
    n = len(result["regressions"])
    parts = [f"{n} regression{'s' if n != 1 else ''}" if n else "no regression"]
    if result["improved"]:
        parts.append(f"{result['improved']} improved beyond the tolerance (renew the baseline: --update --why \"...\")")
    if result["new"]:
        parts.append(f"{result['new']} new (not in the baseline; --update adds them)")
    return ("FAILED: " if n else "passed: ") + "; ".join(parts)


# ------------------------------------------------------------------------------------ update
def run_facts(eval_path: Path | str) -> dict:
    """What the run recorded about itself: the command (``batch.json`` next to eval.json) and, from
    its first clip's ``run.json``, the torch version, threads and device (None where not found)."""
    eval_path = Path(eval_path)
    facts: dict = {"eval_command": None, "torch": None, "threads": None, "device": None}
    try:
        facts["eval_command"] = json.loads((eval_path.parent / "batch.json").read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        pass
    try:
        doc = json.loads(eval_path.read_text())
        run = json.loads((Path(doc["clips"][0]["run_dir"]) / "run.json").read_text())
        facts.update(torch=run.get("versions", {}).get("torch"), threads=run.get("threads"), device=run.get("device"))
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        pass
    return facts


def make_baseline(doc: dict, eval_path: Path | str, why: str, command: str | None = None,
                  now: _dt.datetime | None = None) -> dict:
    """The baseline document of an eval.json: its means, why, when, by which command, on what."""
    why = (why or "").strip()
    if not why:
        raise MirageError("--update needs --why \"reason\": a new baseline is a deliberate change that says why")
    if doc.get("failed"):
        names = ", ".join(f["name"] for f in doc["failed"])
        raise MirageError(f"{eval_path}: clips failed ({names}); a baseline needs every clip scored")
    clips, agg = eval_means(doc, eval_path)
    if not clips:
        raise MirageError(f"{eval_path}: no scored clip to make a baseline of")
    facts = run_facts(eval_path)
    sources = {c["name"]: c.get("source") for c in doc["clips"]}
    frames = {c["name"]: c.get("frames") for c in doc["clips"]}
    if facts["torch"] is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            facts["torch"] = version("torch")
        except PackageNotFoundError:
            pass
    return {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "why": why,
        "date": (now or _dt.datetime.now(_dt.timezone.utc)).isoformat(timespec="seconds"),
        "command": command or facts["eval_command"],
        "eval_command": facts["eval_command"],
        "commit": _git_head(),
        "machine": {"mirage": __version__, "torch": facts["torch"], "threads": facts["threads"],
                    "device": facts["device"], "python": platform.python_version(),
                    "platform": f"{platform.system()} {platform.machine()}"},
        "config": doc.get("config"),
        "aggregate": agg,
        "clips": {name: {"source": sources[name], "frames": frames[name], "means": m} for name, m in clips.items()},
    }


def update_baseline(doc: dict, eval_path: Path | str, path: Path | str, why: str, command: str | None = None) -> dict:
    """Write the baseline of ``doc`` to ``path``, atomically (a half-written baseline would fail
    every later check). Refused (nothing written) without a reason or with a failed clip.

    Returns ``{"baseline": the new document, "previous": the run checked against the old baseline
    (:func:`check`; None without one), "note": a line when the old file was not a readable baseline}``.
    """
    new = make_baseline(doc, eval_path, why, command)
    previous, note = None, None
    if Path(path).exists():
        try:
            old = read_baseline(path)
        except MirageError as e:  # a typo in --baseline must not destroy another file
            raise MirageError(f"{path}: exists and is not a quality baseline, not overwritten ({e}); "
                              "remove it first or name another file") from None
        previous = check(doc, old, eval_path)
    write_json(Path(path), new)
    return {"baseline": new, "previous": previous, "note": note}


def _git_head() -> str | None:
    """The commit of the checkout this package runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None
