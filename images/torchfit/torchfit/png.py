"""A loss-curve plot written as PNG with the standard library only (zlib + struct).

Matplotlib would add ~100 MB to the image for one line chart; this draws axes, a grid, the
curves (log scale), tick labels and a legend with a 3x5 pixel font.
"""

from __future__ import annotations

import math
import struct
import zlib

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREY: Color = (225, 225, 225)
SERIES: tuple[Color, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44))

# 3x5 glyphs, rows top to bottom, 3 bits each (MSB left).
FONT = {
    "0": (7, 5, 5, 5, 7), "1": (2, 6, 2, 2, 7), "2": (7, 1, 7, 4, 7), "3": (7, 1, 7, 1, 7),
    "4": (5, 5, 7, 1, 1), "5": (7, 4, 7, 1, 7), "6": (7, 4, 7, 5, 7), "7": (7, 1, 1, 1, 1),
    "8": (7, 5, 7, 5, 7), "9": (7, 5, 7, 1, 7), ".": (0, 0, 0, 0, 2), "-": (0, 0, 7, 0, 0),
    "+": (0, 2, 7, 2, 0), " ": (0, 0, 0, 0, 0), ":": (0, 2, 0, 2, 0),
    "a": (0, 7, 1, 7, 7), "c": (0, 7, 4, 4, 7), "d": (1, 7, 5, 5, 7), "e": (7, 5, 7, 4, 7),
    "g": (7, 5, 7, 1, 7), "h": (4, 4, 7, 5, 5), "i": (2, 0, 2, 2, 2), "l": (4, 4, 4, 4, 6),
    "n": (0, 6, 5, 5, 5), "o": (0, 7, 5, 5, 7), "p": (7, 5, 7, 4, 4), "r": (0, 7, 4, 4, 4),
    "s": (7, 4, 7, 1, 7), "t": (4, 7, 4, 4, 7), "u": (0, 5, 5, 5, 7), "v": (0, 5, 5, 5, 2),
    "x": (0, 5, 2, 5, 5), "y": (5, 5, 7, 1, 7), "m": (0, 7, 7, 5, 5), "(": (1, 2, 2, 2, 1),
    ")": (4, 2, 2, 2, 4), "=": (0, 7, 0, 7, 0),
}


class Canvas:
    """An RGB raster with just enough drawing for a line chart."""

    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = bytearray(WHITE * (width * height))

    def set(self, x: int, y: int, c: Color) -> None:
        if 0 <= x < self.w and 0 <= y < self.h:
            i = 3 * (y * self.w + x)
            self.px[i : i + 3] = bytes(c)

    def line(self, x0: int, y0: int, x1: int, y1: int, c: Color, thick: int = 1) -> None:
        """Bresenham's line, `thick` pixels wide."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for t in range(thick):
                self.set(x0, y0 + t, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, s: str, c: Color = BLACK, scale: int = 2) -> None:
        """Draw `s` with its top-left corner at (x, y); unknown characters become blanks."""
        for ch in s.lower():
            for row, bits in enumerate(FONT.get(ch, FONT[" "])):
                for col in range(3):
                    if bits & (4 >> col):
                        for a in range(scale):
                            for b in range(scale):
                                self.set(x + col * scale + a, y + row * scale + b, c)
            x += 4 * scale

    def png(self) -> bytes:
        """The raster as PNG bytes (8-bit RGB, no filtering)."""
        stride = 3 * self.w
        raw = b"".join(b"\0" + bytes(self.px[y * stride : (y + 1) * stride]) for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        header = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def loss_curve_png(series: dict[str, list[float]], width: int = 640, height: int = 400) -> bytes:
    """A PNG of one or more loss curves against the epoch, y on a log scale."""
    cv = Canvas(width, height)
    left, right, top, bottom = 70, width - 20, 40, height - 40
    values = [v for ys in series.values() for v in ys if v > 0 and math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (1.0, 10.0)
    if hi <= lo:
        hi = lo * 10
    llo, lhi = math.log10(lo), math.log10(hi)
    n = max((len(ys) for ys in series.values()), default=1)

    def xy(i: int, v: float) -> tuple[int, int]:
        x = left + (right - left) * (i / max(n - 1, 1))
        lv = math.log10(max(v, lo))
        y = bottom - (bottom - top) * ((lv - llo) / (lhi - llo))
        return round(x), round(y)

    for k in range(5):  # horizontal grid lines with their values
        y = round(bottom - (bottom - top) * k / 4)
        cv.line(left, y, right, y, GREY)
        cv.text(4, y - 5, _fmt(10 ** (llo + (lhi - llo) * k / 4)))
    cv.line(left, top, left, bottom, BLACK)
    cv.line(left, bottom, right, bottom, BLACK)
    cv.text(left - 4, bottom + 8, "0")
    cv.text(right - 8 * len(str(n)), bottom + 8, str(n))
    cv.text((left + right) // 2 - 20, bottom + 20, "epoch")
    cv.text(left, 12, "loss (log scale)")
    for s, (name, ys) in enumerate(series.items()):
        colour = SERIES[s % len(SERIES)]
        points = [xy(i, v) for i, v in enumerate(ys) if math.isfinite(v)]
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            cv.line(x0, y0, x1, y1, colour, thick=2)
        lx = right - 150
        ly = top + 6 + 16 * s
        cv.line(lx, ly + 4, lx + 20, ly + 4, colour, thick=3)
        cv.text(lx + 26, ly, name, colour)
    return cv.png()
