"""The handlers of medsr.pipeline.handlers: CSV log, first sample, MLflow roles."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from medsr.pipeline.handlers import (
    MLflowEvaluatorHandler,
    MLflowTrainerHandler,
    MLflowValidatorHandler,
    TrainingStage,
    ValidationLog,
)
from medsr.pipeline.handlers.utils import first_sample


def test_validation_log_writes_csv_atomically(tmp_path):
    log = ValidationLog(tmp_path / "m" / "metrics.csv")
    for epoch, psnr in ((1, 20.0), (2, 21.5)):
        log(
            SimpleNamespace(
                state=SimpleNamespace(epoch=epoch, iteration=epoch * 3, metrics={"val_psnr": psnr, "x": "na"})
            )
        )
    lines = (tmp_path / "m" / "metrics.csv").read_text().splitlines()
    assert lines == ["epoch,iteration,val_psnr", "1,3,20.0", "2,6,21.5"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["metrics.csv"]


def test_validation_log_writes_stage_and_global_epoch(tmp_path):
    validator = SimpleNamespace(state=SimpleNamespace(epoch=2, iteration=4, metrics={"psnr": 30.0}))
    TrainingStage(validator, "gan", epoch_offset=5)()
    log = ValidationLog(tmp_path / "metrics.csv")
    log(validator)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == [
        "epoch,iteration,psnr,stage,global_epoch",
        "2,4,30.0,gan,7",
    ]


def test_first_sample_of_decollated_and_batched_outputs():
    pred = torch.rand(2, 1, 4, 4)
    assert first_sample([{"pred": pred[0]}, {"pred": pred[1]}])["pred"] is not None
    item = first_sample({"pred": pred, "loss": 0.5})
    assert torch.equal(item["pred"], pred[0]) and item["loss"] == 0.5
    assert first_sample(torch.zeros(1)) is None and first_sample([]) is None


@pytest.mark.parametrize(
    "cls,iteration_log,close",
    [(MLflowTrainerHandler, True, True), (MLflowValidatorHandler, False, False), (MLflowEvaluatorHandler, False, True)],
)
def test_mlflow_role_defaults(tmp_path, cls, iteration_log, close):
    handler = cls(output_dir=tmp_path, experiment_name="medsr/test")
    assert handler.iteration_log is iteration_log and handler.close_on_complete is close
    assert handler.epoch_logger == handler._log_epoch and handler.iteration_logger == handler._log_iteration


def test_ema_validation_scores_the_ema_weights_and_restores_the_raw_ones():
    """During a validation the network holds the EMA weights (what the metric and best_network.pt see);
    afterwards the trainer's raw weights are back, bit for bit."""
    from ignite.engine import Engine

    from medsr.pipeline.engines import ModelEMA
    from medsr.pipeline.handlers import EMAValidation

    net = torch.nn.Linear(1, 1, bias=False)
    ema = ModelEMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net)  # ema = 0.5 * w0 + 0.5 * 3
    expected = float(ema.module.weight)
    raw = net.weight.detach().clone()
    seen = []
    validator = Engine(lambda engine, batch: seen.append(float(net.weight)))
    EMAValidation(net, ema).attach(validator)
    validator.run([0, 1], max_epochs=1)
    assert seen == [expected, expected] and expected != 3.0
    assert torch.equal(net.weight, raw)
    plain = Engine(lambda engine, batch: seen.append(float(net.weight)))
    EMAValidation(net, None).attach(plain)  # no EMA: nothing changes
    plain.run([0], max_epochs=1)
    assert seen[-1] == 3.0


class _ListDirWhenSaved:
    """Pickled inside ``torch.save``: records the folder's files while the new file is being written."""

    def __init__(self, folder, seen):
        self.folder, self.seen = folder, seen

    def __reduce__(self):
        self.seen.append(sorted(p.name for p in self.folder.iterdir() if not p.name.startswith(".")))
        return (int, (0,))


def test_checkpoint_and_best_files_are_replaced_only_after_the_new_one_is_written(tmp_path):
    """A kill during a save leaves the previous checkpoint (keep_last=1) and the previous best model intact:
    the old file goes only once the new one is complete (ignite's Checkpoint removes it before writing)."""
    from ignite.engine import Engine

    from medsr.networks import get_network
    from medsr.pipeline.engines import SRTrainer
    from medsr.pipeline.handlers import BestModelSaver, CheckpointHandler

    seen: list[list[str]] = []

    class Probed(SRTrainer):
        def checkpoint_objects(self):
            probe = SimpleNamespace(state_dict=lambda: {"probe": _ListDirWhenSaved(tmp_path / "ckpt", seen)})
            return {**super().checkpoint_objects(), "probe": probe}

    g = get_network("espcn", spatial_dims=2, num_features=(4, 2), scale_factor=2)
    data = torch.utils.data.DataLoader([{"lr": torch.rand(1, 4, 4), "hr": torch.rand(1, 8, 8)}] * 2, batch_size=1)
    trainer = Probed("cpu", 1, data, g, torch.optim.SGD(g.parameters(), 0.1), "l1", data_seed=None)
    CheckpointHandler(tmp_path / "ckpt", every_n_iterations=1, every_n_epochs=None, keep_last=1).attach(trainer)
    trainer.run()
    assert seen == [[], ["checkpoint_00000001.pt"]]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint_00000002.pt"]

    seen.clear()

    best = get_network("espcn", spatial_dims=2, num_features=(4, 2), scale_factor=2)
    best.init_args["probe"] = _ListDirWhenSaved(tmp_path / "best", seen)  # recorded in the model file
    saver = BestModelSaver(best, tmp_path / "best", metric_name="psnr")
    validator = Engine(lambda engine, batch: None)
    saver.attach(validator)
    for value in (1.0, 2.0):
        validator.state.metrics = {"psnr": value}
        saver(validator)
    assert seen == [[], ["best_network.pt"]]
    assert torch.load(tmp_path / "best" / "best_network.pt", weights_only=False)["metric"]["value"] == 2.0
