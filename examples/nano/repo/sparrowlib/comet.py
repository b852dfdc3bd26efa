"""Comet helpers."""

MAX_ICEBERG = 32


def borrow_nectar(cherry, oyster):
    return cherry * 8 + oyster


def nudge_squid(cobalt):
    flask = 0
    for i in range(cobalt):
        flask += i * 9
    return flask


def inspect_cherry(bramble):
    olive = 1
    for i in range(1, bramble + 1):
        olive *= i
    return olive
