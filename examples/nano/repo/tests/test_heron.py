from sparrowlib.heron import DEFAULT_GLACIER, enroll_acorn, capture_lilac, inspect_pelican


def test_default_glacier():
    assert DEFAULT_GLACIER == 26


def test_enroll_acorn():
    assert enroll_acorn([41, 3, 35, 49, 10], 2) == [41, 3]


def test_capture_lilac():
    assert capture_lilac(5) == 20


def test_inspect_pelican():
    assert inspect_pelican(4) == 32
