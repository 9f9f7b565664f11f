"""SR trainers on ``monai.engines.SupervisedTrainer``: supervised, GAN (ESRGAN/SRGAN recipes), distillation.

Each reads batches with keys ``lr`` and ``hr`` and its step returns (and fires
``IterationEvents.MODEL_COMPLETED`` with) a dict holding ``image`` (LR), ``label`` (HR), ``pred`` (SR,
detached), ``loss`` (the generator/student total, a float) and every term as ``loss_<name>`` (floats),
so MONAI handlers (StatsHandler, CheckpointSaver, ValidationHandler, MLFlowHandler) work unchanged.

Common options: ``scheduler(s)`` stepped per iteration or epoch, ``ema`` / ``ema_decay`` (a
:class:`ModelEMA` updated after each generator step), ``amp`` (``"bf16"``/``"fp16"``) and
``channels_last`` (CUDA only; ignored with a warning elsewhere), ``grad_clip_norm``, ``deterministic`` +
``seed``, ``data_seed`` (the loader is wrapped in a :class:`ResumableLoader`), ``resume_from`` (a checkpoint
file or a folder of them) and loss terms all-reduced across DDP ranks.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys
from torch import nn
from torch.optim import Optimizer

from medsr.pipeline.engines.checkpoint import load_generator_weights, restore_pending_rng, resume
from medsr.pipeline.engines.common import (
    SRPrepareBatch,
    enable_deterministic,
    memory_format_for,
    plain,
    resolve_amp,
    resolve_channels_last,
    unwrap_model,
)
from medsr.pipeline.engines.data import ResumableLoader
from medsr.pipeline.engines.distributed import all_reduce_mean, is_distributed
from medsr.pipeline.engines.ema import ModelEMA
from medsr.pipeline.losses import GANLoss
from medsr.pipeline.losses.pixel import get_pixel_loss

__all__ = ["SRTrainer", "GANTrainer", "DistillationTrainer", "SRTrainerBase", "set_requires_grad"]


def set_requires_grad(model: nn.Module, flag: bool) -> None:
    """Switch gradients of every parameter of ``model`` on or off."""
    for p in model.parameters():
        p.requires_grad_(flag)


def _terms(
    result: torch.Tensor | Mapping[str, torch.Tensor], name: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total, {term: value}) from a loss result: a tensor or a dict with ``"loss"``."""
    if isinstance(result, torch.Tensor):
        return result.mean(), {}
    if isinstance(result, Mapping):
        if "loss" not in result:
            raise KeyError(
                f"{name}: a loss returning a dict must include the total under 'loss' (got {sorted(result)})"
            )
        return result["loss"], {k: v for k, v in result.items() if k != "loss"}
    raise TypeError(f"{name}: loss must return a tensor or a dict, got {type(result).__name__}")


