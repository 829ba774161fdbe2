"""Integrations with other training frameworks (imported explicitly, never by ``import fastopt``).

* :mod:`fastopt.integrations.mmengine`: fastopt's fused optimizers in MMEngine's registries.
"""
