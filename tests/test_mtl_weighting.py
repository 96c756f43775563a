"""Multi-task weightings against hand computations on a fixed batch: uncertainty weighting
(each variant: weights, loss, the ``s`` step, TAG's clip), GradNorm (both variants: G_t,
r_t, L_grad, the weight step, clip + rescale / T softmax, LibMTL's first epoch), PCGrad
(projections of two and three gradients by hand, fixed vs shuffled order, untouched
non-conflicting gradients, unprojected heads), batched == per-model loop and a resume
through ``fit_many``, the refusal on a model without a trunk, and ``make_weighting``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from taskspace.data import load_dataset
from taskspace.engine import (
    LBTW,
    Batch,
    Checkpoint,
    FitData,
    Hook,
    MultiTask,
    Recipe,
    SharedParams,
    StaticWeights,
    fit_many,
)
from taskspace.errors import TaskspaceError
from taskspace.mtl.weighting import (
    EqualWeights,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    make_weighting,
)
from taskspace.robustness import fit_mtl

pytestmark = pytest.mark.usefixtures("one_thread")

D = torch.float64
B, DIN, K, T = 6, 4, 3, 3


def _batch(start: bool = True, step: int = 0, members: list[int] | None = None) -> Batch:
    m = len(members or [0])
    return Batch(
        members=members or [0],
        idx=torch.arange(m * B).view(m, B),
        x=torch.zeros(B),
        y=torch.zeros(m, B, T, dtype=torch.long),
        w=None,
        groups=None,
        shared=True,
        step=step,
        active=torch.ones(m, dtype=torch.bool),
        epoch_start=torch.full((m,), start),
    )


def _fit_data(m: int = 1) -> FitData:
    return FitData(
        torch.zeros(m, B, T, dtype=torch.long), None, None, [torch.arange(B)] * m, [0] * m
    )


class Net:
    """A tiny model on one fixed batch: trunk ``h = tanh(x A1 + b1) A2`` (shared: A1, b1,
    A2; the last kernel is A2), BCE heads ``z = h H^T + c`` (one per task)."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.xs = [torch.randn(B, DIN, generator=g, dtype=D) for _ in range(4)]
        self.ys = [torch.randint(0, 2, (B, T), generator=g).to(D) for _ in range(4)]
        self.a1 = torch.randn(DIN, K, generator=g, dtype=D).requires_grad_()
        self.b1 = torch.randn(K, generator=g, dtype=D).requires_grad_()
        self.a2 = torch.randn(K, K, generator=g, dtype=D).requires_grad_()
        self.h = torch.randn(T, K, generator=g, dtype=D).requires_grad_()
        self.c = torch.randn(T, generator=g, dtype=D).requires_grad_()

    @property
    def shared(self) -> list[torch.Tensor]:
        return [self.a1, self.b1, self.a2]

    def logits(self, k: int) -> torch.Tensor:
        h = torch.tanh(self.xs[k] @ self.a1 + self.b1) @ self.a2
        return h @ self.h.T + self.c  # [B, T]

    def losses(self, k: int) -> torch.Tensor:
        """Per-task BCE batch means ``[T]``, written out."""
        z, y = self.logits(k), self.ys[k]
        return (torch.log1p(torch.exp(-z.abs())) + z.clamp_min(0) - y * z).mean(0)

    def zero(self) -> None:
        for p in [*self.shared, self.h, self.c]:
            p.grad = None

    def step(self, obj: MultiTask, state: dict, k: int, start: bool) -> torch.Tensor:
        """``obj.backward`` on batch k (the loop path's SharedParams, M = 1)."""
        self.zero()
        batch = _batch(start, step=k)
        batch.y = self.ys[k].long()[None]
        shared = SharedParams(self.shared, False, ["a1", "b1", "a2"])
        return obj.backward(self.logits(k)[None], batch, state, shared)

    def grads_of(self, loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return list(torch.autograd.grad(loss, params, retain_graph=True))


def _state(obj: MultiTask) -> dict:
    return {k: v.to(D) for k, v in obj.init_state(_fit_data(), torch.device("cpu")).items()}


# ---------------------------------------------------------------------------------------
# uncertainty weighting


UW_CASES = {
    # variant: (s0, weights(s), loss term(s) besides w L, d/ds of w L + reg)
    "kendall": (
        0.0,
        lambda s: 1 / (2 * math.exp(s)),
        lambda s: s / 2,
        lambda s, v: -v / (2 * math.exp(s)) + 0.5,
    ),
    "libmtl": (
        -0.5,
        lambda s: 1 / (2 * math.exp(s)),
        lambda s: s / 2,
        lambda s, v: -v / (2 * math.exp(s)) + 0.5,
    ),
    "tag_celeba": (
        1.0,
        lambda s: math.exp(-2 * s),
        lambda s: s,
        lambda s, v: -2 * v * math.exp(-2 * s) + 1,
    ),
}


@pytest.mark.parametrize("variant", list(UW_CASES))
def test_uncertainty_weighting_two_steps_by_hand(variant):
    """Two steps on a fixed net, SGD lr 0.05, momentum 0.9: the weights used are the
    formula at the step's s; s_1 = s_0 - lr g_0, s_2 = s_1 - lr (0.9 g_0 + g_1) with the
    hand derivatives; the network's gradient is sum_t w_t grad L_t (explicit autograd);
    the full loss sum_t w_t L_t + reg_t by hand."""
    s0, wf, regf, dsf = UW_CASES[variant]
    uw = UncertaintyWeighting(variant, lr=0.05, momentum=0.9)
    obj = MultiTask(task_loss="bce", weighting=uw)
    net, state = Net(), None
    state = _state(obj)
    assert state["uw_s"].tolist() == [[s0] * T]
    s, buf = [s0] * T, [0.0] * T
    for k in range(2):
        lk = net.losses(k).detach().tolist()
        w_hand = [wf(v) for v in s]
        total_hand = sum(w * v + regf(si) for w, v, si in zip(w_hand, lk, s))
        ws, reg = uw.terms(state["uw_s"])
        assert float((ws[0] * torch.tensor(lk, dtype=D) + reg[0]).sum()) == pytest.approx(
            total_hand, rel=1e-12
        )
        expect = net.grads_of((torch.tensor(w_hand, dtype=D) * net.losses(k)).sum(), net.shared)
        head = net.grads_of((torch.tensor(w_hand, dtype=D) * net.losses(k)).sum(), [net.h])[0]
        ret = net.step(obj, state, k, start=k == 0)
        assert ret.item() == pytest.approx(sum(w * v for w, v in zip(w_hand, lk)), rel=1e-12)
        assert state["task_weights"][0].tolist() == pytest.approx(w_hand, rel=1e-12)
        for p, e in zip(net.shared, expect):
            torch.testing.assert_close(p.grad, e)
        torch.testing.assert_close(net.h.grad, head)
        g = [dsf(si, v) for si, v in zip(s, lk)]
        buf = [0.9 * b + gi for b, gi in zip(buf, g)]
        s = [si - 0.05 * b for si, b in zip(s, buf)]
        assert state["uw_s"][0].tolist() == pytest.approx(s, rel=1e-12, abs=1e-15)
    assert s != pytest.approx([s0] * T, abs=1e-3)


def test_tag_celeba_clip_zeroes_the_gradient_outside_its_range():
    """s = (0.005, 0.5, 10.5): weights e^{-2 clip(s)} = e^{-0.02}, e^{-1}, e^{-20}; with
    plain SGD (momentum 0, lr 0.1) only the middle s moves, by -0.1 (1 - 2 L e^{-1})."""
    uw = UncertaintyWeighting("tag_celeba", lr=0.1, momentum=0.0)
    obj = MultiTask(task_loss="bce", weighting=uw)
    net, state = Net(1), None
    state = _state(obj)
    state["uw_s"][0] = torch.tensor([0.005, 0.5, 10.5], dtype=D)
    lk = net.losses(0).detach().tolist()
    net.step(obj, state, 0, start=True)
    expect_w = [math.exp(-0.02), math.exp(-1.0), math.exp(-20.0)]
    assert state["task_weights"][0].tolist() == pytest.approx(expect_w, rel=1e-12)
    s = state["uw_s"][0].tolist()
    assert s[0] == 0.005 and s[2] == 10.5
    assert s[1] == pytest.approx(0.5 - 0.1 * (1 - 2 * lk[1] * math.exp(-1.0)), rel=1e-12)


# ---------------------------------------------------------------------------------------
# GradNorm


def _flat(gs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in gs])


