"""SR engines: each trainer learns on tiny 2D/3D pairs; G/D step isolation; EMA; checkpoint, kill and resume; DDP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Events
from monai.data import DataLoader, Dataset, MetaTensor
from monai.handlers import from_engine

from medsr.networks.discriminators import VGGDiscriminator
from medsr.networks.generators import EDSR, RRDBNet, SRResNet
from medsr.pipeline.engines import (
    DistillationTrainer,
    GANTrainer,
    ModelEMA,
    SREvaluator,
    SRTrainer,
    find_checkpoint,
    resume,
)
from medsr.pipeline.handlers import CheckpointHandler
from medsr.pipeline.losses import DistillationLoss, FusionLoss

HERE = Path(__file__).parent
SCRIPT = HERE / "_train_script.py"
DIMS = [2, 3]


def _loader(dims, n=2, size=8, batch_size=2):
    """One fixed LR/HR pair batch (``n`` items), HR ``size`` per axis, x2."""
    hr = torch.rand(n, 1, *([size] * dims))
    lr = F.avg_pool2d(hr, 2) if dims == 2 else F.avg_pool3d(hr, 2)
    return DataLoader(Dataset([{"lr": lr[i], "hr": hr[i]} for i in range(n)]), batch_size=batch_size)


def _rrdb(dims):
    return RRDBNet(dims, 1, 1, 2, num_features=8, num_blocks=1, growth_channels=4, attention="se", reduction=4)


def _record(trainer):
    losses = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: losses.append(from_engine(["loss"], first=True)(e.state.output))
    )
    return losses


@pytest.mark.parametrize("dims", DIMS)
def test_sr_trainer_loss_falls_and_output_keys(dims):
    g = _rrdb(dims)
    trainer = SRTrainer("cpu", 5, _loader(dims), g, torch.optim.Adam(g.parameters(), 5e-3), FusionLoss(w_vgg=0, w_rg=0))
    losses = _record(trainer)
    trainer.run()
    assert losses[-1] < 0.85 * losses[0]
    out = trainer.state.output[0]  # decollated like every MONAI engine
    assert {"loss", "loss_l1", "loss_mse", "pred", "label", "image"} <= set(out)
    assert isinstance(out["loss_l1"], float) and out["pred"].shape == out["label"].shape
    assert out["loss"] == pytest.approx(out["loss_l1"] + out["loss_mse"], rel=1e-5)


@pytest.mark.parametrize("dims", DIMS)
def test_gan_trainer_loss_falls_and_steps_touch_only_their_network(dims):
    g, d = _rrdb(dims), VGGDiscriminator(dims, 1, num_features=4, num_stages=2)
    g_opt, d_opt = torch.optim.Adam(g.parameters(), 2e-3), torch.optim.Adam(d.parameters(), 1e-3)
    changes = []

    def watch(opt, name):
        step = opt.step

        def wrapped(*a, **k):
            before = [p.detach().clone() for p in (*g.parameters(), *d.parameters())]
            r = step(*a, **k)
            after = [p.detach() for p in (*g.parameters(), *d.parameters())]
            n_g = len(list(g.parameters()))
            moved = [not torch.equal(b, c) for b, c in zip(before, after)]
            changes.append((name, any(moved[:n_g]), any(moved[n_g:])))
            return r

        opt.step = wrapped

    watch(g_opt, "g")
    watch(d_opt, "d")
    trainer = GANTrainer(
        "cpu", 4, _loader(dims), g, d, g_opt, d_opt, FusionLoss(w_vgg=0), d_updates_per_g=2, d_init_iters=1
    )
    losses = _record(trainer)
    trainer.run()
    assert losses[-1] < losses[0]
    # iteration 1: D warm-up only (2 D steps); then per iteration 1 G step + 2 D steps
    assert [c[0] for c in changes[:5]] == ["d", "d", "g", "d", "d"]
    assert all(c == ("g", True, False) for c in changes if c[0] == "g")
    assert all(c == ("d", False, True) for c in changes if c[0] == "d")
    out = trainer.state.output[0]
    assert {"loss", "loss_l1", "loss_mse", "loss_rg", "loss_d"} <= set(out)


@pytest.mark.parametrize("dims", DIMS)
def test_distillation_trainer_learns_with_width_and_depth_compression(dims):
    teacher = EDSR(dims, 1, 1, 2, num_features=16, num_blocks=2)
    student = EDSR(dims, 1, 1, 2, num_features=4, num_blocks=1)
    t0 = [p.clone() for p in teacher.parameters()]
    loss = DistillationLoss(
        dims, student_channels=(4,), teacher_channels=(16, 16), w_gt=1.0, w_output=1.0, w_feature=0.1
    )
    opt = torch.optim.Adam(student.parameters(), 3e-3)
    trainer = DistillationTrainer("cpu", 5, _loader(dims), student, teacher, opt, loss)
    assert any(p is loss.adapters[0].weight for g in opt.param_groups for p in g["params"])
    losses = _record(trainer)
    trainer.run()
    assert losses[-1] < losses[0]
    assert all(torch.equal(a, b) for a, b in zip(t0, teacher.parameters()))
    assert {"loss_gt", "loss_output", "loss_feature"} <= set(trainer.state.output[0])


def test_ema_amp_warning_warm_start_and_errors(tmp_path):
    g = _rrdb(2)
    with pytest.warns(UserWarning, match="amp='bf16' is ignored"):
        trainer = SRTrainer(
            "cpu", 1, _loader(2), g, torch.optim.SGD(g.parameters(), 0.1), "l1", ema_decay=0.5, amp="bf16"
        )
    before = [p.clone() for p in g.parameters()]
    trainer.run()  # one iteration: ema = 0.5 * init + 0.5 * new
    for e, b, a in zip(trainer.ema.module.parameters(), before, g.parameters()):
        assert torch.allclose(e, 0.5 * b + 0.5 * a.detach(), atol=1e-6)
    # warm start the GAN generator from the supervised run's checkpoint (ESRGAN two-stage recipe)
    CheckpointHandler(tmp_path, every_n_epochs=None)(trainer)
    g2, d2 = _rrdb(2), VGGDiscriminator(2, 1, num_features=4, num_stages=2)
    GANTrainer(
        "cpu",
        1,
        _loader(2),
        g2,
        d2,
        torch.optim.Adam(g2.parameters()),
        torch.optim.Adam(d2.parameters()),
        FusionLoss(w_vgg=0),
        g_pretrained=find_checkpoint(tmp_path, prefix="checkpoint"),
    )
    assert all(torch.equal(a, b) for a, b in zip(g.parameters(), g2.parameters()))
    with pytest.raises(FileNotFoundError, match="g_pretrained=None"):
        GANTrainer(
            "cpu",
            1,
            _loader(2),
            g2,
            d2,
            torch.optim.Adam(g2.parameters()),
            torch.optim.Adam(d2.parameters()),
            FusionLoss(w_vgg=0),
            g_pretrained=tmp_path / "missing.pt",
        )
    bad = DataLoader(Dataset([{"image": torch.rand(1, 4, 4), "hr": torch.rand(1, 8, 8)}]), batch_size=1)
    with pytest.raises(KeyError, match="no key 'lr'"):
        SRTrainer("cpu", 1, bad, g, torch.optim.SGD(g.parameters(), 0.1)).run()


def test_model_ema_values_buffers_and_old_checkpoints():
    """ModelEMA (torch's AveragedModel + EMA): ema_t = decay * ema_(t-1) + (1 - decay) * w_t from the initial copy,
    batch-norm buffers copied; a state dict from medsr's hand-written EMA ("num_updates") loads."""
    torch.manual_seed(0)
    net = SRResNet(2, num_features=4, num_blocks=1, scale_factor=2)  # has batch-norm buffers
    ema = ModelEMA(net, 0.8)
    expected = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), 0.1)
    for _ in range(3):
        net.train()
        net(torch.rand(2, 1, 6, 6)).abs().mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(net)
        expected = [0.8 * e + 0.2 * p.detach() for e, p in zip(expected, net.parameters())]
    for e, x in zip(ema.module.parameters(), expected, strict=True):
        torch.testing.assert_close(e, x, rtol=1e-6, atol=1e-7)
    for b_ema, b in zip(ema.module.buffers(), net.buffers(), strict=True):
        assert torch.equal(b_ema, b)
    assert ema.num_updates == 3 and not ema.module.training
    old = {k: v for k, v in ema.state_dict().items() if k != "n_averaged"} | {"num_updates": torch.tensor(3)}
    again = ModelEMA(net, 0.8)
    again.load_state_dict(old)
    assert again.num_updates == 3 and all(torch.equal(a, b) for a, b in zip(again.parameters(), ema.parameters()))


