"""medsr.pipeline.engines: SR trainers on MONAI ``SupervisedTrainer``, evaluator, EMA, checkpoint/resume, DDP glue."""

from medsr.pipeline.engines.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    load_generator_weights,
    resume,
    save_checkpoint,
)
from medsr.pipeline.engines.common import (
    SRPrepareBatch,
    enable_deterministic,
    get_rng_state,
    set_rng_state,
    unwrap_model,
)
from medsr.pipeline.engines.data import ResumableLoader
from medsr.pipeline.engines.distributed import (
    all_reduce_mean,
    cleanup_distributed,
    ddp_backend,
    ddp_device,
    distributed_loader,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    wrap_ddp,
)
from medsr.pipeline.engines.ema import ModelEMA
from medsr.pipeline.engines.evaluator import SREvaluator
from medsr.pipeline.engines.schedules import SCHEDULES, make_lr_scheduler, schedule_factor
from medsr.pipeline.engines.trainers import (
    DistillationTrainer,
    GANTrainer,
    SRTrainer,
    SRTrainerBase,
    forward_with_features,
    set_requires_grad,
)

__all__ = [
    "SCHEDULES",
    "make_lr_scheduler",
    "schedule_factor",
    "SRTrainer",
    "GANTrainer",
    "DistillationTrainer",
    "SRTrainerBase",
    "SREvaluator",
    "ModelEMA",
    "ResumableLoader",
    "save_checkpoint",
    "load_checkpoint",
    "find_checkpoint",
    "resume",
    "load_generator_weights",
    "SRPrepareBatch",
    "enable_deterministic",
    "get_rng_state",
    "set_rng_state",
    "unwrap_model",
    "forward_with_features",
    "set_requires_grad",
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "ddp_backend",
    "ddp_device",
    "distributed_loader",
    "wrap_ddp",
    "all_reduce_mean",
]
