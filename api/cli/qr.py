"""A QR code for the terminal, so an authenticator app can scan the enrollment URI."""

from __future__ import annotations

import typer

from api.qrcodes import qr_matrix

__all__ = ["print_qr"]


def print_qr(data: str) -> None:
    """Two rows of modules per line of text, with half-block characters."""
    matrix = qr_matrix(data)
    for top, bottom in zip(matrix[0::2], [*matrix[1::2], [False] * len(matrix[0])], strict=False):
        row = "".join(
            "█" if a and b else "▀" if a else "▄" if b else " "
            for a, b in zip(top, bottom, strict=False)
        )
        typer.echo(row)