def test_checkpoint_resume_in_process_matches_uninterrupted(tmp_path):
    def make(resume_from=None, handlers=None):
        torch.manual_seed(0)
        g = _rrdb(2)
        opt = torch.optim.Adam(g.parameters(), 1e-3)
        sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)
        loader = DataLoader(
            Dataset([{"lr": torch.rand(1, 4, 4), "hr": torch.rand(1, 8, 8)} for _ in range(6)]),
            batch_size=2,
            shuffle=True,
        )
        return SRTrainer(
            "cpu",
            2,
            loader,
            g,
            opt,
            "l1",
            scheduler=sched,
            ema_decay=0.9,
            data_seed=3,
            resume_from=resume_from,
            train_handlers=handlers,
        )

    torch.manual_seed(1)
    full = make(handlers=[CheckpointHandler(tmp_path, every_n_iterations=2, every_n_epochs=None, keep_last=None)])
    full_losses = _record(full)
    full.run()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"checkpoint_{i:08d}.pt" for i in (2, 4, 6)]  # atomic: no temporary files left
    resumed = make()
    assert resume(resumed, tmp_path / "checkpoint_00000004.pt") == 4 and resumed.state.epoch == 1
    losses = _record(resumed)
    resumed.run()
    assert losses == full_losses[4:]
    assert all(torch.equal(a, b) for a, b in zip(full.ema.module.parameters(), resumed.ema.module.parameters()))


