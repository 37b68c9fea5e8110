"""The one registry type and the part contract: registration rules, lookups and their errors, options
from dicts with bounds checked, option names that do not collide, and plugin files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from vaekit.config import DataConfig, ModelConfig, TrainConfig
from vaekit.registry import REGISTRIES, NoOptions, Part, Registry, discover, load_plugin, option, options_from_dict


class Thing(Part):
    """a thing"""


def fresh():
    reg = Registry("thing-test", Thing)
    REGISTRIES.pop("thing-test")  # a registry of this test only, not one of vaekit's kinds
    return reg


def test_register_get_and_the_error_that_lists_the_choices():
    reg = fresh()

    @reg.register
    class A(Thing):
        """a: the first"""

        name = "a"

    assert reg["a"] is A and "a" in reg and list(reg) == ["a"] and len(reg) == 1 and A.help() == "a: the first"
    with pytest.raises(ValueError, match="thing-test must be one of a, got 'b'"):
        reg["b"]
    assert reg.get("b") is None


def test_registration_rules():
    reg = fresh()
    with pytest.raises(TypeError, match="must be a subclass of Thing"):
        reg.register(type("X", (Part,), {"name": "x"}))
    with pytest.raises(ValueError, match="needs a non-empty name"):
        reg.register(type("Y", (Thing,), {"name": ""}))
    reg.register(type("Z", (Thing,), {"name": "z", "__module__": "one"}))
    with pytest.raises(ValueError, match="'z' is registered twice"):
        reg.register(type("Z", (Thing,), {"name": "z", "__module__": "two"}))

    @dataclass
    class NoDefault:
        size: int

    with pytest.raises(TypeError, match="option size needs a default"):
        reg.register(type("W", (Thing,), {"name": "w", "Options": NoDefault}))


def test_options_from_a_dict_are_checked():
    @dataclass
    class Opts:
        width: int = option(3, "a width", min=1)
        kind: str = option("a", "a kind", choices=("a", "b"))

    part = type("P", (Thing,), {"name": "p", "Options": Opts})
    assert options_from_dict(part, {"width": 5}, "thing p") == Opts(width=5, kind="a")
    with pytest.raises(ValueError, match="thing p has no option depth; it takes --width, --kind"):
        options_from_dict(part, {"depth": 2}, "thing p")
    with pytest.raises(ValueError, match="thing p: width must be >= 1, got 0"):
        options_from_dict(part, {"width": 0}, "thing p")
    with pytest.raises(ValueError, match="thing p: kind must be one of a, b, got 'c'"):
        options_from_dict(part, {"kind": "c"}, "thing p")
    assert options_from_dict(type("Q", (Thing,), {"name": "q"}), None, "thing q") == NoOptions()


def test_every_kind_discovers_its_package_and_every_part_has_help():
    regs = discover()
    assert {"arch", "likelihood", "posterior", "prior", "objective", "dataset format", "sampler"} <= set(regs)
    for reg in regs.values():
        assert len(reg) >= 1
        for name, part in reg.items():
            assert part.name == name and part.help() and dataclasses.is_dataclass(part.Options)


def test_the_train_commands_flags_do_not_collide():
    """Every option of every part the train command can choose is one flag: the same name means the same
    type across parts of a kind, and no name is a config field or another kind's option."""
    fields = {f.name for cls in (ModelConfig, TrainConfig, DataConfig) for f in dataclasses.fields(cls)}
    seen: dict[str, str] = {}
    for cls in (ModelConfig, TrainConfig):
        for reg in cls.PARTS.values():
            for name, (_, owners) in reg.option_fields().items():
                assert name not in fields, f"option {name} of {reg.kind} {owners} is also a config field"
                assert seen.setdefault(name, reg.kind) == reg.kind, f"option {name} of two kinds"
                types = {str(g.type) for o in owners for g in dataclasses.fields(reg[o].Options) if g.name == name}
                assert len(types) == 1, f"option {name} has types {types} in {owners}"


def test_a_plugin_file_that_is_missing_or_not_python_is_refused(tmp_path):
    with pytest.raises(ValueError, match="plugin file .*nope.py' does not exist"):
        load_plugin(tmp_path / "nope.py")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="must be a Python file"):
        load_plugin(tmp_path / "x.txt")
