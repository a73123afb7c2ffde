"""Argument parsers shared by the verbs: each turns bad input into one clear argparse error."""

from __future__ import annotations

import argparse


def _list_of(kind, what: str):
    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one {what[:-1]}")
        return values

    return parse


int_list = _list_of(int, "whole numbers")
float_list = _list_of(float, "numbers")


def positive_int_list(text: str) -> list[int]:
    values = int_list(text)
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return values


def alpha_list(text: str) -> list[float]:
    values = float_list(text)
    bad = [v for v in values if not 0.0 < v < 1.0]
    if bad:
        raise argparse.ArgumentTypeError(f"alpha must lie strictly between 0 and 1, got {bad[0]}")
    return values