@pytest.mark.parametrize("dims", DIMS)
def test_sr_evaluator_sliding_window_keeps_hr_metadata(dims):
    g = _rrdb(dims)
    affine = torch.diag(torch.tensor([0.5, 0.5, 0.5, 1.0]))
    hr = MetaTensor(torch.rand(1, *([8] * dims)), affine=affine)
    lr = MetaTensor(
        F.avg_pool2d(hr[None].as_tensor(), 2)[0] if dims == 2 else F.avg_pool3d(hr[None].as_tensor(), 2)[0],
        affine=2 * affine,
    )
    loader = DataLoader(Dataset([{"lr": lr, "hr": hr}]), batch_size=1)
    ema = ModelEMA(g, 0.9)
    ev = SREvaluator("cpu", loader, ema, roi_size=[2] * dims, sw_batch_size=2)
    ev.run()
    pred = ev.state.output[0]["pred"]
    assert isinstance(pred, MetaTensor) and tuple(pred.shape) == tuple(hr.shape)
    assert torch.allclose(pred.affine, hr.affine)
    whole = SREvaluator("cpu", loader, ema)  # whole image: exactly the EMA network's output
    whole.run()
    with torch.no_grad():
        expected = ema.module(lr[None].as_tensor())[0]
    assert torch.allclose(whole.state.output[0]["pred"].as_tensor(), expected, atol=1e-6)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    ref = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(full)], env=_env())
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(killed), "--pause-at", "5"], env=_env())
    deadline = time.time() + 120
    while not (killed / "paused").exists():
        assert proc.poll() is None and time.time() < deadline, "training subprocess ended before pausing"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # mid-epoch (4 iterations per epoch), after the checkpoint at iteration 4
    proc.wait()
    assert Path(find_checkpoint(killed / "ckpt", prefix="checkpoint")).name == "checkpoint_00000004.pt"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(killed), "--resume"], env=_env(), check=True, timeout=120)
    assert ref.wait(timeout=120) == 0
    full_lines = (full / "losses_rank0.txt").read_text().splitlines()
    lines = (killed / "losses_rank0.txt").read_text().splitlines()
    assert len(full_lines) == 8 and lines[:5] == full_lines[:5]
    resumed = lines[5:]
    assert resumed[0].split()[0] == "5"  # restarts at the iteration after the checkpoint
    assert resumed == full_lines[4:]  # identical losses (G and D), bit for bit