class SRTrainerBase(SupervisedTrainer):
    """Common machinery of the medsr trainers (see the module docstring); not used directly.

    Every concrete trainer's ``__init__`` ends with :meth:`_finish_init` (resume from ``resume_from`` once every
    component it checkpoints exists). A subclass of a concrete trainer sets its own attributes before calling
    ``super().__init__``, or overrides :meth:`checkpoint_objects` and resumes by itself.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        epoch_length: int | None = None,
        scheduler: Any | None = None,
        scheduler_step: str = "iteration",
        ema: ModelEMA | None = None,
        ema_decay: float | None = None,
        amp: bool | str = False,
        channels_last: bool = False,
        grad_clip_norm: float | None = None,
        deterministic: bool = False,
        seed: int = 0,
        data_seed: int | None = 0,
        resume_from: str | os.PathLike | None = None,
        reduce_losses: bool = True,
        input_key: str = "lr",
        target_key: str = "hr",
        train_handlers: Sequence | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        decollate: bool = True,
        non_blocking: bool = False,
        **kwargs,
    ) -> None:
        if scheduler_step not in ("iteration", "epoch"):
            raise ValueError(f"scheduler_step must be 'iteration' or 'epoch', got {scheduler_step!r}")
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be > 0 or None, got {grad_clip_norm}")
        if deterministic:
            enable_deterministic(seed)
        device = torch.device(device)
        if data_seed is not None and not isinstance(train_data_loader, ResumableLoader):
            train_data_loader = ResumableLoader(train_data_loader, seed=data_seed)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=SRPrepareBatch(input_key, target_key),
            train_handlers=None,  # attached below, after the trainer's own state is complete
            key_train_metric=key_train_metric,
            additional_metrics=additional_metrics,
            amp=False,  # medsr handles AMP itself (bf16/fp16, one scaler per optimizer)
            decollate=decollate,
            **kwargs,
        )
        self.amp_dtype = resolve_amp(amp, device)
        self.use_channels_last = resolve_channels_last(channels_last, device)
        self._formatted: set[int] = set()
        self.grad_clip_norm = grad_clip_norm
        self.scheduler = scheduler
        self.scheduler_step = scheduler_step
        self.reduce_losses = reduce_losses
        self.deterministic = deterministic
        if ema is not None and ema_decay is not None:
            raise ValueError("give either ema (a ModelEMA) or ema_decay, not both")
        self.ema = ema if ema is not None else (ModelEMA(network, ema_decay) if ema_decay is not None else None)
        if self.ema is not None:
            self.ema.to(device)
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self._pending_rng_state = None
        self.add_event_handler(Events.STARTED, restore_pending_rng)
        if scheduler_step == "epoch":
            self.add_event_handler(Events.EPOCH_COMPLETED, lambda engine: engine._step_schedulers())
        self._resume_from = resume_from
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    def _finish_init(self) -> None:
        """The last call of every concrete trainer's ``__init__``: resume once every component exists."""
        if self._resume_from is not None:
            resume(self, self._resume_from)

    # ----- pieces used by the steps -------------------------------------------------------------
    def _scaler(self, name: str) -> torch.amp.GradScaler | None:
        if self.amp_dtype != torch.float16:
            return None
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler("cuda")
        return self.scalers[name]

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.state.device.type, enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _prepare(self, batchdata) -> tuple[torch.Tensor, torch.Tensor]:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        lr, hr = self.prepare_batch(batchdata, self.state.device, self.non_blocking, **self.to_kwargs)
        lr, hr = plain(lr), plain(hr)
        if self.use_channels_last:
            fmt = memory_format_for(lr.ndim)
            for model in self._models_to_format():
                if id(model) not in self._formatted:
                    model.to(memory_format=fmt)
                    self._formatted.add(id(model))
            lr, hr = lr.contiguous(memory_format=fmt), hr.contiguous(memory_format=fmt)
        return lr, hr

    def _models_to_format(self) -> list[nn.Module]:
        return [self.network]

    def _backward_step(
        self, loss: torch.Tensor, optimizer: Optimizer, model: nn.Module, name: str, clip: float | None
    ) -> None:
        scaler = self._scaler(name)
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        self.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if clip is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def _schedulers(self) -> list:
        return [self.scheduler] if self.scheduler is not None else []

    def _step_schedulers(self, which: Sequence | None = None) -> None:
        for sched in self._schedulers() if which is None else which:
            if sched is not None:
                sched.step()

    def _generator_update(self, lr, hr, sr, total: torch.Tensor, update: bool = True) -> None:
        """The generator's step after its loss: events, then (when ``update``) backward and optimizer step,
        its per-iteration scheduler and the EMA. Every trainer calls it; :meth:`_finish` writes the output."""
        self.state.output = {Keys.IMAGE: lr, Keys.LABEL: hr, Keys.PRED: sr, Keys.LOSS: total}
        self.fire_event(IterationEvents.FORWARD_COMPLETED)
        self.fire_event(IterationEvents.LOSS_COMPLETED)
        if not update:
            return
        self._backward_step(total, self.optimizer, self.network, "g", self.grad_clip_norm)
        if self.scheduler_step == "iteration" and self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.network)

    def _finish(self, lr, hr, sr, total: torch.Tensor, terms: Mapping[str, torch.Tensor | float]) -> dict:
        values = {"loss": float(total.detach())}
        values.update(
            {f"loss_{k}": float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in terms.items()}
        )
        if self.reduce_losses and is_distributed():
            values = all_reduce_mean(values)
        self.state.output = {Keys.IMAGE: lr, Keys.LABEL: hr, Keys.PRED: sr.detach(), **values}
        self.fire_event(IterationEvents.MODEL_COMPLETED)
        return self.state.output

    def checkpoint_objects(self) -> dict[str, Any]:
        """Everything saved in a checkpoint, by name (each has ``state_dict``/``load_state_dict``)."""
        objs: dict[str, Any] = {"network": unwrap_model(self.network), "optimizer": self.optimizer}
        if self.scheduler is not None:
            objs["scheduler"] = self.scheduler
        self._common_objects(objs)
        return objs

    def _common_objects(self, objs: dict) -> None:
        if self.ema is not None:
            objs["ema"] = self.ema
        for name, scaler in self.scalers.items():
            objs[f"scaler_{name}"] = scaler
        if isinstance(self.data_loader, ResumableLoader):
            objs["data"] = self.data_loader


