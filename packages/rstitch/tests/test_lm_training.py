"""Training the benchmark's language models: batch encoding, learning, the saved folder, exact resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import rstitch.lm_training as lm_training
from rstitch.arithmetic import make_problems
from rstitch.lm_training import PRESETS, TrainLMConfig, build_model, encode_batch, train_lm


def read_log(out_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def tiny_config(out_dir: Path, **overrides: Any) -> TrainLMConfig:
    options: dict[str, Any] = {
        "preset": "slm",
        "steps": 6,
        "batch_size": 4,
        "warmup_steps": 2,
        "ckpt_every": 2,
        "log_every": 1,
        "out_dir": out_dir,
        "show_progress": False,
    }
    options.update(overrides)
    return TrainLMConfig(**options)


def final_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir)).state_dict()


# --- encode_batch -----------------------------------------------------------------------------------------


def test_encode_batch_masks_the_prompt_and_the_padding(tokenizer: Any) -> None:
    problems = make_problems(3, seed=7)
    prompts = [p.prompt() for p in problems]
    solutions = [p.solution for p in problems]
    batch = encode_batch(tokenizer, prompts, solutions)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape and ids.dtype == labels.dtype == torch.long
    lengths = []
    for i, (prompt, solution) in enumerate(zip(prompts, solutions, strict=True)):
        p = tokenizer(prompt, add_special_tokens=False).input_ids
        s = [*tokenizer(solution, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        n = len(p) + len(s)
        lengths.append(n)
        assert ids[i, :n].tolist() == p + s
        assert (ids[i, n:] == tokenizer.pad_token_id).all()
        assert mask[i].tolist() == [1] * n + [0] * (ids.shape[1] - n)
        # -100 exactly on the prompt and the padding; the targets are the solution ids and the EOS
        assert labels[i, : len(p)].eq(-100).all()
        assert labels[i, len(p) : n].tolist() == s
        assert labels[i, n:].eq(-100).all()
        assert (labels[i] != -100).sum() == len(s)
    assert ids.shape[1] == max(lengths)
    assert len(set(lengths)) > 1, "the test needs rows of different lengths to see the padding"


def test_encode_batch_rejects_mismatched_lists(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="zip"):
        encode_batch(tokenizer, ["a", "b"], ["c"])


# --- config and model -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"preset": "medium"}, "preset"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"log_every": 0}, "log_every"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"ckpt_every": -1}, "ckpt_every"),
    ],
)
def test_config_validation(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TrainLMConfig(**overrides)


def test_build_model_follows_the_preset_and_the_tokenizer(tokenizer: Any) -> None:
    model = build_model("slm", tokenizer)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.num_hidden_layers == PRESETS["slm"]["num_hidden_layers"]
    assert model.config.eos_token_id == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="preset"):
        build_model("huge", tokenizer)


# --- training ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """30 steps of the SLM preset (a few seconds on one thread)."""
    out_dir = tmp_path_factory.mktemp("train-slm")
    config = TrainLMConfig(
        preset="slm",
        steps=30,
        batch_size=8,
        warmup_steps=5,
        log_every=5,
        ckpt_every=0,
        out_dir=out_dir,
        show_progress=False,
    )
    model_dir = train_lm(config, tokenizer)
    assert model_dir == out_dir / "model"
    return out_dir


def test_training_reduces_the_loss(trained: Path) -> None:
    log = read_log(trained)
    assert [row["step"] for row in log] == [5, 10, 15, 20, 25, 30]
    losses = [row["loss"] for row in log]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses


def test_the_final_checkpoint_is_written_even_with_ckpt_every_0(trained: Path) -> None:
    from accel_shared.checkpoint import latest_checkpoint, load_checkpoint

    checkpoint = latest_checkpoint(trained)
    assert checkpoint is not None
    state = load_checkpoint(checkpoint)
    assert state["step"] == 30 and state["config"]["preset"] == "slm"


def test_the_model_folder_loads_with_transformers(trained: Path, tokenizer: Any) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(trained / "model"))
    assert model.config.num_hidden_layers == PRESETS["slm"]["num_hidden_layers"]
    assert model.config.vocab_size == len(tokenizer)
    ids = torch.tensor([tokenizer.encode("Question: Mia has 23 apples .")])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_the_model_folder_holds_the_training_tokenizer(trained: Path, tokenizer: Any) -> None:
    """The folder's tokenizer must be the one the model was trained with: same vocabulary (the size
    StitchedGenerator checks against the model's) and the same ids for the same text."""
    from rstitch.generator import check_same_tokenizer
    from rstitch.tokenizer import load_tokenizer

    loaded = load_tokenizer(trained / "model")
    text = "Question: Mia has 23 apples . Then she buys 17 more .\nAnswer: Mia starts with 23 apples . \\boxed{40} ."
    assert loaded.eos_token_id == tokenizer.eos_token_id and loaded.pad_token_id == tokenizer.pad_token_id
    assert loaded(text).input_ids == tokenizer(text).input_ids, (
        "load_tokenizer(model folder) tokenizes differently from build_tokenizer()"
    )
    assert len(loaded) == len(tokenizer), "load_tokenizer(model folder) has a different vocabulary size"
    check_same_tokenizer(loaded, tokenizer)


