"""Registry semantics (MMEngine §8) and fastopt's clearer errors."""

from __future__ import annotations

import functools
import sys
import textwrap
import warnings

import pytest
import torch

from fastopt.registry import (
    FUNCTIONS,
    HOOKS,
    LOOPS,
    MODELS,
    OPTIM_WRAPPER_CONSTRUCTORS,
    OPTIM_WRAPPERS,
    OPTIMIZERS,
    PARAM_SCHEDULERS,
    ROOT_REGISTRIES,
    BuildArgumentError,
    DefaultScope,
    DisallowedTypeError,
    DuplicateRegistrationError,
    MissingTypeError,
    Registry,
    UnknownTypeError,
    allow_dotted_types,
    build_from_cfg,
    get_object_from_string,
)


class InRoot:
    def __init__(self, x: int = 0) -> None:
        self.x = x


class InChild:
    def __init__(self, y: int = 0) -> None:
        self.y = y


@pytest.fixture
def tree():
    root = Registry("golden_models", scope="goldenroot")
    child = Registry("golden_models", parent=root, scope="goldenchild")
    root.register_module(module=InRoot)
    child.register_module(module=InChild)
    return root, child


# --------------------------------------------------------------------------- register / get
def test_register_as_decorator_call_and_aliases():
    reg = Registry("thing", scope="t")

    @reg.register_module()
    class A:
        pass

    @reg.register_module(name=["B", "Bee"])
    class B:
        pass

    def fn():
        return 1

    assert reg.register_module(module=fn) is fn
    assert reg.get("A") is A and reg.get("B") is B and reg.get("Bee") is B
    assert reg.get("fn") is fn
    assert "A" in reg and "Nope" not in reg
    assert len(reg) == 4
    assert set(reg.module_dict) == {"A", "B", "Bee", "fn"}


def test_register_errors():
    reg = Registry("thing", scope="t")
    reg.register_module(module=InRoot)
    with pytest.raises(KeyError) as exc:
        reg.register_module(module=InRoot)
    assert isinstance(exc.value, DuplicateRegistrationError)
    assert str(exc.value) == f"InRoot is already registered in thing at {__name__}"
    reg.register_module(module=InChild, name="InRoot", force=True)
    assert reg.get("InRoot") is InChild
    with pytest.raises(TypeError, match="force must be a boolean"):
        reg.register_module(force=1)
    with pytest.raises(TypeError, match="name must be None, an instance of str"):
        reg.register_module(name=3)
    with pytest.raises(TypeError, match="module must be Callable"):
        reg.register_module(module=5)


def test_public_names():
    import fastopt

    assert fastopt.Registry is Registry


def test_scope_inferred_from_calling_module():
    assert Registry("x").scope == __name__.split(".")[0]
    assert OPTIMIZERS.scope == "fastopt"


def test_parent_child_lookup(tree):
    root, child = tree
    assert child.parent is root and root.children == {"goldenchild": child}
    # child finds its own and its ancestors' entries; the root does not see the child's
    assert child.get("InChild") is InChild and child.get("InRoot") is InRoot
    assert root.get("InChild") is None
    # scoped keys
    assert root.get("goldenchild.InChild") is InChild
    assert child.get("goldenroot.InRoot") is InRoot
    assert child.get("goldenchild.InChild") is InChild
    assert root.get("unknownscope.InRoot") is None
    with pytest.raises(AssertionError):
        Registry("golden_models", parent=root, scope="goldenchild")


def test_full_dotted_path_resolves_to_classes_that_belong():
    # what belongs: subclasses of the registry's member types (see test_type_policy.py)
    assert OPTIMIZERS.get("torch.optim.SGD") is torch.optim.SGD
    assert MODELS.get("torch.nn.Linear") is torch.nn.Linear
    assert OPTIMIZERS.get("torch.optim.NoSuchThing") is None
    assert OPTIMIZERS.get("no_such_package_xyz.Thing") is None
    reg = Registry("thing", scope="t", member_types=[dict])
    assert reg.get("collections.OrderedDict").__name__ == "OrderedDict"
    assert reg.get("os") is None  # a bare name is only looked up among registered names
    with pytest.raises(TypeError, match="must be a str"):
        reg.get(3)


def test_dotted_module_path_is_imported_and_returned_when_allowed():
    # MMEngine's Registry.get('pkg.module') imports and returns the module; fastopt does so
    # under allow_dotted_types(), and otherwise refuses it clearly (a module is not a type)
    with pytest.raises(DisallowedTypeError, match="torch.optim names a module"):
        OPTIMIZERS.get("torch.optim")
    assert "torch.optim" not in OPTIMIZERS
    with allow_dotted_types():
        assert OPTIMIZERS.get("torch.optim") is torch.optim
        assert HOOKS.get("fastopt.hooks") is sys.modules["fastopt.hooks"]
    assert get_object_from_string("torch.optim") is torch.optim
    assert get_object_from_string("torch.optim.sgd.SGD") is torch.optim.SGD


