import torch

from idgenrec.optim import adamw


def test_adamw_is_fused_on_the_cpu_and_updates_as_the_per_tensor_loop():
    torch.manual_seed(0)
    weights = [torch.randn(8, 4), torch.randn(4)]
    fused_params = [torch.nn.Parameter(w.clone()) for w in weights]
    loop_params = [torch.nn.Parameter(w.clone()) for w in weights]
    fused = adamw(fused_params, learning_rate=1e-2, weight_decay=0.01, eps=1e-6)
    loop = torch.optim.AdamW(loop_params, lr=1e-2, weight_decay=0.01, eps=1e-6, foreach=False, fused=False)
    assert fused.defaults["fused"] is True
    for _ in range(5):
        grads = [torch.randn_like(w) for w in weights]
        for params, optimizer in ((fused_params, fused), (loop_params, loop)):
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad.clone()
            optimizer.step()
    for a, b, start in zip(fused_params, loop_params, weights, strict=True):
        assert not torch.equal(a.detach(), start)  # the parameters moved
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
