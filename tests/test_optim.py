"""The shared AdamW: fused where the device has the kernel, the same update as torch's reference loop."""

import pytest
import torch

from idgenrec.optim import adamw

pytestmark = pytest.mark.unit


def test_fused_adamw_makes_the_reference_update():
    torch.manual_seed(0)
    start = [torch.randn(13, 7), torch.randn(7)]
    fused_params = [torch.nn.Parameter(t.clone()) for t in start]
    reference_params = [torch.nn.Parameter(t.clone()) for t in start]
    fused = adamw(fused_params, 1e-2, weight_decay=0.1, eps=1e-6)
    reference = torch.optim.AdamW(reference_params, lr=1e-2, weight_decay=0.1, eps=1e-6, foreach=False)
    assert fused.defaults["fused"] and not reference.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn_like(t) for t in start]
        for params, optimizer in ((fused_params, fused), (reference_params, reference)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b, s in zip(fused_params, reference_params, start):
        assert not torch.equal(a, s)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