def test_a_train_lm_folder_works_with_load_pair_and_stitching(trained: Path) -> None:
    """What `rstitch generate/eval --slm runs/slm/model --llm runs/llm/model` does with train_lm's output."""
    from rstitch.generator import StitchedGenerator
    from rstitch.models import load_pair

    pair = load_pair(trained / "model", trained / "model")
    ids = pair.tokenizer("Question: Mia has 23 apples .\nAnswer:", return_tensors="pt").input_ids
    out = StitchedGenerator(pair.slm, pair.llm, pair.tokenizer, tau=0.5).generate(ids, max_new_tokens=4)
    assert 1 <= len(out.sources) <= 4


# --- resume -----------------------------------------------------------------------------------------------


class Interrupt:
    """Wraps ``encode_batch`` (called once at the start of every step) and raises KeyboardInterrupt on
    call ``at``: the run stops inside step ``at`` after steps 1..at-1 have finished."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return encode_batch(*args, **kwargs)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    out_dir = tmp_path_factory.mktemp("straight")
    train_lm(tiny_config(out_dir), tokenizer)
    return out_dir


def test_resume_reproduces_an_uninterrupted_run(
    straight_run: Path, tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from accel_shared.checkpoint import latest_checkpoint, load_checkpoint

    out_dir = tmp_path / "interrupted"
    with monkeypatch.context() as patch:
        # stops in step 6: steps 1-5 done, the newest checkpoint is step 4, so step 5 is redone
        patch.setattr(lm_training, "encode_batch", Interrupt(at=6))
        with pytest.raises(KeyboardInterrupt):
            train_lm(tiny_config(out_dir), tokenizer)
    checkpoint = latest_checkpoint(out_dir)
    assert checkpoint is not None and load_checkpoint(checkpoint)["step"] == 4
    assert not (out_dir / "model").exists()

    train_lm(tiny_config(out_dir), tokenizer)
    expected, resumed = final_weights(straight_run / "model"), final_weights(out_dir / "model")
    assert expected.keys() == resumed.keys()
    different = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different}"


@pytest.mark.parametrize("log_every", [1, 3])
def test_resume_keeps_the_training_log_consistent(tmp_path: Path, tokenizer: Any, log_every: int) -> None:
    """After an interruption and a resume the log must read like the uninterrupted run's: one entry per
    logged step, in order, with the same losses (steps redone after the last checkpoint are not logged
    twice, and with log_every = 3 the loss logged at step 6 still averages steps 4-6 although the run
    resumed from the checkpoint of step 4)."""
    straight_dir, out_dir = tmp_path / "straight", tmp_path / "interrupted"
    train_lm(tiny_config(straight_dir, log_every=log_every), tokenizer)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lm_training, "encode_batch", Interrupt(at=6))
        with pytest.raises(KeyboardInterrupt):
            train_lm(tiny_config(out_dir, log_every=log_every), tokenizer)
    train_lm(tiny_config(out_dir, log_every=log_every), tokenizer)
    expected = [(row["step"], row["loss"]) for row in read_log(straight_dir)]
    resumed = [(row["step"], row["loss"]) for row in read_log(out_dir)]
    assert [step for step, _ in expected] == list(range(log_every, 7, log_every))
    assert resumed == expected, "the resumed run's train_log.jsonl differs from the uninterrupted run's"


def test_resume_false_starts_over(straight_run: Path, tmp_path: Path, tokenizer: Any) -> None:
    out_dir = tmp_path / "again"
    train_lm(tiny_config(out_dir, steps=2), tokenizer)
    # a longer run over the same folder without resume: the same weights as a fresh 6-step run
    train_lm(tiny_config(out_dir), tokenizer, resume=False)
    expected, restarted = final_weights(straight_run / "model"), final_weights(out_dir / "model")
    assert all(torch.equal(expected[name], restarted[name]) for name in expected)


def test_resuming_with_another_preset_is_refused(tmp_path: Path, tokenizer: Any) -> None:
    train_lm(tiny_config(tmp_path, steps=2), tokenizer)
    with pytest.raises(ValueError, match="'slm'") as error:
        train_lm(tiny_config(tmp_path, preset="llm", steps=4), tokenizer)
    assert "'llm'" in str(error.value) and "resume=False" in str(error.value)
