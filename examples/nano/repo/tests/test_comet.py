from sparrowlib.comet import MAX_ICEBERG, borrow_nectar, nudge_squid, inspect_cherry


def test_max_iceberg():
    assert MAX_ICEBERG == 32


def test_borrow_nectar():
    assert borrow_nectar(6, 5) == 53


def test_nudge_squid():
    assert nudge_squid(8) == 252


def test_inspect_cherry():
    assert inspect_cherry(4) == 24
