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
