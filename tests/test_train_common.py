"""The shared training substrate: run directory, safe checkpoints, resume, weight export."""

import copy
import math
from dataclasses import dataclass, field

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from facefactors.config import from_dict, load_saved_config, parse_overrides
from facefactors.train.common import (
    TrainerConfig,
    adam,
    build_trainer,
    check_schedule,
    fit,
    late_decay_factor,
    late_decay_scheduler,
    prepare_run,
)
from facefactors.utils.errors import UserError
from facefactors.utils.io import load_module


@dataclass
class ToyConfig:
    width: int = 4
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=6, checkpoint_every_n_steps=3, progress=False, log_every_n_steps=1))


class ToyRecipe(L.LightningModule):
    def __init__(self, width: int):
        super().__init__()
        self.model = torch.nn.Linear(width, 1)
        self.seen_steps: list[int] = []

    def training_step(self, batch, batch_idx):
        self.seen_steps.append(self.global_step)
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=1e-2)


def loader(width):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, width, generator=g)
    y = x.sum(1, keepdim=True)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def test_train_then_resume_continues_from_last_checkpoint(tmp_path):
    cfg = ToyConfig()
    run, resuming = prepare_run(tmp_path / "run", cfg)
    assert not resuming
    recipe = ToyRecipe(cfg.width)
    fit(build_trainer(cfg.trainer, run), recipe, run, train_dataloaders=loader(cfg.width))
    assert run.last_checkpoint.is_file() and run.weights.is_file() and run.config.is_file()
    assert recipe.seen_steps == list(range(6))

    # Same directory, a larger step budget: resumes at step 6, weights carried over.
    cfg2 = ToyConfig()
    cfg2.trainer.max_steps = 9
    run2, resuming = prepare_run(tmp_path / "run", cfg2)
    assert resuming
    recipe2 = ToyRecipe(cfg2.width)
    fit(build_trainer(cfg2.trainer, run2), recipe2, run2, train_dataloaders=loader(cfg2.width))
    assert recipe2.seen_steps == [6, 7, 8]

    exported = ToyRecipe(cfg.width).model
    load_module(run2.weights, exported)
    assert torch.equal(exported.weight, recipe2.model.weight.detach())
    assert load_saved_config(ToyConfig, run2.config).trainer.max_steps == 9


class InterruptedRecipe(ToyRecipe):
    """Ctrl-C arrives during step ``stop_at``, after steps 0..stop_at-1 have finished."""

    stop_at = 4

    def training_step(self, batch, batch_idx):
        if self.global_step == self.stop_at:
            raise KeyboardInterrupt
        return super().training_step(batch, batch_idx)


def test_interrupted_run_keeps_every_finished_step_and_resumes_there(tmp_path, caplog):
    cfg = ToyConfig()  # periodic checkpoint at step 3; interrupted during step 4
    run, _ = prepare_run(tmp_path / "run", cfg)
    recipe = InterruptedRecipe(cfg.width)
    with caplog.at_level("INFO"), pytest.raises((KeyboardInterrupt, SystemExit)):
        fit(build_trainer(cfg.trainer, run), recipe, run, train_dataloaders=loader(cfg.width))
    state = torch.load(run.last_checkpoint, weights_only=True)
    assert state["global_step"] == 4 and state["optimizer_states"]  # the whole state, not only weights
    assert "weights_only` was not set" not in caplog.text  # saving says what it saves
    weights = recipe.model.weight.detach().clone()

    resumed = ToyRecipe(cfg.width)
    fit(build_trainer(cfg.trainer, run), resumed, run, train_dataloaders=loader(cfg.width))
    assert resumed.seen_steps == [4, 5]
    assert not torch.equal(resumed.model.weight.detach(), weights)  # it trained on from step 4's weights


def test_resume_with_different_config_is_refused(tmp_path):
    cfg = ToyConfig()
    run, _ = prepare_run(tmp_path / "run", cfg)
    fit(build_trainer(cfg.trainer, run), ToyRecipe(cfg.width), run, train_dataloaders=loader(cfg.width))
    with pytest.raises(UserError, match="different config"):
        prepare_run(tmp_path / "run", ToyConfig(width=5))


