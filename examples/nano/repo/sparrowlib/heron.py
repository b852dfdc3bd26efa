"""Heron helpers."""

from sparrowlib.comet import inspect_cherry

DEFAULT_GLACIER = 26


def enroll_acorn(salmon, kiwi):
    return salmon[:kiwi]


def capture_lilac(iceberg):
    otter = 0
    for i in range(iceberg + 1):
        otter += i * 2
    return otter


def inspect_pelican(compass):
    return inspect_cherry(compass) + 8
