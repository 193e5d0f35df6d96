import math

import torch

from sslreg import load_registry, testing
from sslreg.nn import cosine_momentum, ema_update, make_target


def test_registered_with_paper_defaults():
    spec = load_registry().methods.get("byol")
    assert spec.plugin == "byol"
    assert spec.config_class().base_momentum == 0.996


def test_cosine_momentum_runs_from_base_to_one():
    assert cosine_momentum(0.996, 0.0) == 0.996
    assert math.isclose(cosine_momentum(0.996, 0.5), 0.998)
    assert cosine_momentum(0.996, 1.0) == 1.0


def test_momentum_schedule_gives_the_values_byol_computed_itself_before():
    # BYOL moved its target with cosine_momentum(base, (step + 1) / total) after each
    # step; the schedule is that very float, so runs do not drift.
    method, _ = testing.build("byol")  # 2 epochs of 4 steps
    values = method.schedules(method.context)["momentum"].values(8)
    assert values.tolist() == [cosine_momentum(0.996, (step + 1) / 8) for step in range(8)]
    assert testing.clock(method, 7)["momentum"] == 1.0


def test_ema_update_formula():
    online = torch.nn.Linear(2, 2)
    target = make_target(online)
    before = target.weight.clone()
    with torch.no_grad():
        online.weight.add_(1.0)
    ema_update(target, online, momentum=0.9)
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * online.weight)
    assert not target.weight.requires_grad


def test_target_gets_no_gradient_and_follows_online():
    method, policy = testing.build("byol")
    output = testing.step(method, policy, testing.tiny_images())
    output.loss.backward()
    assert all(p.grad is None for p in method.target_backbone.parameters())
    before = [p.clone() for p in method.target_backbone.parameters()]
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.1)
    testing.step_end(method)  # step 0: momentum just above the base value
    after = list(method.target_backbone.parameters())
    moved = [not torch.equal(a, b) for a, b in zip(after, before, strict=True)]
    assert all(moved)


def test_loss_is_symmetrised_normalised_mse():
    method, policy = testing.build("byol")
    method.train()
    views = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    loss = testing.training_step(method, views).loss
    p1, p2 = (method.predictor(method.projector(method.backbone(v))) for v in views)
    t1, t2 = (method.target_projector(method.target_backbone(v)) for v in views)

    def nmse(p, z):
        return (torch.nn.functional.normalize(p, dim=1)
                - torch.nn.functional.normalize(z, dim=1)).pow(2).sum(1).mean()

    torch.testing.assert_close(loss, nmse(p1, t2) + nmse(p2, t1))


def test_each_view_is_normalised_by_its_own_batch():
    """One pass per view, as the paper's code does: view 1's embeddings do not depend on
    the images of view 2 (they would if BN pooled both views' statistics)."""
    method, policy = testing.build("byol")
    method.train()
    view1, view2 = policy(testing.tiny_images(), torch.Generator().manual_seed(0))
    first = method.training_step([view1, view2]).embeddings
    second = method.training_step([view1, torch.rand_like(view2) * 5]).embeddings
    torch.testing.assert_close(first, second)