def test_gradnorm_tag_celeba_two_steps_by_hand():
    """TAG's variant, W = A2 (the last shared kernel), alpha 0.1, lr 1, momentum 0: step
    0 stores L(0) = L, so r = 1 and the target is Gbar; w = 1 - lr sign(G - Gbar) n, then
    clipped to [0.1, 10] and rescaled to sum 3. Step 1: G_t = w_t n_t, r_t = Ltilde_t /
    mean Ltilde, L_grad = sum |G - Gbar r^0.1|; the network's gradient uses the step's
    starting w (explicit autograd of sum w_t L_t)."""
    gn = GradNorm(lr=1.0, momentum=0.0)
    obj = MultiTask(task_loss="bce", weighting=gn)
    net = Net(2)
    state = _state(obj)
    w = [1.0] * T
    l0 = net.losses(0).detach().tolist()
    for k in range(2):
        lk = net.losses(k).detach().tolist()
        n = [float(net.grads_of(net.losses(k)[t], [net.a2])[0].norm()) for t in range(T)]
        big_g = [wi * ni for wi, ni in zip(w, n)]
        gbar = sum(big_g) / T
        lt = [a / b for a, b in zip(lk, l0)]
        r = [v / (sum(lt) / T) for v in lt]
        target = [gbar * ri**0.1 for ri in r]
        if k == 0:
            assert r == pytest.approx([1.0] * T)
        expect = net.grads_of((torch.tensor(w, dtype=D) * net.losses(k)).sum(), net.shared)
        net.step(obj, state, k, start=k == 0)
        for p, e in zip(net.shared, expect):
            torch.testing.assert_close(p.grad, e)
        assert state["task_weights"][0].tolist() == pytest.approx(w, rel=1e-12)
        grad = [math.copysign(ni, gi - ti) for ni, gi, ti in zip(n, big_g, target)]
        raw = [wi - 1.0 * gi for wi, gi in zip(w, grad)]
        clipped = [min(max(v, 0.1), 10.0) for v in raw]
        w = [3 * v / sum(clipped) for v in clipped]
        if k == 0:
            assert min(raw) < 0.1  # the clip acts on this step
        assert state["gn_w"][0].tolist() == pytest.approx(w, rel=1e-10)
        assert sum(state["gn_w"][0].tolist()) == pytest.approx(3.0)
    assert state["gn_l0"][0].tolist() == pytest.approx(l0, rel=1e-12)


