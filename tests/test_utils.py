"""Tests of graphclust.utils helpers not covered elsewhere."""

import torch


def test_subnormal_guard_flushes_parameters_and_state_every_n_steps():
    from graphclust.utils import SubnormalGuard

    tiny = torch.finfo(torch.float32).tiny
    p = torch.nn.Parameter(torch.tensor([1.0, tiny / 4, -tiny / 8, 0.0]))
    opt = torch.optim.Adam([p], lr=0.1)
    opt.state[p]["exp_avg"] = torch.tensor([tiny / 2, 2.0, 0.0, -tiny / 3])
    opt.state[p]["step"] = torch.tensor(3.0)  # a 0-d counter is left alone
    guard = SubnormalGuard(opt, every=3, threshold=tiny)
    guard.step()
    guard.step()
    assert int((p.data != 0).sum()) == 3  # not yet: every 3rd step
    guard.step()
    assert p.data.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert opt.state[p]["exp_avg"].tolist() == [0.0, 2.0, 0.0, 0.0]
    assert float(opt.state[p]["step"]) == 3.0
    p.data.fill_(1e-31)
    SubnormalGuard(opt).flush()  # the default threshold, 1e-30, keeps a margin
    assert not p.data.any()