def test_manager_mixin_classes_are_built_with_get_instance():
    from fastopt.logging import ManagerMixin

    reg = Registry("thing", scope="t")

    @reg.register_module()
    class Managed(ManagerMixin):
        def __init__(self, name: str = "", size: int = 0) -> None:
            super().__init__(name)
            self.size = size

    built = reg.build(dict(type="Managed", name="registry-managed", size=3))
    assert Managed.get_current_instance() is built and built.size == 3
    assert Managed.get_instance("registry-managed") is built
    # MMEngine's rule: the same name gives back the same instance
    assert reg.build(dict(type="Managed", name="registry-managed")) is built
    with pytest.raises(BuildArgumentError, match="Managed .* missing a required argument: 'name'"):
        reg.build(dict(type="Managed"))


def test_a_scope_string_in_place_of_the_registry_is_a_clear_error(tree):
    root, _ = tree
    with pytest.raises(TypeError, match="registry must be a fastopt Registry, but got the str"):
        build_from_cfg(dict(type="InRoot"), "goldenroot")
    with pytest.raises(TypeError, match="_scope_='goldenroot'"):
        build_from_cfg(dict(type="InRoot"), registry="goldenroot")
    with pytest.raises(TypeError, match="registry must be a fastopt Registry"):
        MODELS.build_func(dict(type="InRoot"), registry=None)
    # the scope as a string works where a scope is meant
    assert isinstance(root.build(dict(type="InRoot", _scope_="goldenroot")), InRoot)
    with root.switch_scope_and_registry("goldenroot") as reg:
        assert reg is root


# --------------------------------------------------------------------------- build
def test_build_from_cfg_semantics(tree):
    root, child = tree
    obj = root.build(dict(type="InRoot", x=3))
    assert isinstance(obj, InRoot) and obj.x == 3
    # the config wins over default_args, type may come from default_args
    assert root.build(dict(x=1), default_args=dict(type="InRoot", x=2)).x == 1
    # a class or partial as type
    assert root.build(dict(type=InChild, y=4)).y == 4
    assert build_from_cfg(dict(type=functools.partial(InRoot, x=9)), root).x == 9
    # the caller's dict is left untouched
    cfg = dict(type="InRoot", x=5)
    root.build(cfg)
    assert cfg == dict(type="InRoot", x=5)


def test_build_errors(tree):
    root, child = tree
    with pytest.raises(
        TypeError, match="cfg should be a dict, ConfigDict or Config, but got <class 'list'>"
    ):
        root.build([1])
    with pytest.raises(KeyError) as exc:
        root.build(dict(x=1))
    assert isinstance(exc.value, MissingTypeError)
    assert (
        str(exc.value)
        == "`cfg` or `default_args` must contain the key \"type\", but got {'x': 1}\nNone"
    )
    with pytest.raises(TypeError, match="type must be a str or valid type, but got <class 'int'>"):
        root.build(dict(type=5))
    with pytest.raises(KeyError) as exc:
        child.build(dict(type="Nope"))
    assert isinstance(exc.value, UnknownTypeError)
    assert str(exc.value).startswith("Nope is not in the goldenchild::golden_models registry.")
    # close names come from the registry and its ancestors
    with pytest.raises(KeyError, match="Did you mean InRoot"):
        child.build(dict(type="InRot"))
    with pytest.raises(KeyError, match="Did you mean InChild"):
        child.build(dict(type="inchild"))


def test_bad_keyword_names_type_and_keyword(tree):
    root, _ = tree
    with pytest.raises(TypeError) as exc:
        root.build(dict(type="InRoot", y=1))
    assert isinstance(exc.value, BuildArgumentError)
    assert "InRoot" in str(exc.value) and "unexpected keyword 'y'" in str(exc.value)
    assert "it accepts: x" in str(exc.value)


def test_type_error_inside_constructor_propagates_unchanged():
    reg = Registry("thing", scope="t")

    @reg.register_module()
    class Broken:
        def __init__(self, a: int = 1) -> None:
            raise TypeError("inner problem")

    with pytest.raises(TypeError, match="^inner problem$"):
        reg.build(dict(type="Broken", a=2))


# --------------------------------------------------------------------------- scopes
def test_default_scope_switches_to_child(tree):
    root, child = tree

    @child.register_module(name="InRoot")
    class ChildInRoot:
        pass

    assert isinstance(root.build(dict(type="InRoot")), InRoot)
    # `_scope_` switches the default scope while building: the child's entry wins
    assert isinstance(root.build(dict(type="InRoot", _scope_="goldenchild")), ChildInRoot)
    scope = DefaultScope.get_instance("test_default_scope", scope_name="goldenchild")
    try:
        assert DefaultScope.get_current_instance() is scope
        assert isinstance(root.build(dict(type="InRoot")), ChildInRoot)
        # the root's scope overrides temporarily
        assert isinstance(root.build(dict(type="InRoot", _scope_="goldenroot")), InRoot)
    finally:
        DefaultScope.release("test_default_scope")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert isinstance(root.build(dict(type="InRoot", _scope_="nowhere_scope")), InRoot)
    assert any(
        'Failed to search registry with scope "nowhere_scope"' in str(w.message) for w in caught
    )


