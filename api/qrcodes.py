"""QR codes for TOTP enrolment: the terminal's (``linevault users``) and the console's SVG.

Both draw the same matrix from the ``qrcode`` package (error correction and layout are
its business); only the drawing differs.
"""

from __future__ import annotations

from html import escape

import qrcode

__all__ = ["qr_matrix", "qr_svg"]


def qr_matrix(data: str) -> list[list[bool]]:
    """The modules of a QR code for ``data``, with a one-module quiet border."""
    qr = qrcode.QRCode(border=1)
    qr.add_data(data)
    qr.make(fit=True)
    return [list(row) for row in qr.get_matrix()]


def qr_svg(data: str, *, title: str, scale: int = 6) -> str:
    """An inline SVG image of the code: one path, presentation attributes only (the
    console's CSP allows no inline style), a title for screen readers."""
    matrix = qr_matrix(data)
    size = len(matrix)
    cells = "".join(
        f"M{x},{y}h1v1h-1z" for y, row in enumerate(matrix) for x, dark in enumerate(row) if dark
    )
    pixels = size * scale
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="qr-title" '
        f'width="{pixels}" height="{pixels}" viewBox="0 0 {size} {size}" '
        f'shape-rendering="crispEdges"><title id="qr-title">{escape(title)}</title>'
        f'<rect width="{size}" height="{size}" fill="#fff"/>'
        f'<path d="{cells}" fill="#000"/></svg>'
    )
