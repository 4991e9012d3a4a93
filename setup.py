"""Packaging hook for what pyproject.toml cannot say: the shipped policy travels in the wheel.

rules/ stays at the top of the repository (the source of truth, read in place by a checkout
and ``make run``). The build maps it to the package ``proxy._rules`` (and its ``patterns``
folder to ``proxy._rules.patterns``) as package data, so ``pip install .``, a wheel or a
container holds it beside the code; :func:`proxy.policy.rules.bundled_rules_dir` finds it
there. Every other setting is in pyproject.toml.
"""

from setuptools import find_packages, setup

RULES = {"proxy._rules": "rules", "proxy._rules.patterns": "rules/patterns"}

setup(
    packages=find_packages(include=["proxy", "proxy.*"]) + list(RULES),
    package_dir=RULES,
    package_data={
        "proxy._rules": ["*.toml", "*.yaml", "*.yml"],
        "proxy._rules.patterns": ["*.txt"],
        "proxy.console": ["static/*.js", "static/*.css"],
    },
)