def test_a_saved_option_whose_type_widened_to_a_list_still_matches(tmp_path):
    # a run saved when data.twins was one name ("pose") resumes under the list type (["pose"]);
    # a field the run did not know takes its default; a real change is still one
    from facefactors.train.common import RunDir, config_differences
    from facefactors.train.ufe import UFETrainConfig

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.config.write_text("data: {twins: pose}\nloss: {twin: 30.0}\n")
    cfg = from_dict(UFETrainConfig, parse_overrides(["data.twins=pose", "loss.twin=30"]))
    assert cfg.data.twins == ["pose"] and config_differences(run, cfg) == []
    cfg.loss.twin = 10.0
    assert config_differences(run, cfg) == ["loss.twin: 30.0 -> 10.0"]


def test_wrong_weights_give_one_line_error(tmp_path):
    cfg = ToyConfig()
    run, _ = prepare_run(tmp_path / "run", cfg)
    fit(build_trainer(cfg.trainer, run), ToyRecipe(cfg.width), run, train_dataloaders=loader(cfg.width))
    with pytest.raises(UserError, match="do not fit"):
        load_module(run.weights, torch.nn.Linear(5, 1))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_module(garbage, torch.nn.Linear(4, 1))


def test_overwrite_starts_afresh(tmp_path):
    cfg = ToyConfig()
    run, _ = prepare_run(tmp_path / "run", cfg)
    fit(build_trainer(cfg.trainer, run), ToyRecipe(cfg.width), run, train_dataloaders=loader(cfg.width))
    run2, resuming = prepare_run(tmp_path / "run", ToyConfig(width=5), overwrite=True)
    assert not resuming and not run2.has_checkpoint()
    recipe = ToyRecipe(5)
    fit(build_trainer(cfg.trainer, run2), recipe, run2, train_dataloaders=loader(5))
    assert recipe.seen_steps == list(range(6))


def test_foreign_folder_is_not_clobbered(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a facefactors run"):
        prepare_run(tmp_path, ToyConfig())


def test_config_overrides_are_typed():
    cfg = from_dict(ToyConfig, parse_overrides(["width=7", "trainer.max_steps=12", "trainer.progress=false"]))
    assert cfg.width == 7 and cfg.trainer.max_steps == 12 and cfg.trainer.progress is False
    with pytest.raises(UserError, match="unknown field"):
        from_dict(ToyConfig, parse_overrides(["widht=7"]))
    with pytest.raises(UserError, match="not a valid int"):
        from_dict(ToyConfig, parse_overrides(["width=abc"]))


def test_apply_threads_sets_positive_counts_and_keeps_zero():
    import torch

    from facefactors.utils.device import apply_threads

    before = torch.get_num_threads()
    try:
        apply_threads(2)
        assert torch.get_num_threads() == 2
        apply_threads(0)  # 0 = keep torch's choice (here: the 2 just set)
        assert torch.get_num_threads() == 2
        apply_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_is_logger_step_matches_lightning_every_nth_step():
    from facefactors.train.common import is_logger_step

    # Lightning writes the logger on step indices 19, 39, ... for log_every_n_steps=20.
    assert [s for s in range(60) if is_logger_step(s, 20)] == [19, 39, 59]
    assert all(is_logger_step(s, 1) for s in range(5))
    assert all(is_logger_step(s, 0) for s in range(5))  # 0 treated as "every step", never a ZeroDivisionError


def test_adam_is_fused_on_cpu_and_takes_the_reference_steps():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    ref = [p.detach().clone().requires_grad_(True) for p in net.parameters()]
    start = net[0].weight.detach().clone()
    opt = adam(net.parameters(), 1e-2, (0.8, 0.99))
    assert opt.param_groups[0]["fused"] is True
    ref_opt = torch.optim.Adam(ref, lr=1e-2, betas=(0.8, 0.99), foreach=False)
    x = torch.randn(16, 5)
    for _ in range(5):
        for o, params in ((opt, list(net.parameters())), (ref_opt, ref)):
            h = torch.tanh(x @ params[0].T + params[1]) @ params[2].T + params[3]
            o.zero_grad()
            (h**2).mean().backward()
            o.step()
    for p, r in zip(net.parameters(), ref):
        torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
    assert (net[0].weight - start).abs().min() > 1e-3  # every weight moved


def test_adam_falls_back_where_fused_is_impossible():
    params = [torch.zeros(3, dtype=torch.float64, requires_grad=True), torch.zeros(3, requires_grad=True)]
    assert adam(params, 1e-3).param_groups[0]["fused"] is True  # float64 is fine on CPU
    opt = adam([torch.zeros(3, dtype=torch.complex64, requires_grad=True)], 1e-3)
    assert not opt.param_groups[0]["fused"]
    opt = adam([torch.zeros(3, device="meta", requires_grad=True)], 1e-3)  # a device without the kernel
    assert not opt.param_groups[0]["fused"]


@dataclass
class ConvToyConfig:
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(max_steps=8, checkpoint_every_n_steps=4, progress=False, log_every_n_steps=1, seed=0))


