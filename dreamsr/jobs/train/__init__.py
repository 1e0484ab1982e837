"""DREAM training: the loop, EMA, mixed precision, DDP, exact resume, validation and export.

``train(TrainConfig(...), callback)`` runs ``config.steps`` optimizer steps of Algorithm 3 (``p = inf`` is
standard SR3 training) on the network of ``config.family`` and leaves a run folder::

    run_dir/config.json                    the TrainConfig plus what was resolved (model, device, world size)
    run_dir/metrics.jsonl                  one JSON object per log interval / validation / resume
    run_dir/checkpoints/step_00001000.safetensors   full training state (see below), the last ``keep`` kept
    run_dir/val/step_00001000.png          validation grid, one row per image: LR | bicubic | SR | HR
    run_dir/model.safetensors              inference checkpoint (EMA weights by default) for ``dreamsr upscale``

Exact resume. Every random draw of step ``k`` derives from ``(seed, k)`` or from the global sample index
``g = k * batch + j`` (data order, crops, flips, the noise level gamma and the noise eps of each sample; dropout
from the global generator re-seeded with ``(seed, k, rank)`` before the step), so a run resumed from the
checkpoint of step ``N`` repeats exactly what the uninterrupted run did after step ``N``: on the CPU the
weights are bit-for-bit equal. Under DDP the global batch is split over the ranks by sample index, so the
union of the ranks' batches and noises equals the single-process batch of the same step (except the extra
noise of ``independent_noise``, drawn per step and rank). Bit-exact CPU resume also needs the same number of
intra-op threads as the interrupted run. Each rank keeps its own decoded-image cache.

Training states are one safetensors file each, written atomically (:mod:`dreamsr.jobs.train.state`). Library code
never prints: progress goes to ``callback(TrainEvent)``; a callback returning True asks the loop to stop after
the current step (after the next one for a "val" event); a checkpoint and the export are written first.

Modules: :mod:`~dreamsr.jobs.train.config` (TrainConfig), :mod:`~dreamsr.jobs.train.state` (state files, resume, export),
:mod:`~dreamsr.jobs.train.distributed` (process group, DDP), :mod:`~dreamsr.jobs.train.validation`,
:mod:`~dreamsr.jobs.train.loop` (:func:`train`).
"""

from __future__ import annotations

from dreamsr.jobs.train.config import PROCESS, RESUMABLE_FIELDS, TrainConfig
from dreamsr.jobs.train.loop import Callback, TrainEvent, TrainResult, sample_noise, train
from dreamsr.jobs.train.state import (STATE_FORMAT, STATE_FORMAT_VERSION, TrainState, export_from_state,
                                 latest_checkpoint, read_state, read_state_config)

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "Callback", "train", "latest_checkpoint", "read_state_config",
           "read_state", "TrainState", "export_from_state", "sample_noise", "RESUMABLE_FIELDS", "STATE_FORMAT",
           "STATE_FORMAT_VERSION", "PROCESS"]
