"""The loss curve as a PNG, drawn with matplotlib's Agg backend (no display needed).

Uses a bare `Figure` with an Agg canvas rather than pyplot: no global figure state, nothing
to close, and no GUI backend is ever looked for. matplotlib writes its font cache under
MPLCONFIGDIR (the runtime images set it to /tmp/matplotlib: the job's home may be read-only).
"""

from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator


def loss_curve_png(
    series: dict[str, list[float]], width: int = 800, height: int = 500, dpi: int = 100, ylabel: str = "loss (MSE, standardised)"
) -> bytes:
    """A PNG (`width` x `height` px) of one or more loss curves against the epoch (from 1).

    The y axis is logarithmic when every finite value is positive, linear otherwise. NaN and
    infinite values are skipped (the line joins the finite points around them); a series
    without a finite value (no validation split) is left out.
    """
    points = {name: [(e, v) for e, v in enumerate(ys, start=1) if math.isfinite(v)] for name, ys in series.items()}
    drawn = {name: pts for name, pts in points.items() if pts}
    values = [v for pts in drawn.values() for _, v in pts]
    epochs = max((len(ys) for ys in series.values()), default=0)
    log_scale = bool(values) and min(values) > 0

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, pts in drawn.items():
        ax.plot(
            [e for e, _ in pts],
            [v for _, v in pts],
            label=f"{name} (last {pts[-1][1]:.4g})",
            linewidth=2,
            marker="o" if len(pts) <= 30 else None,
            markersize=4,
        )
    if log_scale:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if math.log10(max(values) / min(values)) <= 3:  # few decades: label 2x and 5x too
            ax.yaxis.set_minor_formatter(FuncFormatter(_two_and_five))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel + (", log scale" if log_scale else ""))
    ax.set_title("torchfit: loss per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if values:
        ax.set_xlim(1, max(2, epochs))
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no finite loss values", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, which="major", alpha=0.5)
    if log_scale:
        ax.grid(True, which="minor", alpha=0.15)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _two_and_five(v: float, _pos: object = None) -> str:
    """Labels for the minor ticks of a log axis: only at 2 and 5 times a power of ten."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v))
    return f"{v:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 5)) else ""