@pytest.mark.slow
def test_ddp_two_ranks_gloo_identical_weights(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        str(SCRIPT),
        "--out",
        str(tmp_path),
        "--epochs",
        "1",
    ]
    subprocess.run(cmd, env=_env(), check=True, timeout=240)
    w0, w1 = (torch.load(tmp_path / f"weights_rank{r}.pt") for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    torch.manual_seed(0)
    init = _rrdb(2).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in init)  # it trained
    # each rank saw its own shard (different batches), yet the logged losses are all-reduced
    assert (tmp_path / "losses_rank0.txt").read_text() == (tmp_path / "losses_rank1.txt").read_text()
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["checkpoint_00000002.pt"]  # rank 0 only


def test_finish_init_runs_once_at_the_end_of_the_concrete_constructor(tmp_path, monkeypatch):
    """``_finish_init`` (resume) is the last call of a concrete trainer's ``__init__``, once: a subclass's
    attributes set before ``super().__init__`` exist then, and a subclass without ``__init__`` changes nothing."""
    calls = []

    class Counting(SRTrainer):
        def __init__(self, *args, **kwargs):
            self.extra = "ready"
            super().__init__(*args, **kwargs)

        def _finish_init(self):
            calls.append((getattr(self, "extra", None), hasattr(self, "scalers")))
            super()._finish_init()

    class NoInit(Counting):
        pass

    g = _rrdb(2)
    Counting("cpu", 1, _loader(2), g, torch.optim.SGD(g.parameters(), 0.1), "l1")
    NoInit("cpu", 1, _loader(2), g, torch.optim.SGD(g.parameters(), 0.1), "l1")
    assert calls == [("ready", True), ("ready", True)]


def test_find_checkpoint_series_best_newest_and_hidden(tmp_path):
    """One search for every caller: the resume series by iteration, else best, else newest; temp files never."""
    for name, age in (("checkpoint_00000010.pt", 0), ("checkpoint_00000002.pt", 50), ("best_net.pt", 100)):
        torch.save({}, tmp_path / name)  # intact files (the search skips unreadable ones)
        os.utime(tmp_path / name, (1e9 + age, 1e9 + age))  # the series' highest iteration is the oldest file
    (tmp_path / ".checkpoint_00000099.pt.tmp.pt").write_bytes(b"half")  # an atomic write in progress
    assert Path(find_checkpoint(tmp_path, prefix="checkpoint")).name == "checkpoint_00000010.pt"
    assert Path(find_checkpoint(tmp_path)).name == "best_net.pt"
    (tmp_path / "sub").mkdir()
    torch.save({}, tmp_path / "sub" / "last.pt")
    assert Path(find_checkpoint(tmp_path, prefer_best=False)).name == "last.pt"
    with pytest.raises(FileNotFoundError, match="no .pt file"):
        find_checkpoint(tmp_path, newer_than=2e9)
    with pytest.raises(FileNotFoundError, match="no ckpt_<iteration>.pt file"):
        find_checkpoint(tmp_path, prefix="ckpt")
