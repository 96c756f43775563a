"""Stacked optimisers: one optimiser over M models' stacked parameters ``[M, ...]``.

They follow torch.optim.SGD/Adam's update formulas exactly, but every model has its own
learning rate (for per-model schedules) and its own step count, and a model can be frozen
for a step (``active=False``) without its parameters or moments moving. That lets models
with different numbers of steps (subsets of different sizes) train in one batch.
"""

from __future__ import annotations

import torch

from taskspace.engine.recipe import Recipe


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """SGD (momentum, Nesterov, weight decay) or Adam (L2 weight decay) over stacked leaves.

    ``weight_decays [M]``: per-model weight decay (a hyper-parameter grid in one fit);
    ``None`` uses the recipe's for every model.
    """

    def __init__(
        self, params: list[torch.Tensor], recipe: Recipe, weight_decays: torch.Tensor | None = None
    ) -> None:
        self.params = params
        self.recipe = recipe
        self.wds = weight_decays
        m = params[0].shape[0]
        self.t = torch.zeros(m, dtype=torch.float64)
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    @torch.no_grad()
    def step(self, lrs: torch.Tensor, active: torch.Tensor) -> None:
        """One update; ``lrs [M]`` per-model learning rates, ``active [M]`` bool."""
        r = self.recipe
        self.t += active.double()
        uniform = self.wds is None and bool(active.all()) and bool((lrs == lrs[0]).all())
        if uniform and bool((self.t == self.t[0]).all()):
            self._uniform_step(float(lrs[0]), float(self.t[0]))
            return
        for p, st in zip(self.params, self.state):
            g = p.grad
            if g is None:
                continue
            act = _expand(active.to(p.device), p)
            lr = _expand(lrs.to(p.device, p.dtype), p)
            if self.wds is not None:
                g = g + _expand(self.wds.to(p.device, p.dtype), p) * p
            elif r.weight_decay:
                g = g.add(p, alpha=r.weight_decay)
            if r.optimizer == "sgd":
                if r.momentum:
                    if "buf" not in st:
                        # torch.optim.SGD initialises the buffer with the first gradient
                        st["buf"] = torch.where(act, g, torch.zeros_like(g))
                        st["seen"] = active.clone()
                    else:
                        first = _expand((~st["seen"] & active).to(p.device), p)
                        new = torch.where(first, g, st["buf"] * r.momentum + g)
                        st["buf"] = torch.where(act, new, st["buf"])
                        st["seen"] |= active
                    d = g + r.momentum * st["buf"] if r.nesterov else st["buf"]
                else:
                    d = g
                p.sub_(torch.where(act, lr * d, torch.zeros_like(d)))
            else:
                b1, b2 = r.betas
                if "m" not in st:
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                m_new = st["m"].lerp(g, 1 - b1)
                v_new = st["v"] * b2 + (1 - b2) * g * g
                st["m"] = torch.where(act, m_new, st["m"])
                st["v"] = torch.where(act, v_new, st["v"])
                t = self.t.clamp(min=1)
                bc1 = _expand((1 - b1**t).to(p.device, p.dtype), p)
                bc2_sqrt = _expand(((1 - b2**t) ** 0.5).to(p.device, p.dtype), p)
                step_size = lr / bc1
                denom = st["v"].sqrt() / bc2_sqrt + r.eps
                p.sub_(torch.where(act, step_size * st["m"] / denom, torch.zeros_like(p)))

    def _uniform_step(self, lr: float, t: float) -> None:
        """The common case (every model active, one lr, one step count): the same update as
        above with scalar hyper-parameters and foreach kernels, i.e. torch.optim's own
        formulas, without the per-model masks that dominate small-model steps on a CPU."""
        r = self.recipe
        pairs = [(p, st) for p, st in zip(self.params, self.state) if p.grad is not None]
        if not pairs:
            return
        ps = [p for p, _ in pairs]
        gs: list[torch.Tensor] | tuple[torch.Tensor, ...]
        gs = [p.grad for p in ps if p.grad is not None]  # every one (pairs has grads)
        if r.weight_decay:
            gs = torch._foreach_add(gs, ps, alpha=r.weight_decay)
        if r.optimizer == "sgd":
            if r.momentum:
                if all("buf" in st for _, st in pairs):
                    bufs = [st["buf"] for _, st in pairs]
                    torch._foreach_mul_(bufs, r.momentum)
                    torch._foreach_add_(bufs, gs)
                else:
                    for (_, st), g in zip(pairs, gs):
                        if "buf" in st:
                            st["buf"].mul_(r.momentum).add_(g)
                        else:
                            st["buf"] = g.clone()
                            st["seen"] = torch.ones(g.shape[0], dtype=torch.bool)
                    bufs = [st["buf"] for _, st in pairs]
                ds = torch._foreach_add(gs, bufs, alpha=r.momentum) if r.nesterov else bufs
            else:
                ds = gs
            torch._foreach_add_(ps, ds, alpha=-lr)
            return
        b1, b2 = r.betas
        for p, st in pairs:
            if "m" not in st:
                st["m"] = torch.zeros_like(p)
                st["v"] = torch.zeros_like(p)
        ms = [st["m"] for _, st in pairs]
        vs = [st["v"] for _, st in pairs]
        torch._foreach_lerp_(ms, gs, 1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, gs, gs, value=1 - b2)
        step_size = lr / (1 - b1**t)
        denom = torch._foreach_sqrt(vs)
        torch._foreach_div_(denom, (1 - b2**t) ** 0.5)
        torch._foreach_add_(denom, r.eps)
        torch._foreach_addcdiv_(ps, ms, denom, value=-step_size)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"t": self.t, "state": self.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (moments on their parameters' devices;
        step counts and the ``seen`` flags stay on the CPU, where they are kept)."""
        self.t = state["t"].clone()
        self.state = [
            {k: v.clone() if k == "seen" else v.to(p.device).clone() for k, v in st.items()}
            for p, st in zip(self.params, state["state"])
        ]


def schedule_lr(recipe: Recipe, step: int, total: torch.Tensor) -> torch.Tensor:
    """Per-model learning rate at ``step`` (0-based) for models with ``total [M]`` steps."""
    base = torch.full(total.shape, recipe.lr, dtype=torch.float64)
    if recipe.schedule == "cosine":
        frac = (torch.tensor(float(step), dtype=torch.float64) / total.double()).clamp(max=1)
        base = 0.5 * recipe.lr * (1 + torch.cos(torch.pi * frac))
    return base
