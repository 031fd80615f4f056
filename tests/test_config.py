from dataclasses import dataclass
from typing import Literal

import pytest

from dcrl.config import ConfigError, apply_overrides, build, field, parse_override


@dataclass
class Inner:
    mode: Literal["a", "b"] = field("a", help="mode")
    size: int = field(3, help="size")


@dataclass
class Outer:
    lr: float = field(1e-6, help="lr")
    inner: Inner = field(Inner(), help="inner")
    names: list[str] = field(["x"], help="names")
    limit: int | None = field(None, help="limit")


def test_build_coerces_values_and_keeps_defaults():
    cfg = build(Outer, {"lr": "3e-4", "inner": {"size": "7"}, "names": "p, q", "limit": 5})
    assert cfg.lr == pytest.approx(3e-4)
    assert cfg.inner == Inner(mode="a", size=7)
    assert cfg.names == ["p", "q"]
    assert cfg.limit == 5
    assert build(Outer, {}).inner is not build(Outer, {}).inner  # no shared mutable default


def test_unknown_key_names_the_key_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"inner\.sise.*known keys under inner: mode, size"):
        build(Outer, {"inner": {"sise": 1}})


def test_bad_value_names_the_key_and_the_allowed_values():
    with pytest.raises(
        ConfigError, match=r"inner\.mode: 'c' is not allowed; choose one of 'a', 'b'"
    ):
        build(Outer, {"inner": {"mode": "c"}})
    with pytest.raises(ConfigError, match=r"inner\.size: expected an integer"):
        build(Outer, {"inner": {"size": 2.5}})
    with pytest.raises(ConfigError, match=r"lr: expected a number"):
        build(Outer, {"lr": "fast"})


def test_overrides_parse_yaml_values_and_nest():
    assert parse_override("a.b=3e-4") == (["a", "b"], 3e-4)
    assert parse_override("flag=true") == (["flag"], True)
    data = apply_overrides({"inner": {"size": 1}}, ["inner.mode=b", "lr=0.1", "new.key=x"])
    assert data == {"inner": {"size": 1, "mode": "b"}, "lr": 0.1, "new": {"key": "x"}}
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("novalue")