def test_gradnorm_libmtl_first_epoch_then_t_softmax_by_hand():
    """LibMTL's variant, alpha 1.5, SGD lr 0.3 momentum 0: batches 0 and 1 are epoch 0
    (equal weights, losses summed into L(0) = their mean); batch 2 starts epoch 1: w = 3
    softmax(1, 1, 1) = 1, G_t = ||grad_shared L_t|| over all shared tensors, logits step
    by lr * J^T sign(G - Gbar r^1.5) n with J the Jacobian of 3 softmax; batch 3 uses
    those weights: the shared gradient is sum_t w_t grad L_t, the heads' the unweighted
    sum (LibMTL)."""
    gn = GradNorm("libmtl", lr=0.3, momentum=0.0)
    obj = MultiTask(task_loss="bce", weighting=gn)
    net = Net(3)
    state = _state(obj)
    first = [net.losses(k).detach() for k in range(2)]
    for k in range(2):
        expect = net.grads_of(net.losses(k).sum(), net.shared)
        net.step(obj, state, k, start=k == 0)
        assert state["task_weights"][0].tolist() == [1.0] * T
        for p, e in zip(net.shared, expect):
            torch.testing.assert_close(p.grad, e)
    assert state["gn_logits"][0].tolist() == [1.0] * T  # not stepped in epoch 0
    l0 = ((first[0] + first[1]) / 2).tolist()
    logits = [1.0] * T
    for k in (2, 3):
        sm = [math.exp(v) / sum(math.exp(u) for u in logits) for v in logits]
        w = [T * v for v in sm]
        lk = net.losses(k).detach().tolist()
        g = [_flat(net.grads_of(net.losses(k)[t], net.shared)) for t in range(T)]
        n = [float(gt.norm()) for gt in g]
        big_g = [wi * ni for wi, ni in zip(w, n)]
        gbar = sum(big_g) / T
        lt = [a / b for a, b in zip(lk, l0)]
        r = [v / (sum(lt) / T) for v in lt]
        dw = [math.copysign(ni, gi - gbar * ri**1.5) for ni, gi, ri in zip(n, big_g, r)]
        dz = [sum(dw[i] * T * sm[i] * ((i == j) - sm[j]) for i in range(T)) for j in range(T)]
        shared_expect = sum(wi * gt for wi, gt in zip(w, g))
        head_expect = net.grads_of(net.losses(k).sum(), [net.h])[0]
        net.step(obj, state, k, start=k == 2)
        assert state["task_weights"][0].tolist() == pytest.approx(w, rel=1e-12)
        torch.testing.assert_close(_flat([p.grad for p in net.shared]), shared_expect)
        torch.testing.assert_close(net.h.grad, head_expect)
        logits = [z - 0.3 * d for z, d in zip(logits, dz)]
        assert state["gn_logits"][0].tolist() == pytest.approx(logits, rel=1e-10)
    assert state["gn_l0"][0].tolist() == pytest.approx(l0, rel=1e-12)
    assert sum(state["task_weights"][0].tolist()) == pytest.approx(3.0)
    assert state["task_weights"][0].tolist() != pytest.approx([1.0] * T, abs=1e-4)


