"""The training skeleton every trainer runs on: one run folder, one step loop.

- :class:`TrainingRun` (a context manager) sets up one process or a ``torchrun`` rank
  (:func:`attiqa_train.distributed.init_distributed`), locks the output folder and
  applies the resume rules (:func:`attiqa_train.rundir.prepare_run_dir`), restores the
  resumable state and writes the resolved ``config.yaml`` once the run is set up
  (:meth:`TrainingRun.begin`), saves the state
  (``state.pt``, :mod:`attiqa_train.state`) and, on leaving, releases the lock and the
  process group. ``--resume`` means one thing everywhere: continue from ``OUT/state.pt``,
  which must exist.
- :func:`run_steps` is the optimisation loop: for each step the trainer's ``step_fn``
  returns the loss and its named terms; the loop does ``zero_grad`` -> ``backward`` ->
  gradient clipping -> ``optimizer.step`` -> ``scheduler.step`` -> ``after_step`` (EMA),
  averages the terms over each logging window (across ranks), and calls back for
  logging, validation and saving the state at their intervals and at the last step.

Trainers keep what differs between them (data, model, losses, what validation measures,
what is exported) and get the same resume, precision, schedule and logging behaviour.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch

from .distributed import DistInfo, all_reduce_mean, barrier, cleanup_distributed, init_distributed
from .rundir import folder_files, prepare_run_dir, record_contents
from .state import STATE_NAME, load_state, save_state

__all__ = ["TrainingRun", "run_steps", "StepFn"]

#: ``step_fn(step) -> (loss, {name: term})``: one forward pass of step ``step`` (0-based).
StepFn = Callable[[int], Tuple[torch.Tensor, Mapping[str, torch.Tensor]]]


class TrainingRun:
    """A training run in folder ``out`` (see the module docstring).

    Args:
        out: the run folder (``--out``).
        command: the command named in the folder's lock and in messages.
        config: the resolved config as a nested dict (written to ``config.yaml``; on
            ``resume`` compared with the saved one).
        run_files: the names a run writes into ``out`` (any present = the folder holds a run).
        free_keys: config keys that may change on resume (they do not change the weights).
        defaults: the config's defaults (a key missing from an old ``config.yaml`` counts
            as its default).
        device: ``"auto"`` or a torch device name.
        resume / overwrite: continue the run in ``out`` / replace it.
        legacy_state_names: older names of ``state.pt`` in this trainer's run folders; on
            ``resume`` such a file is renamed to ``state.pt`` (said on stderr).
        config_class: the config dataclass: on ``resume`` the saved ``config.yaml`` is
            compared under its current key names and values
            (:func:`attiqa_train.config.with_current_keys`), so a run saved with earlier
            names resumes.
    """

    def __init__(self, out: Path, *, command: str, config: Mapping[str, Any], run_files: Sequence[str],
                 free_keys: Sequence[str] = (), defaults: Optional[Mapping[str, Any]] = None, device: str = "auto",
                 resume: bool = False, overwrite: bool = False, legacy_state_names: Sequence[str] = (),
                 config_class: Optional[type] = None) -> None:
        self.out, self.command, self.config = Path(out), command, dict(config)
        self.run_files = tuple(run_files) + tuple(n for n in legacy_state_names if n not in run_files)
        self.free_keys, self.defaults, self.device_name = tuple(free_keys), defaults, device
        self.resume, self.overwrite, self.legacy_state_names = resume, overwrite, tuple(legacy_state_names)
        self.config_class = config_class
        self.dist: Optional[DistInfo] = None
        self._lock = None
        self._found_before: Tuple[str, ...] = ()

    @property
    def state_path(self) -> Path:
        return self.out / STATE_NAME

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    def __enter__(self) -> "TrainingRun":
        self.dist = init_distributed(self.device_name)
        try:
            self._lock = prepare_run_dir(
                self.out, command=self.command, run_files=self.run_files, state_name=STATE_NAME,
                resume=self.resume, overwrite=self.overwrite, config=self.config, free_keys=self.free_keys,
                is_main=self.dist.is_main, device=self.dist.device, defaults=self.defaults,
                legacy_state_names=self.legacy_state_names, config_class=self.config_class)
        except BaseException:
            cleanup_distributed()
            raise
        if self._lock is not None:  # files already in the run's folders (tb/) are not this run's
            self._found_before = tuple(f for name in self.run_files for f in folder_files(self.out, name))
        return self

    def record_written(self) -> None:
        """Record (rank 0) the files that appeared in the run's folders (``tb/``) since the
        run began in ``OUT/attiqa-run.json``'s ``contents``: ``--overwrite`` deletes a run
        folder's ``tb`` only when every file in it is the run's
        (:func:`attiqa_train.rundir.check_replaceable`). Called at each state save and when
        the run ends."""
        if self._lock is not None:
            record_contents(self.out, self.run_files, exclude=self._found_before)

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            barrier()  # rank 0 may still be exporting: nobody leaves the process group before it
        try:
            self.record_written()
        except OSError:  # a full disk: the run's own error (if any) is the one to report
            if exc_type is None:
                self._release()
                raise
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        cleanup_distributed()

    def begin(self, *, map_location: Any = None, **objects: Any) -> int:
        """Call once the run is set up (data read, model built): on ``resume``, load
        ``state.pt`` into ``objects`` (``name=obj`` with ``load_state_dict``); then write
        ``config.yaml`` (rank 0). Returns the step to start from (0 for a fresh run).

        A run whose setup fails before this leaves no ``config.yaml`` behind, so the
        folder does not count as holding a run."""
        step = 0
        if self.resume:
            step = load_state(self.state_path, map_location=map_location or self.dist.device, **objects)
            if self.is_main:
                print(f"{self.command}: resumed from {self.state_path} at step {step}", file=sys.stderr)
        if self.is_main:
            from .config import save_config_dict

            save_config_dict(self.config, self.out / "config.yaml")
        return step

    def save(self, step: int, **objects: Any) -> None:
        """Write ``state.pt`` (rank 0, atomically); every rank waits for it."""
        if self.is_main:
            save_state(self.state_path, step=step, **objects)
            self.record_written()
        barrier()


def _due(done: int, every: int, last: int) -> bool:
    return every > 0 and (done % every == 0 or done == last)


def run_steps(
    step_fn: StepFn,
    *,
    start: int,
    steps: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Optional[Any] = None,
    clip_params: Iterable[torch.nn.Parameter] = (),
    grad_clip: float = 0.0,
    after_step: Optional[Callable[[int], None]] = None,
    log_every: int = 0,
    on_log: Optional[Callable[[int, Dict[str, float]], None]] = None,
    val_every: int = 0,
    on_validate: Optional[Callable[[int], None]] = None,
    save_every: int = 0,
    on_save: Optional[Callable[[int], None]] = None,
    progress: bool = True,
    desc: Optional[str] = None,
) -> None:
    """Optimise from step ``start`` to ``steps`` (see the module docstring).

    Callbacks get the number of steps done. ``on_log(done, means)`` receives each term's
    mean over the window since the last log (and ``"total"``, the loss), averaged across
    ranks; every rank calls it (rank 0 writes). ``on_validate`` and ``on_save`` run every
    ``val_every`` / ``save_every`` steps and at the last step (an interval of 0 = never;
    ``log_every`` likewise). ``progress`` shows a tqdm bar with running means on stderr.
    """
    from tqdm.auto import tqdm

    clip_params = list(clip_params)
    window: Dict[str, torch.Tensor] = {}
    running: Dict[str, float] = {}
    count = 0
    bar = tqdm(total=steps, initial=start, disable=not progress, unit="step", file=sys.stderr, desc=desc,
               dynamic_ncols=True)
    try:
        for step in range(start, steps):
            loss, terms = step_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(clip_params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            done = step + 1
            if after_step is not None:
                after_step(done)
            count += 1
            for name, value in {**terms, "total": loss}.items():
                value = value.detach().float()
                window[name] = window[name] + value if name in window else value
                running[name] = 0.9 * running.get(name, float(value)) + 0.1 * float(value) if progress else 0.0
            bar.update(1)
            if progress:
                bar.set_postfix({k[:8]: f"{v:.4f}" for k, v in running.items()}, refresh=False)
            if on_log is not None and _due(done, log_every, steps):
                on_log(done, {k: float(all_reduce_mean(v / count)) for k, v in window.items()})
                window, count = {}, 0
            if on_validate is not None and _due(done, val_every, steps):
                on_validate(done)
            if on_save is not None and _due(done, save_every, steps):
                on_save(done)
    finally:
        bar.close()
