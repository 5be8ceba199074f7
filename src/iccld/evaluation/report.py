"""Per-class IoU tables from :meth:`ConfusionMatrix.summary` dictionaries.

``format_table`` gives a fixed-width plain-text table of one summary (for the terminal and logs);
``markdown_table`` puts several summaries side by side, one column per method (for reports);
``format_confusions`` lists, per class, where its ground-truth pixels went
(:meth:`ConfusionMatrix.confusions`).
Values are percentages with one decimal; an undefined value (a class absent from both prediction
and ground truth) shows as "-".
"""

from __future__ import annotations

from collections.abc import Mapping

_FIXED_KEYS = ("miou", "per_class", "pixel_accuracy", "num_images")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _mean_rows(summary: Mapping) -> list[tuple[str, str]]:
    """(key, label) of the averages in ``summary``: the all-class mean first, then subsets."""
    n = len(summary.get("per_class", {}))
    rows = [("miou", f"mIoU ({n} classes)" if n else "mIoU")]
    for key in summary:
        if key not in _FIXED_KEYS and key.startswith("miou"):
            digits = key[len("miou"):]
            rows.append((key, f"mIoU ({digits} classes)" if digits.isdigit() else key))
    rows.append(("pixel_accuracy", "pixel accuracy"))
    return rows


def format_table(summary: Mapping) -> str:
    """A plain-text table: one row per class, then the means and the pixel accuracy."""
    rows = [(name, _fmt(v)) for name, v in summary.get("per_class", {}).items()]
    rows += [(label, _fmt(summary.get(key))) for key, label in _mean_rows(summary)]
    width = max(len("class"), *(len(name) for name, _ in rows))
    lines = [f"{'class':<{width}}  {'IoU %':>6}", "-" * (width + 8)]
    for i, (name, value) in enumerate(rows):
        if i == len(summary.get("per_class", {})):
            lines.append("-" * (width + 8))
        lines.append(f"{name:<{width}}  {value:>6}")
    return "\n".join(lines)


def format_confusions(rows: list[dict]) -> str:
    """A plain-text table: class, ground-truth pixels, % predicted correctly, most frequent mistakes."""
    if not rows:
        return "no labelled pixels"
    body = []
    for r in rows:
        mistakes = [f"{p['class']} {p['share']:.1f}" for p in r["predicted_as"]]
        if r.get("unassigned", 0) > 0:
            mistakes.append(f"(no class) {r['unassigned']:.1f}")
        body.append((r["class"], f"{r['pixels']:,}", f"{r['correct']:.1f}", ", ".join(mistakes) or "-"))
    w0 = max(len("class"), *(len(b[0]) for b in body))
    w1 = max(len("GT pixels"), *(len(b[1]) for b in body))
    lines = [f"{'class':<{w0}}  {'GT pixels':>{w1}}  {'correct %':>9}  most often predicted as (% of GT pixels)",
             "-" * (w0 + w1 + 55)]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c:>9}  {d}" for a, b, c, d in body]
    return "\n".join(lines)


def markdown_table(summaries: Mapping[str, Mapping]) -> str:
    """A markdown table with one column per method (the keys of ``summaries``).

    Rows: every class named in any summary (in first-seen order), then the means present in any
    summary, then pixel accuracy. A method lacking a row shows "-".
    """
    if not summaries:
        raise ValueError("markdown_table needs at least one summary")
    classes: list[str] = []
    means: dict[str, str] = {}
    for summary in summaries.values():
        for name in summary.get("per_class", {}):
            if name not in classes:
                classes.append(name)
        for key, label in _mean_rows(summary):
            means.setdefault(key, label)
    means["pixel_accuracy"] = means.pop("pixel_accuracy")  # keep it last

    def esc(text: str) -> str:
        return str(text).replace("|", "\\|")

    header = "| class | " + " | ".join(esc(label) for label in summaries) + " |"
    rule = "|---|" + "---:|" * len(summaries)
    lines = [header, rule]
    for name in classes:
        cells = [_fmt(s.get("per_class", {}).get(name)) for s in summaries.values()]
        lines.append(f"| {esc(name)} | " + " | ".join(cells) + " |")
    for key, label in means.items():
        cells = [_fmt(s.get(key)) for s in summaries.values()]
        lines.append(f"| **{esc(label)}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)