# ---------------------------------------------------------------------------------------
# PCGrad


def _g(*rows: tuple[float, ...]) -> torch.Tensor:
    return torch.tensor([rows], dtype=D)


def test_pcgrad_projects_two_conflicting_gradients_by_hand():
    """g1 = (1, 0), g2 = (-1, 1), g1.g2 = -1: g1' = g1 + g2 / 2 = (0.5, 0.5), g2' = g2 + g1
    = (0, 1); the shared update is their sum (0.5, 1.5)."""
    out = PCGrad.project(_g((1, 0), (-1, 1)), PCGrad(order="fixed").orders([0], 0, 2))
    assert out[0].tolist() == [[0.5, 0.5], [0.0, 1.0]]
    assert out[0].sum(0).tolist() == [0.5, 1.5]


def test_pcgrad_three_gradients_order_matters_and_agreeing_ones_are_untouched():
    """g1 = (1, 0), g2 = (-1, 1), g3 = (-1, -2). For g1: order (2, 3): g1 + g2/2 = (.5, .5),
    then . g3 = -1.5: + 0.3 g3 = (0.2, -0.1); order (3, 2): g1 + g3/5 = (0.8, -0.4), then
    . g2 = -1.2: + 0.6 g2 = (0.2, 0.2). Non-conflicting (1, 0), (1, 1) stay as they are."""
    g = _g((1, 0), (-1, 1), (-1, -2))
    fixed = PCGrad.project(g, PCGrad(order="fixed").orders([0], 0, 3))[0, 0]
    reverse = PCGrad.project(g, torch.tensor([[[2, 1, 0], [0, 1, 2], [0, 1, 2]]]))[0, 0]
    torch.testing.assert_close(fixed, torch.tensor([0.2, -0.1], dtype=D))
    torch.testing.assert_close(reverse, torch.tensor([0.2, 0.2], dtype=D))
    calm = _g((1, 0), (1, 1))
    assert torch.equal(PCGrad.project(calm, PCGrad().orders([0], 0, 2)), calm)


def test_pcgrad_include_self_matters_only_after_a_flip():
    """g1 = (3, -1), g2 = (-2, 2), g3 = (0, -2), g2's order (1, 3, 2): g2 + 0.8 g1 = (0.4,
    1.2); . g3 = -2.4: + 0.6 g3 = (0.4, 0); now . g2 = -0.8 < 0, so projecting on g2 itself
    (the originals' code) gives (0.2, 0.2); the paper's j != i stops at (0.4, 0)."""
    g = _g((3, -1), (-2, 2), (0, -2))
    with_self = PCGrad.project(g, torch.tensor([[[0, 1, 2], [0, 2, 1], [0, 1, 2]]]))
    without = PCGrad.project(g, torch.tensor([[[1, 2], [0, 2], [0, 1]]]))
    torch.testing.assert_close(with_self[0, 1], torch.tensor([0.2, 0.2], dtype=D))
    torch.testing.assert_close(without[0, 1], torch.tensor([0.4, 0.0], dtype=D))
    assert PCGrad(order="fixed", include_self=False).orders([0], 0, 3)[0].tolist() == [
        [1, 2],
        [0, 2],
        [0, 1],
    ]


def test_pcgrad_shuffled_orders_are_seeded_per_model_and_step():
    """Shuffled orders: permutations of 0..T-1 per task, the same for the same (seed,
    model, step), different across steps and models; 'fixed' is 0..T-1 for every i."""
    p = PCGrad(order="shuffle", seed=3)
    o = p.orders([0, 1], 5, 4)
    assert o.shape == (2, 4, 4)
    assert all(sorted(row) == [0, 1, 2, 3] for row in o.reshape(-1, 4).tolist())
    assert torch.equal(o, PCGrad(order="shuffle", seed=3).orders([0, 1], 5, 4))
    assert torch.equal(o[1:], p.orders([1], 5, 4))  # a model's orders do not depend on others
    assert not torch.equal(o, p.orders([0, 1], 6, 4))
    assert not torch.equal(o[0], o[1])
    assert PCGrad(order="fixed").orders([7], 9, 3)[0].tolist() == [[0, 1, 2]] * 3