class ConvToyRecipe(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1))
        self.layouts: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.layouts.append(self.model[0].weight.is_contiguous(memory_format=torch.channels_last))
        x, y = batch
        return torch.nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return adam(self.model.parameters(), 1e-2)


def conv_loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 6, 6, generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.mean(1, keepdim=True) ** 2), batch_size=8)


def train_conv_toy(out, channels_last: bool, max_steps: int = 8) -> ConvToyRecipe:
    cfg = ConvToyConfig()
    cfg.trainer.channels_last, cfg.trainer.max_steps = channels_last, max_steps
    run, _ = prepare_run(out, cfg)
    recipe = ConvToyRecipe()
    fit(build_trainer(cfg.trainer, run), recipe, run, train_dataloaders=conv_loader())
    return recipe


def test_channels_last_trains_the_same_weights(tmp_path):
    nchw = train_conv_toy(tmp_path / "nchw", channels_last=False)
    nhwc = train_conv_toy(tmp_path / "nhwc", channels_last=True)
    assert nhwc.layouts == [True] * 8 and nchw.layouts == [False] * 8
    for a, b in zip(nchw.model.parameters(), nhwc.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    exported = ConvToyRecipe().model
    load_module(tmp_path / "nhwc" / "weights.safetensors", exported)  # saved contiguous, loads into NCHW
    torch.testing.assert_close(exported[0].weight, nhwc.model[0].weight.detach().contiguous())


def test_resume_in_channels_last_keeps_each_weights_adam_state(tmp_path):
    # Checkpoints at epoch ends (4 batches an epoch), where a resume replays no batch.
    straight = train_conv_toy(tmp_path / "straight", channels_last=False, max_steps=8)
    train_conv_toy(tmp_path / "resumed", channels_last=False, max_steps=4)  # an NCHW run's checkpoint ...
    resumed = train_conv_toy(tmp_path / "resumed", channels_last=True, max_steps=8)  # ... resumed in NHWC
    assert resumed.layouts == [True] * 4
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_adam_loads_moments_into_the_weights_layout():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    ref = torch.optim.Adam([w], lr=0.1)
    w.grad = torch.randn_like(w)
    ref.step()
    nhwc = w.detach().clone().to(memory_format=torch.channels_last).requires_grad_(True)
    opt = adam([nhwc], 0.1)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))  # as from a file: no tensor shared with ref
    assert opt.state[nhwc]["exp_avg"].stride() == nhwc.stride()
    g = torch.randn_like(w)
    w.grad, nhwc.grad = g, g.contiguous(memory_format=torch.channels_last)
    ref.step()
    opt.step()
    torch.testing.assert_close(nhwc, w, rtol=1e-5, atol=1e-6)


def test_progress_bar_does_not_count_to_a_last_epoch(tmp_path):
    cfg = ToyConfig()
    cfg.trainer.progress = True
    run, _ = prepare_run(tmp_path / "run", cfg)
    trainer = build_trainer(cfg.trainer, run)
    bar = trainer.progress_bar_callback
    bar.setup(trainer, ToyRecipe(cfg.width), "fit")  # what Lightning does when fit starts
    assert bar._get_train_description(19).strip() == "Epoch 19"  # not Lightning's "Epoch 19/-2"


class EndlessStream(torch.utils.data.IterableDataset):
    """An endless stream of batches, as the UFE's samplers yield."""

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            x = torch.randn(8, 4, generator=g)
            yield x, x.sum(1, keepdim=True)


class BarReading(Callback):
    """What the progress bar shows after each batch: (count, total)."""

    def __init__(self):
        self.shown: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.shown.append((batch_idx + 1, trainer.progress_bar_callback.total_train_batches))


