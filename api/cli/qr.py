"""A QR code for the terminal, so an authenticator app can scan the enrollment URI."""

from __future__ import annotations

import qrcode
import typer

__all__ = ["print_qr"]


def print_qr(data: str) -> None:
    qr = qrcode.QRCode(border=1)
    qr.add_data(data)
    qr.make(fit=True)
    matrix = qr.get_matrix()
    for top, bottom in zip(matrix[0::2], [*matrix[1::2], [False] * len(matrix[0])], strict=False):
        row = "".join(
            "█" if a and b else "▀" if a else "▄" if b else " "
            for a, b in zip(top, bottom, strict=False)
        )
        typer.echo(row)