@pytest.mark.parametrize("order", ["fixed", "shuffle"])
def test_pcgrad_backward_projects_shared_and_leaves_heads_alone(order):
    """On the net: the shared .grad is sum_i g_i' with the projection written out as a loop
    over the weighting's orders (explicit per-task autograd), the heads' .grad is each
    head's own task gradient (explicit autograd of sum_t L_t); with TAG's inner UW the
    losses are scaled by e^{-2 clip(s)} first and s steps."""
    for inner in (StaticWeights(), UncertaintyWeighting("tag_celeba", lr=0.1)):
        pc = PCGrad(order=order, seed=1, inner=inner)
        obj = MultiTask(task_loss="bce", weighting=pc)
        net = Net(10)
        state = _state(obj)
        w = [math.exp(-2.0)] * T if isinstance(inner, UncertaintyWeighting) else [1.0] * T
        g = [_flat(net.grads_of(w[t] * net.losses(0)[t], net.shared)) for t in range(T)]
        dots = [[float(g[i] @ g[j]) for j in range(T)] for i in range(T)]
        assert min(min(r) for r in dots) < 0  # some gradients conflict
        orders = pc.orders([0], 0, T)[0].tolist()
        total = torch.zeros_like(g[0])
        for i in range(T):
            gi = g[i].clone()
            for j in orders[i]:
                d = float(gi @ g[j])
                if d < 0:
                    gi = gi - d / float(g[j] @ g[j]) * g[j]
            total += gi
        head = net.grads_of((torch.tensor(w, dtype=D) * net.losses(0)).sum(), [net.h, net.c])
        net.step(obj, state, 0, start=True)
        torch.testing.assert_close(_flat([p.grad for p in net.shared]), total)
        torch.testing.assert_close(net.h.grad, head[0])
        torch.testing.assert_close(net.c.grad, head[1])
        assert not torch.allclose(total, sum(g))  # the projection changed something
        if "uw_s" in state:
            assert state["uw_s"][0].tolist() != [1.0] * T


# ---------------------------------------------------------------------------------------
# through fit_many


class Crash(Hook):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, ctx) -> None:  # noqa: ANN001
        if ctx.step == self.at:
            raise KeyboardInterrupt


def _fit(digits, weighting, batched: bool, hooks=()):  # noqa: ANN001, ANN202
    c = digits.classes
    labels = torch.stack([c % 2, (c < 5).long(), (c % 3 == 0).long()], -1)
    recipe = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, epochs=2, batch_size=256)
    return fit_many(
        "mlp",
        digits,
        torch.stack([labels, labels]),
        recipe,
        seeds=[1, 2],
        objective=MultiTask(task_loss="bce", weighting=weighting),
        batched=batched,
        hooks=list(hooks),
        model_kwargs={"widths": (16,)},
    )


@pytest.mark.parametrize(
    "weighting",
    [GradNorm(), GradNorm("libmtl", optimizer="adam", lr=0.05), PCGrad(seed=2)],
    ids=["gradnorm-tag", "gradnorm-libmtl", "pcgrad-shuffle"],
)
def test_batched_equals_the_per_model_loop(digits, weighting):
    """Two models with their own rows of state: vmap'd batched == one model at a time."""
    batched = _fit(digits, weighting, True)
    loop = _fit(digits, weighting, False)
    for k in batched.params:
        torch.testing.assert_close(batched.params[k], loop.params[k], rtol=1e-4, atol=1e-5)
    for k, v in batched.objective_state.items():
        torch.testing.assert_close(v, loop.objective_state[k], rtol=1e-4, atol=1e-5)
    w = batched.objective_state["task_weights"]
    if not isinstance(weighting, PCGrad):
        assert not torch.equal(w[0], w[1]) and float((w - 1).abs().max()) > 1e-3


