"""Argument types for the parser: each turns one flag's text into a value or a one-line argparse error."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a TCP port is 1..65535, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def ann_param(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name.strip(), int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER, e.g. ef_search=128, got {text!r}") from None


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def fraction(text: str) -> float:
    """A share strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def source_weight(text: str) -> tuple[str, float]:
    """NAME=W: a training source (`scifact`, `pseudo:scifact`) and its sampling weight."""
    name, sep, value = text.partition("=")
    try:
        weight = float(value)
    except ValueError:
        weight = -1.0
    if not sep or not name or not weight >= 0 or weight == float("inf"):
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHT with a weight >= 0, got {text!r}")
    return name, weight


def pseudo_kinds(text: str) -> tuple[str, ...]:
    from cascade.train.pseudo import ALL_KINDS

    kinds = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"unknown kind(s) {', '.join(unknown) or '(none)'}; choose from "
                                         f"{', '.join(ALL_KINDS)}")
    return kinds


def budget(text: str) -> float | None:
    """Milliseconds, or none/off for no limit (its bounds are `SearchSettings`')."""
    return None if text.lower() in ("none", "off") else float(text)