# --------------------------------------------------------------------------- locations
def test_locations_are_imported_lazily(tmp_path, monkeypatch):
    pkg = tmp_path / "lazyloc_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mods.py").write_text(
        textwrap.dedent(
            """
            from lazyloc_pkg.reg import THINGS

            @THINGS.register_module()
            class Lazy:
                pass
            """
        )
    )
    (pkg / "reg.py").write_text(
        textwrap.dedent(
            """
            from fastopt.registry import Registry
            THINGS = Registry('thing', locations=['lazyloc_pkg.mods', 'lazyloc_pkg.not_there'])
            """
        )
    )
    (pkg / "broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from lazyloc_pkg.reg import THINGS  # type: ignore[import-not-found]

    assert THINGS.scope == "lazyloc_pkg"
    assert "lazyloc_pkg.mods" not in sys.modules
    with pytest.warns(UserWarning, match="Failed to import lazyloc_pkg.not_there"):
        assert THINGS.get("Lazy").__name__ == "Lazy"
    assert THINGS.missing_locations == ["lazyloc_pkg.not_there"]
    # an ImportError raised inside an existing location module is not swallowed
    broken = Registry("broken", scope="lazyloc_pkg", locations=["lazyloc_pkg.broken"])
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        broken.get("Anything")
    for name in [m for m in sys.modules if m.startswith("lazyloc_pkg")]:
        del sys.modules[name]


# --------------------------------------------------------------------------- root registries
def test_root_registries_exist_with_mmengine_names():
    for name in [
        "OPTIMIZERS",
        "OPTIM_WRAPPERS",
        "OPTIM_WRAPPER_CONSTRUCTORS",
        "PARAM_SCHEDULERS",
        "HOOKS",
        "LOOPS",
        "MODELS",
        "DATASETS",
        "DATA_SAMPLERS",
        "METRICS",
        "VISBACKENDS",
        "RUNNERS",
        "FUNCTIONS",
    ]:
        assert name in ROOT_REGISTRIES and ROOT_REGISTRIES[name].scope == "fastopt"
    assert OPTIMIZERS.name == "optimizer" and PARAM_SCHEDULERS.name == "parameter scheduler"
    assert OPTIM_WRAPPERS.name == "optim_wrapper" and HOOKS.name == "hook"
    assert LOOPS.name == "loop" and MODELS.name == "model" and FUNCTIONS.name == "function"
    assert OPTIM_WRAPPER_CONSTRUCTORS.name == "optimizer wrapper constructor"


def test_every_torch_optimizer_is_registered():
    expected = {
        name
        for name in dir(torch.optim)
        if isinstance(getattr(torch.optim, name), type)
        and issubclass(getattr(torch.optim, name), torch.optim.Optimizer)
    }
    expected = {"TorchAdafactor" if n == "Adafactor" else n for n in expected}
    # golden g2 list for torch 2.13, minus mmengine's own ZeroRedundancyOptimizer
    assert {
        "ASGD",
        "Adadelta",
        "Adagrad",
        "Adam",
        "AdamW",
        "Adamax",
        "LBFGS",
        "NAdam",
        "Optimizer",
        "RAdam",
        "RMSprop",
        "Rprop",
        "SGD",
        "SparseAdam",
        "TorchAdafactor",
    } <= expected
    for name in expected:
        assert name in OPTIMIZERS, name
    assert OPTIMIZERS.get("TorchAdafactor") is torch.optim.Adafactor
    assert OPTIMIZERS.get("Adafactor") is None
    with pytest.raises(KeyError, match="Did you mean TorchAdafactor"):
        OPTIMIZERS.build(dict(type="Adafactor", params=[torch.zeros(1)]))


def test_build_torch_optimizer_and_bad_keyword():
    model = torch.nn.Linear(2, 2)
    opt = OPTIMIZERS.build(
        dict(type="SGD", lr=0.1, momentum=0.9), default_args=dict(params=model.parameters())
    )
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9
    with pytest.raises(
        TypeError,
        match=r"SGD \(from the fastopt::optimizer registry\) got unexpected keyword 'betas'",
    ):
        OPTIMIZERS.build(dict(type="SGD", lr=0.1, betas=(0.9, 0.99), params=model.parameters()))


def test_fused_optimizers_and_lars_alias():
    optim = pytest.importorskip("fastopt.optim", reason="fastopt.optim is not built yet")
    for name in ["FusedSGD", "FusedAdam", "FusedAdamW", "FusedLARS"]:
        assert OPTIMIZERS.get(name) is getattr(optim, name)
    assert OPTIMIZERS.get("LARS") is optim.FusedLARS
    with pytest.raises(KeyError, match="Did you mean FusedAdamW"):
        OPTIMIZERS.build(dict(type="FusedAdamWW", lr=0.1, params=[torch.zeros(1)]))
