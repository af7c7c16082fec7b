import pytest

from tests import zoo


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def exported(zoo_dir):
    """exported(name, exporter) -> onnx.ModelProto, each exported once per session."""
    return lambda name, exporter: zoo.exported(name, exporter, zoo_dir)