def test_progress_bar_of_a_resumed_endless_run_counts_to_the_budget(tmp_path):
    def train(max_steps):
        cfg = ToyConfig()
        cfg.trainer.progress, cfg.trainer.max_steps = True, max_steps
        run, _ = prepare_run(tmp_path / "run", cfg)
        reading = BarReading()
        stream = torch.utils.data.DataLoader(EndlessStream(), batch_size=None)
        fit(build_trainer(cfg.trainer, run, callbacks=[reading]), ToyRecipe(cfg.width), run, train_dataloaders=stream)
        return reading.shown

    assert train(6)[-1] == (6, 6)
    resumed = train(9)
    # Lightning alone sized the bar by the steps left at the resume (3) while counting 7, 8, 9.
    assert resumed[0] == (7, 9) and resumed[-1] == (9, 9)


def test_config_of_another_kind_of_run_names_the_file(tmp_path):
    # e.g. a rater's run directory handed to a UFE command: its config has fields ToyConfig lacks.
    path = tmp_path / "config.yaml"
    path.write_text("width: 4\nschedule: cosine\n")
    with pytest.raises(UserError, match=r"config.yaml: not a ToyConfig \(.*unknown field\(s\) \['schedule'\].*right kind") as err:
        load_saved_config(ToyConfig, path)
    assert "\n" not in str(err.value)


def test_late_decay_holds_the_rate_then_follows_half_a_cosine_to_the_final_scale():
    assert [late_decay_factor(s, 100) for s in (0, 50, 99, 100)] == [1.0] * 4  # constant
    f = [late_decay_factor(s, 100, "cosine", 0.6, 0.1) for s in range(101)]
    assert f[:61] == [1.0] * 61  # flat up to decay_start * max_steps
    assert math.isclose(f[80], 0.1 + 0.9 * 0.5)  # halfway through the decay: halfway down
    assert math.isclose(f[70], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert math.isclose(f[100], 0.1) and late_decay_factor(150, 100, "cosine", 0.6, 0.1) == f[100]  # past the end: stays
    assert all(a >= b for a, b in zip(f, f[1:]))
    assert late_decay_factor(0, 100, "cosine", 0.0, 0.0) == 1.0 and math.isclose(late_decay_factor(100, 100, "cosine", 0.0, 0.0), 0.0, abs_tol=1e-12)


@pytest.mark.parametrize("args", [("cosin", 0.5, 0.01), ("cosine", 1.0, 0.01), ("cosine", -0.1, 0.01), ("cosine", 0.5, 1.5)])
def test_bad_schedules_are_refused_in_one_line(args):
    with pytest.raises(UserError, match="optim"):
        check_schedule(*args)
    if args[0] == "cosin":
        with pytest.raises(UserError, match="cosin"):
            late_decay_factor(60, 100, *args)


class DecayingRecipe(ToyRecipe):
    def __init__(self, width: int, max_steps: int):
        super().__init__(width)
        self.max_steps = max_steps
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        return {"optimizer": opt, "lr_scheduler": late_decay_scheduler(opt, self.max_steps, "cosine", 0.25, 0.0)}


def test_late_decay_scheduler_steps_every_training_step_and_resumes_where_it_was(tmp_path):
    cfg = ToyConfig()  # 6 steps, a checkpoint at step 3
    run, _ = prepare_run(tmp_path / "run", cfg)
    whole = DecayingRecipe(cfg.width, 8)
    fit(build_trainer(cfg.trainer, run), whole, run, train_dataloaders=loader(cfg.width))
    expected = [1e-2 * late_decay_factor(s, 8, "cosine", 0.25, 0.0) for s in range(9)]
    assert whole.lrs == pytest.approx(expected[:6])

    cfg.trainer.max_steps = 8  # resumed from step 6: the schedule goes on from there, not from its start
    run, _ = prepare_run(tmp_path / "run", cfg)
    resumed = DecayingRecipe(cfg.width, 8)
    fit(build_trainer(cfg.trainer, run), resumed, run, train_dataloaders=loader(cfg.width))
    assert resumed.seen_steps == [6, 7] and resumed.lrs == pytest.approx(expected[6:8])
    state = torch.load(run.last_checkpoint, weights_only=True)  # the scheduler's state loads safely
    assert state["lr_schedulers"][0]["last_epoch"] == 8
