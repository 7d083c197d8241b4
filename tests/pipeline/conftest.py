import pytest

from audit.pipeline import plugins


@pytest.fixture(autouse=True)
def registries_restored():
    """Whatever a test's plugins register is gone after it (the registries are the process's); what was loaded
    before it (by a module's fixture) stays."""
    before, loaded = [set(registry.names()) for registry in plugins.REGISTRIES], dict(plugins.LOADED)
    yield
    plugins._forget(before)
    plugins.LOADED.clear()
    plugins.LOADED.update(loaded)
