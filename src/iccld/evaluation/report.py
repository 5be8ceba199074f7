"""Per-class IoU tables from :meth:`ConfusionMatrix.summary` dictionaries.

``format_table`` gives a fixed-width plain-text table of one summary (for the terminal and logs);
``markdown_table`` puts several summaries side by side, one column per method (for reports).
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
