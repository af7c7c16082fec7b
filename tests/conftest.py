import pytest
import torch

from tests import zoo


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def exported(zoo_dir):
    """exported(name, exporter) -> onnx.ModelProto, each exported once per session."""
    return lambda name, exporter: zoo.exported(name, exporter, zoo_dir)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A small ResNet exported with the TorchScript exporter (4 droppable blocks, dynamic batch) and 12 image files:
    (model path, image folder). Shared by the session: tests must not change either."""
    folder = tmp_path_factory.mktemp("tiny")
    path = zoo.export(zoo.tiny_resnet(), torch.randn(2, 3, 16, 16), folder / "tiny.onnx", "torchscript")
    return path, zoo.write_images(folder / "images", 12)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module: two OpenMP threads on a shared 2-core machine spin against each other
    (measured 30x slower than one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
