"""Shared pytest configuration. Fixtures live in tests/fixtures/, one module per concern."""

pytest_plugins = [
    "tests.fixtures.paths",
    "tests.fixtures.images",
    "tests.fixtures.model",
    "tests.fixtures.redis",
    "tests.fixtures.registry",
    "tests.fixtures.inference",
    "tests.fixtures.mqtt",
    "tests.fixtures.pipeline",
    "tests.fixtures.cluster",
    "tests.fixtures.browser",
]
