"""The learning rate's plan for a run on a number of ranks: one value, computed once, handed down.

    plan = Schedule.of(cfg, ranks=4, steps_per_epoch=120)   # cfg: base_lr, lr_scaling, warmup_epochs,
    plan.target_lr                                          #      grad_accum_steps
    plan.at_epochs(1.5)                                     # the ramp's rate 1.5 epochs in

The target is ``base_lr`` scaled (``lr_scaling``) for the global batch in
images per update, ``ranks x per_rank_batch x grad_accum_steps``: N ranks
accumulating K batches make the update of N x K ranks, and get its rate. The
warm-up ramps from ``base_lr`` to the target over ``warmup_epochs`` counted in
optimizer updates.
"""
import dataclasses
import math


def scaled_lr(base_lr, size, rule="sqrt"):
    """The learning rate for a global batch ``size`` times the single-rank one.

    linear: x size (Goyal et al. 2017, derived for SGD); sqrt: x sqrt(size)
    (Malladi et al. 2022, the rule for Adam-like optimizers, whose step size does
    not grow with the gradient); none: unchanged.
    """
    factor = {"linear": size, "sqrt": math.sqrt(size), "none": 1}[rule]
    return base_lr * factor


def warmup_lr(update, warmup_updates, base_lr, target_lr):
    """Linear ramp from ``base_lr`` at update 0 to ``target_lr`` at ``warmup_updates``."""
    if warmup_updates <= 0 or update >= warmup_updates:
        return target_lr
    return base_lr + (target_lr - base_lr) * update / warmup_updates


@dataclasses.dataclass(frozen=True)
class Schedule:
    base_lr: float
    target_lr: float
    warmup_updates: int
    batches_per_update: int
    updates_per_epoch: float
    rule: str

    @classmethod
    def of(cls, cfg, ranks, steps_per_epoch):
        k = cfg.grad_accum_steps
        return cls(base_lr=cfg.base_lr, target_lr=scaled_lr(cfg.base_lr, ranks * k, cfg.lr_scaling),
                   warmup_updates=int(round(cfg.warmup_epochs * steps_per_epoch / k)), batches_per_update=k,
                   updates_per_epoch=steps_per_epoch / k, rule=cfg.lr_scaling)

    def at_epochs(self, epochs_done):
        """The ramp's rate after ``epochs_done`` epochs (a fraction for a mid-epoch position)."""
        return warmup_lr(epochs_done * self.updates_per_epoch, self.warmup_updates, self.base_lr, self.target_lr)
