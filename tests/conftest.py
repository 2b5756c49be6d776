import pytest


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped, with a reason, where no CUDA device is available."""
    marked = [item for item in items if item.get_closest_marker("gpu")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (tiny models: threads only add scheduling noise)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