class SRTrainer(SRTrainerBase):
    """Supervised (PSNR-oriented) SR training: ``loss(G(lr), hr)``, one optimizer.

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches with ``lr`` and ``hr``.
        network: the generator (LR in, HR out; may be DDP-wrapped).
        optimizer: its optimizer.
        loss_function: a module returning a tensor, a composite loss returning ``{"loss", term...}``
            (e.g. ``FusionLoss(w_rg=0)``), or a name (``"l1"``, ``"mse"``, ``"charbonnier"``, ``"ssim"``).
        kwargs: the common options of the module docstring (``scheduler``, ``ema_decay``, ``amp``,
            ``channels_last``, ``grad_clip_norm``, ``deterministic``, ``seed``, ``data_seed``,
            ``resume_from``, ``train_handlers``, ``key_train_metric`` ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable | str = "l1",
        **kwargs,
    ) -> None:
        loss = get_pixel_loss(loss_function) if isinstance(loss_function, str) else loss_function
        if getattr(loss, "uses_adversarial", False):
            raise ValueError(
                f"SRTrainer: {type(loss).__name__} has an adversarial term; use GANTrainer or set its adversarial weight to 0"
            )
        if isinstance(loss, nn.Module):
            loss = loss.to(device)
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss, **kwargs)
        self._finish_init()

    def _iteration(self, engine: SRTrainer, batchdata: dict) -> dict:
        lr, hr = self._prepare(batchdata)
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            sr = self.network(lr)
            total, terms = _terms(self.loss_function(sr, hr), "SRTrainer")
        self._generator_update(lr, hr, sr, total)
        return self._finish(lr, hr, sr, total, terms)


class GANTrainer(SRTrainerBase):
    """Adversarial SR training (SRGAN, ESRGAN, EDSR-ISE-GAN): a generator step then discriminator step(s).

    Per iteration: unless still in ``d_init_iters`` (discriminator warm-up), G minimises
    ``g_loss(G(lr), hr, D(G(lr)), D(hr))`` with D frozen; then D is updated ``d_updates_per_g`` times on
    ``d_loss.discriminator(D(hr), D(G(lr).detach()))``. ``loss`` in the output is G's total; the terms
    come as ``loss_<term>`` plus ``loss_d`` (D's loss, averaged over its updates).

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches with ``lr`` and ``hr``.
        generator: G (may be DDP-wrapped).
        discriminator: D returning logits (may be DDP-wrapped).
        g_optimizer: G's optimizer.
        d_optimizer: D's optimizer.
        g_loss: composite generator loss (``FusionLoss``, ``ESRGANLoss``, ``SRGANLoss``) called as
            ``g_loss(sr, hr, fake_logits, real_logits)`` returning ``{"loss", term...}``.
        d_loss: D's adversarial loss; default ``g_loss.adversarial``.
        g_scheduler: G's LR schedule. d_scheduler: D's LR schedule.
        d_updates_per_g: D updates per G update (the D/G ratio).
        d_init_iters: first iterations in which only D is trained.
        g_pretrained: generator warm start (ESRGAN stage 2 from the PSNR-oriented stage 1): a medsr
            checkpoint, a MONAI CheckpointSaver file or a state dict; loaded before training, not on resume.
        g_pretrained_key: entry of that file holding the weights.
        d_grad_clip_norm: D's gradient clipping (default ``grad_clip_norm``).
        kwargs: the common options of the module docstring.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        generator: nn.Module,
        discriminator: nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        g_loss: nn.Module,
        d_loss: GANLoss | None = None,
        g_scheduler: Any | None = None,
        d_scheduler: Any | None = None,
        d_updates_per_g: int = 1,
        d_init_iters: int = 0,
        g_pretrained: str | os.PathLike | None = None,
        g_pretrained_key: str | None = None,
        d_grad_clip_norm: float | None = None,
        **kwargs,
    ) -> None:
        if int(d_updates_per_g) < 1:
            raise ValueError(f"GANTrainer: d_updates_per_g must be >= 1, got {d_updates_per_g}")
        if int(d_init_iters) < 0:
            raise ValueError(f"GANTrainer: d_init_iters must be >= 0, got {d_init_iters}")
        d_loss = d_loss if d_loss is not None else getattr(g_loss, "adversarial", None)
        if not isinstance(d_loss, GANLoss):
            raise ValueError(
                "GANTrainer: no discriminator loss: pass d_loss=GANLoss(...) or a g_loss with an adversarial term"
            )
        if g_pretrained is not None and kwargs.get("resume_from") is None:
            load_generator_weights(generator, g_pretrained, key=g_pretrained_key)
        g_loss = g_loss.to(device)
        super().__init__(
            device, max_epochs, train_data_loader, generator, g_optimizer, g_loss, scheduler=g_scheduler, **kwargs
        )
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.d_loss = d_loss.to(device)
        self.d_scheduler = d_scheduler
        self.d_updates_per_g = int(d_updates_per_g)
        self.d_init_iters = int(d_init_iters)
        self.d_grad_clip_norm = self.grad_clip_norm if d_grad_clip_norm is None else d_grad_clip_norm
        self._finish_init()

    @property
    def generator(self) -> nn.Module:
        return self.network

    @property
    def g_optimizer(self) -> Optimizer:
        return self.optimizer

    def _models_to_format(self) -> list[nn.Module]:
        return [self.network, self.discriminator]

    def _schedulers(self) -> list:
        return [s for s in (self.scheduler, self.d_scheduler) if s is not None]

    def checkpoint_objects(self) -> dict[str, Any]:
        objs: dict[str, Any] = {
            "generator": unwrap_model(self.network),
            "discriminator": unwrap_model(self.discriminator),
            "g_optimizer": self.optimizer,
            "d_optimizer": self.d_optimizer,
        }
        if self.scheduler is not None:
            objs["g_scheduler"] = self.scheduler
        if self.d_scheduler is not None:
            objs["d_scheduler"] = self.d_scheduler
        self._common_objects(objs)
        return objs

    def _iteration(self, engine: GANTrainer, batchdata: dict) -> dict:
        lr, hr = self._prepare(batchdata)
        g, d = self.network, self.discriminator
        g.train()
        d.train()
        update_g = self.state.iteration > self.d_init_iters
        g_loss = self.loss_function
        # ---- generator step: D frozen and called without its DDP wrapper (it is not updated here)
        set_requires_grad(d, False)
        d_plain = unwrap_model(d)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(update_g), self._autocast():
            sr = g(lr)
            fake_logits = real_logits = None
            if getattr(g_loss, "uses_adversarial", True):
                fake_logits = d_plain(sr)
                if getattr(g_loss, "needs_real_logits", True):
                    with torch.no_grad():
                        real_logits = d_plain(hr)
            total, terms = _terms(g_loss(sr, hr, fake_logits, real_logits), "GANTrainer g_loss")
        set_requires_grad(d, True)
        self._generator_update(lr, hr, sr, total, update=update_g)
        # ---- discriminator step(s)
        fake = sr.detach()
        d_losses = []
        for _ in range(self.d_updates_per_g):
            self.d_optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                l_d = self.d_loss.discriminator(d(hr), d(fake))
            self._backward_step(l_d, self.d_optimizer, d, "d", self.d_grad_clip_norm)
            d_losses.append(l_d.detach())
        if self.scheduler_step == "iteration" and self.d_scheduler is not None:
            self.d_scheduler.step()
        terms = dict(terms)
        terms["d"] = torch.stack(d_losses).mean()
        return self._finish(lr, hr, sr, total, terms)


