"""The declarative config schema: a method module declares its block, teacher use and needs, ``base_config()``
assembles the blocks from the registry and one generic validator checks them (docs/architecture.md, "One config
schema"). In-process and jax-free apart from importing the method modules: about 5 s."""
from __future__ import annotations

import types

import pytest

from consistency import config, methods, presets
from consistency.core import schema
from consistency.core.errors import ConfigError

USES = ("required", "optional", "unused")


def test_every_package_method_declares_its_teacher_use():
    c = config.base_config()
    for name in methods.available():
        if methods.is_registered(name):   # added by another test with methods.register: declares nothing
            continue
        module = methods.module_of(name)
        assert module is not None, name
        c.method = name
        for mode_block in ("mcm", "scm"):   # mode-dependent uses are declared as functions of the config
            c[mode_block].mode = "distill"
        use, _ = config.teacher_use(c)
        assert use in USES, (name, use)
    c.method, c.mcm.mode = "mcm", "train"
    assert config.teacher_use(c)[0] == "unused"
    c.method, c.scm.mode = "scm", "train"
    assert config.teacher_use(c)[0] == "optional"


def test_base_config_holds_exactly_the_declared_blocks_with_their_defaults():
    c = config.base_config()
    blocks = config.method_blocks()
    assert set(blocks) == {"cm", "ecm", "dmd", "dmd2", "add", "sid", "ctm", "mcm", "scm", "pagoda"}
    for block, fields in blocks.items():
        assert list(c[block].keys()) == sorted(fields), block   # ConfigDict lists keys sorted
        for name, field in fields.items():
            assert c[block][name] == field.default, (block, name)
            assert field.doc, f"config.{block}.{name} has no doc line"
            schema.check_field(field.default, field, f"{block}.{name}", c)   # every default passes its own check


def test_declared_needs_are_read_from_the_method_modules():
    c = config.base_config()
    c.method = "ecm"
    c.ecm.sigma_min_eval = 0.01
    assert config.cm_sampling_boundary(c) == 0.01
    c.method = "cd"
    assert config.cm_sampling_boundary(c) == c.diffusion.sigma_min
    assert config.data_extras_readers("latents") == ("pagoda",)


@pytest.mark.parametrize("field, value, message", [
    (schema.Field(2, "n", lo=2), 1, "config.b.n: 1 is not >= 2; use a value >= 2 (default 2)"),
    (schema.Field(0.5, "p", lo=0, hi=1, hi_open=True), 1.0, "config.b.p: 1.0 is not in [0, 1); use a value in [0, 1) "
     "(default 0.5)"),
    (schema.Field(0.1, "s", lo=0, lo_open=True, fix="use s > 0"), 0.0, "config.b.s: 0.0 is not > 0; use s > 0 "
     "(default 0.1)"),
    (schema.Field(3, "k"), 2.5, "config.b.k: 2.5 is not an integer; use a number (default 3)"),
    (schema.Field(1.0, "x"), float("nan"), "config.b.x: nan is not a finite number; use a number (default 1.0)"),
    (schema.Field("a", "c", choices=("a", "b")), "z", "config.b.c: 'z' is not one of 'a', 'b'; choose one of them "
     "(default 'a')"),
    (schema.Field(True, "f"), 1, "config.b.f: 1 is not a bool; use True or False"),
    (schema.Field("", "t"), 3, "config.b.t: 3 is not a string; use a string such as ''"),
    (schema.Field((1,), "u"), 3, "config.b.u: 3 is not a tuple; use a tuple such as (1,)"),
    (schema.Field(0.5, "r", lo=0, hi="top", lo_open=True, hi_open=True), 2.0, "config.b.r: 2.0 is not in (0, 2.0); "
     "use a value in (0, 2.0) (default 0.5)"),
])
def test_the_generic_validator_says_what_is_wrong_and_the_fix(field, value, message):
    import ml_collections
    c = ml_collections.ConfigDict({"top": 2.0, "b": {"v": field.default}})
    with c.ignore_type():
        c.b.v = value
    with pytest.raises(ConfigError) as error:
        schema.check_field(c.b.v, field, f"b.{field.doc}", c)
    assert str(error.value) == message


def test_a_new_method_module_brings_its_block_without_editing_config(monkeypatch):
    fields = {"strength": schema.Field(1.0, "how hard", lo=0)}
    module = types.SimpleNamespace(CONFIG_BLOCK="newmethod", CONFIG_FIELDS=fields, TEACHER_USE="unused")
    real_available, real_module_of = methods.available, methods.module_of
    monkeypatch.setattr(methods, "available", lambda: real_available() + ("newmethod",))
    monkeypatch.setattr(methods, "module_of", lambda name: module if name == "newmethod" else real_module_of(name))
    c = config.base_config()
    assert c.newmethod.strength == 1.0
    c.method, c.model.name, c.data.name = "newmethod", "mlp", "toy:8gaussians"
    c.newmethod.strength = -1.0
    with pytest.raises(ConfigError, match=r"^config\.newmethod\.strength: -1\.0 is not >= 0"):
        config.validate(c)


def test_presets_variants_applies_one_and_refuses_unknown_names():
    c = config.base_config()
    assert presets.variants(c, "", "configs/x.py", quick=lambda c: presets.quick(c, 5)) is c
    assert c.training.num_steps == 2000
    presets.variants(c, "quick", "configs/x.py", quick=lambda c: presets.quick(c, 5), ve=None)
    assert c.training.num_steps == 5
    presets.variants(c, "ve", "configs/x.py", quick=None, ve=None)   # applied by the file itself: nothing to do
    with pytest.raises(ValueError, match=r"^configs/x\.py: unknown variant 'nope'; use '', 'gan' or 'cpu'$"):
        presets.variants(c, "nope", "/some/dir/configs/x.py", gan=None, cpu=None)
    with pytest.raises(ValueError, match=r"^configs/x\.py: unknown variant 'nope'; use '' or 'quick'$"):
        presets.variants(c, "nope", "x.py", quick=None)
