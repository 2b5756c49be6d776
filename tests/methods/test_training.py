"""The training loop on transformers.Trainer: IA2 aligns activations on held-out queries, early
stopping restores the best state, runs repeat exactly, bad losses stop, interrupted runs resume."""

import pytest
import torch
from methods_helpers import examples, reference_teacher, teacher_data, tiny_spec
from transformers import TrainerCallback, set_seed

from ia2.errors import IA2Error
from ia2.methods import losses
from ia2.methods.adapters import AdapterConfig, attach
from ia2.methods.data import Collator, ItemDataset, build_items
from ia2.methods.trainer import BoundObjective, Objective, TrainConfig, train_stage
from ia2.testing import tiny_model, tiny_tokenizer

TOK, SPEC = tiny_tokenizer(), tiny_spec()
QUIET = dict(progress=False)


def _state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _fresh(seed=0, kind="lora"):
    set_seed(seed)
    return attach(tiny_model("llama"), AdapterConfig(kind=kind))


class Snapshots(TrainerCallback):
    """The adapter's weights at every evaluation."""

    def __init__(self):
        self.at = {}

    def on_evaluate(self, args, state, control, model=None, **kw):
        self.at[state.global_step] = _state(model)


@pytest.fixture(scope="module")
def ia2_data():
    teacher = tiny_model("llama")
    train, sig_train, dev, sig_dev = teacher_data(teacher, TOK, SPEC, n_train=8, n_dev=4, steps=2)
    held = examples(8, start=300)
    pool = examples(3, start=200)  # the same demonstrations teacher_data used
    sig_held = [reference_teacher(teacher, TOK, SPEC, ex, pool, 2) for ex in held]
    mk = lambda ex, sig: ItemDataset(build_items(TOK, SPEC, ex, sig, "icl", activations=True))  # noqa: E731
    return mk(train, sig_train), mk(dev, sig_dev), mk(held, sig_held)


def _held_out_scores(model, dataset):
    batch = Collator(0)(dataset.items)
    bound = BoundObjective(model, Objective("ia2"))
    model.eval()
    with torch.no_grad():
        loss = bound(model, batch).item()
        from ia2.teacher.capture import Capture

        with Capture(bound.sites, positions=batch["positions"]) as cap:
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        cos = losses.mean_cosine(torch.stack(cap.outputs), batch["teacher_activations"].transpose(0, 1),
                                 batch["target_mask"]).item()
    return loss, cos


def test_ia2_moves_student_activations_toward_the_teachers_on_held_out_queries(ia2_data, tmp_path):
    train, dev, held = ia2_data
    model = _fresh()
    loss0, cos0 = _held_out_scores(model, held)
    result = train_stage(model, Objective("ia2"), train, dev, Collator(0),
                         TrainConfig(lr=1e-2, epochs=10, **QUIET), tmp_path)
    loss1, cos1 = _held_out_scores(model, held)
    assert result.dev_curve[0][1] > result.best_dev_loss
    assert loss1 < 0.7 * loss0, (loss0, loss1)
    assert cos1 > cos0, (cos0, cos1)


# On this data dev loss turns upward after its second evaluation at lr 0.3; at 0.1 (transformers
# 5.25) it still fell at the fifth, so "the last state is not the best" did not hold.
CONFLICT_LR = 0.3


def _conflicting_sft_data():
    """Train says ' ok' (label 1) to every query, dev says ' no': the dev loss must turn upward."""
    train = [ex for ex in examples(16) if ex.label == 1]
    dev = [ex for ex in examples(8, start=100) if ex.label == 0]
    mk = lambda ex: ItemDataset(build_items(TOK, SPEC, ex, None, "ground_truth"))  # noqa: E731
    return mk(train), mk(dev)


@pytest.mark.parametrize("limit", ["patience", "epochs"])
def test_best_state_is_restored(limit, tmp_path):
    train, dev = _conflicting_sft_data()
    model = _fresh()
    snaps = Snapshots()
    cfg = (TrainConfig(lr=CONFLICT_LR, epochs=50, patience=2, **QUIET) if limit == "patience"
           else TrainConfig(lr=CONFLICT_LR, epochs=5, patience=100, **QUIET))
    r = train_stage(model, Objective("sft"), train, dev, Collator(0), cfg, tmp_path, callbacks=[snaps])
    steps = [s for s, _ in r.dev_curve]
    best = min(r.dev_curve, key=lambda sv: sv[1])[0]
    assert r.best_step == best and best != steps[-1]  # the last state is not the best one
    if limit == "patience":
        assert r.stopped_early and steps[-1] == best + 2 * cfg.eval_steps
    else:
        assert not r.stopped_early and r.steps == 5 * len(train) // 4
    final = _state(model)
    assert all(torch.equal(final[n], snaps.at[best][n]) for n in final)
    assert not all(torch.equal(final[n], snaps.at[steps[-1]][n]) for n in final)


