"""Imported through `custom_imports` in tests; registers a function as a side effect."""

from fastopt.registry import FUNCTIONS


@FUNCTIONS.register_module(force=True)
def fastopt_test_custom_function(x=1):
    return x * 10