def test_learned_state_survives_a_resume(digits, tmp_path):
    """LibMTL GradNorm (epoch counter, L(0) sums, logits and Adam moments in the state):
    killed mid second epoch and resumed from the checkpoint equals an uninterrupted fit."""
    gn = GradNorm("libmtl", optimizer="adam", lr=0.05)
    whole = _fit(digits, gn, True)
    path = tmp_path / "fit.safetensors"
    with pytest.raises(KeyboardInterrupt):
        _fit(digits, gn, True, [Crash(6), Checkpoint(path, 4)])
    resumed = _fit(digits, gn, True, [Checkpoint(path, 4)])
    for k, v in whole.objective_state.items():
        assert torch.equal(v, resumed.objective_state[k]), k
    for k in whole.params:
        assert torch.equal(whole.params[k], resumed.params[k]), k


# ---------------------------------------------------------------------------------------
# refusals and the factory


@pytest.mark.parametrize("weighting", [GradNorm(), GradNorm("libmtl"), PCGrad()])
def test_a_model_without_a_trunk_is_refused_in_one_line(weighting):
    obj = MultiTask(task_loss="bce", weighting=weighting)
    state = obj.init_state(_fit_data(), torch.device("cpu"))
    logits = torch.randn(1, B, T, requires_grad=True)
    batch = _batch(False, step=3)
    state.get("gn_epoch", torch.zeros(1)).fill_(2)
    with pytest.raises(TaskspaceError) as err:
        obj.backward(logits, batch, state, SharedParams([], False, []))
    msg = str(err.value)
    assert "needs shared (trunk) parameters" in msg and "\n" not in msg


def test_make_weighting_by_name_and_its_refusals():
    assert EqualWeights is StaticWeights and make_weighting("equal").values is None
    assert isinstance(make_weighting("lbtw", alpha=1.0), LBTW)
    uw = make_weighting("uw", variant="libmtl", lr=0.01)
    assert isinstance(uw, UncertaintyWeighting) and uw.variant == "libmtl"
    assert make_weighting("gradnorm", variant="libmtl").exponent == 1.5
    assert GradNorm().exponent == 0.1
    pc = make_weighting("pcgrad", order="fixed", inner="uw", inner_opts={"variant": "tag_celeba"})
    assert isinstance(pc, PCGrad) and isinstance(pc.inner, UncertaintyWeighting)
    assert pc.inner.variant == "tag_celeba" and pc.order == "fixed"
    cases = [
        (lambda: make_weighting("mgda"), "equal, static, lbtw, uw, gradnorm, pcgrad"),
        (lambda: make_weighting("uw", alpha=2), "no option(s) alpha"),
        (lambda: make_weighting("equal", values=[1, 2]), "takes none"),
        (lambda: UncertaintyWeighting("gal"), "kendall, tag_celeba, libmtl"),
        (lambda: GradNorm("chen"), "'tag_celeba' or 'libmtl'"),
        (lambda: PCGrad(order="random"), "'shuffle' or 'fixed'"),
        (lambda: make_weighting("pcgrad", inner="pcgrad"), "cannot be PCGrad"),
        (lambda: UncertaintyWeighting(optimizer="rmsprop"), "'sgd' or 'adam'"),
    ]
    for make, message in cases:
        with pytest.raises(TaskspaceError) as err:
            make()
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_fit_mtl_trains_with_a_weighting_instance():
    """fit_mtl takes a TaskWeighting as ``weighting``: kendall UW (s = 0 -> w = 1/2 on the
    first step) steps its s over one epoch and logs the weights; the string-only options
    are refused alongside an instance."""
    ds = load_dataset("celeba_lite")
    uw = UncertaintyWeighting(lr=0.05)
    kw = dict(preset="digits", seeds=[0], epochs=1)
    r = fit_mtl(ds, ["Square:Red", "Large:Red"], weighting=uw, **kw)
    assert r.weighting is uw and r.weight_trace[0][0].tolist() == [0.5, 0.5]
    s = r.ensemble.objective_state["uw_s"]
    assert torch.equal(r.weight_trace[0][-1], r.task_weights[0])
    assert float(s.abs().min()) > 1e-3 and float((r.task_weights - 0.5).abs().min()) > 1e-3
    for extra, message in [
        (dict(force_lbtw=True), "force_lbtw=True replaces the weighting"),
        (dict(task_weights=[0.5, 0.5]), "task_weights go with weighting='static'"),
    ]:
        with pytest.raises(TaskspaceError, match=message):
            fit_mtl(ds, ["Square:Red", "Large:Red"], weighting=uw, **kw, **extra)


def test_unweighted_helpers_agree_with_torch_bce():
    """The Net's written-out BCE equals torch's (the hand computations rest on it)."""
    net = Net()
    z, y = net.logits(0), net.ys[0]
    ref = F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(0)
    torch.testing.assert_close(net.losses(0), ref)