def _run(tmp_path, seed, data_seed=None, kind="lora"):
    train, dev = _conflicting_sft_data()
    model = _fresh(seed, kind)
    train_stage(model, Objective("sft"), train, dev, Collator(0),
                TrainConfig(lr=1e-2, epochs=2, seed=seed, data_seed=data_seed, **QUIET), tmp_path)
    return _state(model)


def test_same_seeds_give_identical_adapters_and_data_order_matters(tmp_path):
    a = _run(tmp_path / "a", 0)
    b = _run(tmp_path / "b", 0)
    assert all(torch.equal(a[n], b[n]) for n in a)
    c = _run(tmp_path / "c", 0, data_seed=1)  # same init, another batch order
    assert not all(torch.allclose(a[n], c[n]) for n in a)


def test_non_finite_loss_stops_with_a_clear_error(ia2_data, tmp_path):
    train, dev, _ = ia2_data
    items = [type(it)(**vars(it)) for it in train.items]
    items[0].activations = items[0].activations.clone()
    items[0].activations[0, 0, 0] = float("nan")
    with pytest.raises(IA2Error, match="loss became nan"):
        train_stage(_fresh(), Objective("ia2"), ItemDataset(items), dev, Collator(0),
                    TrainConfig(lr=1e-2, epochs=1, **QUIET), tmp_path)


class Interrupt(Exception):
    pass


class StopAfterSave(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise Interrupt


@pytest.mark.parametrize("kind,cut_mid_save", [("lora", False), ("prompt", False), ("lora", True)])
def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, kind, cut_mid_save):
    from ia2.methods.trainer import last_checkpoint

    train, dev = _conflicting_sft_data()
    cfg = TrainConfig(lr=1e-2, epochs=3, patience=100, **QUIET)
    whole = _fresh(kind=kind)
    r_whole = train_stage(whole, Objective("sft"), train, dev, Collator(0), cfg, tmp_path / "whole")
    with pytest.raises(Interrupt):
        train_stage(_fresh(kind=kind), Objective("sft"), train, dev, Collator(0), cfg, tmp_path / "cut",
                    callbacks=[StopAfterSave(4)])
    newest = tmp_path / "cut" / "checkpoint-4"
    assert last_checkpoint(tmp_path / "cut") == str(newest)
    if cut_mid_save:  # killed while writing checkpoint-4's state, the last file the Trainer writes
        state = newest / "trainer_state.json"
        state.write_text(state.read_text()[:100])
        assert last_checkpoint(tmp_path / "cut") == str(tmp_path / "cut" / "checkpoint-2")
        (newest / "trainer_state.json").unlink()
        assert last_checkpoint(tmp_path / "cut") == str(tmp_path / "cut" / "checkpoint-2")
    resumed = _fresh(seed=123, kind=kind)  # a new process: different init, weights come from the checkpoint
    r_resumed = train_stage(resumed, Objective("sft"), train, dev, Collator(0), cfg, tmp_path / "cut")
    a, b = _state(whole), _state(resumed)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    assert [s for s, _ in r_resumed.dev_curve] == [s for s, _ in r_whole.dev_curve]
    assert [v for _, v in r_resumed.dev_curve] == pytest.approx([v for _, v in r_whole.dev_curve])
    assert r_resumed.best_step == r_whole.best_step


class GradNorms(TrainerCallback):
    """The adapter's gradient norm as the optimizer is about to step (after any clipping)."""

    def __init__(self):
        self.norms = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def test_gradients_are_not_clipped_unless_asked(ia2_data, tmp_path):
    """The paper's code never clips; IA2's loss is summed over layers, so clipping could bind."""
    from ia2.methods.trainer import training_arguments

    assert training_arguments(TrainConfig(), tmp_path / "args").max_grad_norm == 0  # off
    train, dev, _ = ia2_data

    def norms(clip):
        seen = GradNorms()
        cfg = TrainConfig(lr=1e-3, epochs=1, max_grad_norm=clip, **QUIET)
        train_stage(_fresh(), Objective("ia2"), train, dev, Collator(0), cfg, tmp_path / str(clip),
                    callbacks=[seen])
        return seen.norms

    free = norms(None)
    clip = min(free) / 2
    clipped = norms(clip)
    assert len(clipped) == len(free) and max(clipped) <= clip * 1.0001 < min(free)


def test_restore_best_off_keeps_the_last_state(tmp_path):
    """The authors' code ends with the last weights; `restore_best=False` reproduces that."""
    train, dev = _conflicting_sft_data()
    model, snaps = _fresh(), Snapshots()
    cfg = TrainConfig(lr=CONFLICT_LR, epochs=5, patience=100, restore_best=False, **QUIET)
    r = train_stage(model, Objective("sft"), train, dev, Collator(0), cfg, tmp_path, callbacks=[snaps])
    last = r.dev_curve[-1][0]
    assert r.best_step != last  # the best state was earlier, and is not what the model holds
    final = _state(model)
    assert all(torch.equal(final[n], snaps.at[last][n]) for n in final)
