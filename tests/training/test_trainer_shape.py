"""The trainer stays readable: the loop and the step each fit on one screen, the method's loss call
is in the step itself, and the trainer names no method's or dataset's logged keys."""

import ast
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[2] / "src" / "iccld" / "training"


def _trainer() -> ast.ClassDef:
    tree = ast.parse((TRAINING / "trainer.py").read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")


def test_the_loop_and_the_step_fit_on_one_screen_and_the_trainer_is_small():
    trainer = _trainer()
    methods = {n.name: n for n in trainer.body if isinstance(n, ast.FunctionDef)}
    sizes = {name: methods[name].end_lineno - methods[name].lineno + 1 for name in ("fit", "train_step")}
    assert all(size <= 60 for size in sizes.values()), sizes
    assert trainer.end_lineno - trainer.lineno + 1 <= 200


def test_the_step_calls_the_methods_losses_itself():
    step = next(n for n in _trainer().body if isinstance(n, ast.FunctionDef) and n.name == "train_step")
    called = {ast.unparse(node) for node in ast.walk(step) if isinstance(node, ast.Attribute)}
    assert {"self.method.training_losses", "self.method.critic_losses", "self.method.after_step"} <= called


def test_the_training_package_names_no_logged_key_of_a_method_or_dataset():
    names = {"pl_weight", "critic_acc", "adv_weight", "miou16", "miou13", "latent_change_source"}
    for path in TRAINING.glob("*.py"):
        strings = {n.value for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not names & strings, path.name
