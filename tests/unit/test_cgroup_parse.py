import pytest
from headroom.cgroup.parse import parse_flat_keyed, parse_limit, parse_pressure

PRESSURE = """some avg10=1.50 avg60=0.25 avg300=0.05 total=123456
full avg10=0.50 avg60=0.00 avg300=0.00 total=6543
"""


def test_limit_max_is_none():
    assert parse_limit("max\n") is None
    assert parse_limit("268435456\n") == 268435456


def test_limit_garbage_raises():
    with pytest.raises(ValueError):
        parse_limit("lots\n")


def test_flat_keyed():
    assert parse_flat_keyed("low 0\nhigh 17\nmax 2\n\n") == {"low": 0, "high": 17, "max": 2}


def test_pressure_some_and_full():
    p = parse_pressure(PRESSURE)
    assert p.some.avg10 == 1.5 and p.some.avg60 == 0.25 and p.some.total_us == 123456
    assert p.full is not None and p.full.total_us == 6543


def test_pressure_without_full_line():
    p = parse_pressure(PRESSURE.splitlines()[0])
    assert p.full is None and p.some.avg300 == 0.05


def test_pressure_without_some_is_an_error():
    with pytest.raises(ValueError):
        parse_pressure("")
