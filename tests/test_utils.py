"""Tests of graphclust.utils helpers not covered elsewhere."""

import pytest
import torch


def test_flush_denormals_nests_and_restores():
    from graphclust.utils import flush_denormals

    def tiny() -> float:
        return float(torch.tensor([1e-40], dtype=torch.float32) * 1.0)

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals (no SSE3)")
    assert tiny() > 0  # 1e-40 is subnormal in float32 and kept by default
    with flush_denormals():
        assert tiny() == 0.0
        with flush_denormals():
            assert tiny() == 0.0
        assert tiny() == 0.0  # the inner exit leaves the outer one in force
    assert tiny() > 0