def _accepts_return_features(model: nn.Module) -> bool:
    try:
        return "return_features" in inspect.signature(unwrap_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


def forward_with_features(model: nn.Module, x: torch.Tensor, layers: Sequence[str] | None = None):
    """``(output, [feature maps])``: from forward hooks on the named ``layers``, else ``model(x, return_features=True)``."""
    if layers:
        base = unwrap_model(model)
        modules = dict(base.named_modules())
        missing = [n for n in layers if n not in modules]
        if missing:
            raise KeyError(f"{type(base).__name__} has no layers {missing}")
        feats: dict[str, torch.Tensor] = {}
        handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: feats.__setitem__(n, o)) for n in layers]
        try:
            out = model(x)
        finally:
            for h in handles:
                h.remove()
        return out, [feats[n] for n in layers]
    if not _accepts_return_features(model):
        raise TypeError(
            f"{type(unwrap_model(model)).__name__}.forward has no return_features argument; give feature layer names"
        )
    out, feats = model(x, return_features=True)
    return out, list(feats)


class DistillationTrainer(SRTrainerBase):
    """Knowledge distillation: a frozen teacher, a smaller student (width/depth compression, chest X-ray study).

    ``loss_function`` is a :class:`~medsr.pipeline.losses.DistillationLoss`; its trainable 1×1 adapters are
    added to the student's optimizer when missing. Features come from ``forward(x, return_features=True)``
    (every medsr generator) or from forward hooks on ``student_layers``/``teacher_layers``.

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: loader of dict batches with ``lr`` and ``hr``.
        student: the network being trained (may be DDP-wrapped).
        teacher: the trained large network (frozen, eval mode).
        optimizer: the student's optimizer.
        loss_function: a ``DistillationLoss``.
        teacher_weights: optional weights file for the teacher (see ``load_generator_weights``).
        student_layers: module names whose outputs are the student's features (default: ``return_features``).
        teacher_layers: the same for the teacher.
        kwargs: the common options of the module docstring.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        student: nn.Module,
        teacher: nn.Module,
        optimizer: Optimizer,
        loss_function: nn.Module,
        teacher_weights: str | os.PathLike | None = None,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        if teacher_weights is not None:
            load_generator_weights(teacher, teacher_weights)
        loss_function = loss_function.to(device)
        super().__init__(device, max_epochs, train_data_loader, student, optimizer, loss_function, **kwargs)
        self.teacher = unwrap_model(teacher).to(device).eval()
        set_requires_grad(self.teacher, False)
        self.student_layers = student_layers
        self.teacher_layers = teacher_layers
        in_opt = {id(p) for group in optimizer.param_groups for p in group["params"]}
        extra = [p for p in loss_function.parameters() if p.requires_grad and id(p) not in in_opt]
        if extra:
            optimizer.add_param_group({"params": extra})
        self.use_features = float(getattr(loss_function, "w_feature", 0.0)) != 0.0
        self._finish_init()

    @property
    def student(self) -> nn.Module:
        return self.network

    def checkpoint_objects(self) -> dict[str, Any]:
        objs: dict[str, Any] = {"student": unwrap_model(self.network), "optimizer": self.optimizer}
        if any(True for _ in self.loss_function.parameters()):
            objs["loss"] = self.loss_function
        if self.scheduler is not None:
            objs["scheduler"] = self.scheduler
        self._common_objects(objs)
        return objs

    def _iteration(self, engine: DistillationTrainer, batchdata: dict) -> dict:
        lr, hr = self._prepare(batchdata)
        self.network.train()
        self.teacher.eval()
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            with torch.no_grad():
                if self.use_features:
                    t_out, t_feats = forward_with_features(self.teacher, lr, self.teacher_layers)
                else:
                    t_out, t_feats = self.teacher(lr), []
            if self.use_features:
                sr, s_feats = forward_with_features(self.network, lr, self.student_layers)
            else:
                sr, s_feats = self.network(lr), []
            total, terms = _terms(self.loss_function(sr, t_out, hr, s_feats, t_feats), "DistillationTrainer")
        self._generator_update(lr, hr, sr, total)
        return self._finish(lr, hr, sr, total, terms)
