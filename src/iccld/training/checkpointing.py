"""The trainer's state in and out of the run folder: the checkpoint (exact resume), the saved config
and the finished run's model and results. The formats are :mod:`iccld.io.run_folder`'s; this module
knows which parts of a trainer go into them."""

from __future__ import annotations

from ..config import save_config, to_dict
from ..errors import TrainingError
from ..io.checkpoint import TrainingState, rng_state, set_rng_state
from ..io.run_folder import FINAL_FILES, Provenance, RunFolder
from ..outputs import record_outputs

COMMAND = "train"  # what the run folder's marker says wrote its files


class Checkpointing:
    """Saves and restores a :class:`~iccld.training.trainer.Trainer` (its networks, optimisers,
    scheduler, scaler, RNG, iteration, data position and evaluation history) in its run folder.
    Only process 0 writes; every process waits for the write."""

    def __init__(self, trainer, run: RunFolder):
        self.trainer, self.run = trainer, run
        self.saved_iteration: int | None = None  # of the last checkpoint on disk

    def provenance(self) -> Provenance:
        t = self.trainer
        return Provenance.of_run(t.method.name, t.method.inference_path, t.iteration, to_dict(t.config))

    def state(self) -> TrainingState:
        t = self.trainer
        critic, scheduler = t.disc_optimizer is not None, t.disc_scheduler
        return TrainingState(
            config=to_dict(t.config), iteration=t.iteration, model=t.method.model.state_dict(),
            ema_model=t.method.ema_model.state_dict(), optimizer=t.optimizer.state_dict(),
            scheduler=t.scheduler.state_dict(), scaler=t.scaler.state_dict(), rng=rng_state(),
            method=self.provenance().checkpoint_entry(), bad_pairs=sorted(t.data.bad_pairs),
            skipped_nonfinite=t.skipped_nonfinite, history=t.log.history,
            discriminator=t.critic.module.state_dict() if critic else None,
            disc_optimizer=t.disc_optimizer.state_dict() if critic else None,
            disc_scheduler=scheduler.state_dict() if scheduler is not None else None)

    def restore(self, state: dict) -> None:
        """Continue from a loaded checkpoint (any schema :func:`~iccld.io.load_checkpoint` reads)."""
        t, saved = self.trainer, TrainingState.from_state(state)
        t.method.model.load_state_dict(saved.model)
        t.method.ema_model.load_state_dict(saved.ema_model)
        t.optimizer.load_state_dict(saved.optimizer)
        t.scheduler.load_state_dict(saved.scheduler)
        t.scaler.load_state_dict(saved.scaler)
        if t.disc_optimizer is not None:
            t.critic.module.load_state_dict(saved.discriminator)
            t.disc_optimizer.load_state_dict(saved.disc_optimizer)
        if t.disc_scheduler is not None and saved.disc_scheduler is not None:
            t.disc_scheduler.load_state_dict(saved.disc_scheduler)
        t.iteration = saved.iteration
        t.skipped_nonfinite = saved.skipped_nonfinite
        t.data.bad_pairs = set(saved.bad_pairs)
        t.log.history = saved.history
        self.saved_iteration = saved.iteration
        set_rng_state(saved.rng)

    def start(self) -> None:
        """The run's resolved config, before its first step."""
        if self.trainer.is_main:
            self.run.path.mkdir(parents=True, exist_ok=True)
            record_outputs(self.run.path, [self.run.config], COMMAND)
            save_config(self.trainer.config, self.run.config)

    def save(self) -> None:
        t = self.trainer
        if t.is_main:
            path = self.run.checkpoint
            record_outputs(self.run.path, [path, *self.run.log_files()], COMMAND)
            try:
                self.run.save_checkpoint(self.state())
            except OSError as exc:  # the write goes through a temporary file: the old one is untouched
                kept = (f"the previous {path.name} (iteration {self.saved_iteration}) is intact"
                        if self.saved_iteration is not None else "no earlier checkpoint exists")
                raise TrainingError(f"{path}: cannot write the checkpoint of iteration {t.iteration} "
                                    f"({(exc.strerror or str(exc)).lower()}); {kept}") from None
            self.saved_iteration = t.iteration
        t.accelerator.wait_for_everyone()

    def finish(self, results: dict, diagnostics: dict) -> None:
        """The finished run: its EMA model as final/ and results.json (process 0)."""
        t = self.trainer
        record_outputs(self.run.path, [*FINAL_FILES, self.run.results], COMMAND)
        provenance = self.provenance()
        self.run.write_final(t.method.ema_model, provenance)
        self.run.write_results(provenance, {
            "history": t.log.history, "skipped_bad_samples": t.data.skipped_bad_total(),
            "skipped_nonfinite": t.skipped_nonfinite, "val": results, "diagnostics": diagnostics})
