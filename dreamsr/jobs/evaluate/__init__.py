"""Evaluation: run an upscaler over a named set, aggregate metrics, and write a report people can trust.

Sets (under ``data_dir`` or ``$DREAMSR_DATA``; :data:`SETS` lists the accepted folder names):

============== ======================================================================= ======== ==========
set            layout                                                                  scale    protocol
============== ======================================================================= ======== ==========
div2k-val      ``DIV2K/DIV2K_valid_HR/*.png`` (100 images)                              4        div2k
celebahq       ``celeba_hq/*`` or ``CelebA-HQ-img/*``: the last 100 files (sorted)      8        faces
set5 / set14   ``Set5/HR/*`` (or ``Set5/GTmod12``, ``Set5/original``, ``benchmark/Set5/HR``)  4  div2k
bsd100         ``BSD100/HR`` (or ``B100``, ``BSDS100``)                                 4        div2k
urban100       ``Urban100/HR``                                                          4        div2k
cat            ``cat/*`` (or ``CAT``, ``cats``)                                         4        div2k
lsun-bedroom   ``lsun/bedroom/*`` (or ``lsun_bedroom``, ``bedroom``)                    4        div2k
lsun-tower     ``lsun/tower/*`` (or ``lsun_tower``, ``tower``)                          4        div2k
folder         ``data_dir`` itself, every image below it is an HR image                 4        div2k
paired         ``data_dir/HR/<name>`` and ``data_dir/LR/<name>`` (same stem)            (files)  div2k
============== ======================================================================= ======== ==========

LR synthesis (every set but ``paired``): the HR image is cropped at the bottom/right to a multiple of the scale
(BasicSR's "GTmod"), downsampled with :func:`dreamsr.images.downsample` (the antialiased bicubic used in
training) and rounded to 8 bits as a saved LR file would be. ``lr_protocol="release"`` (``--lr-protocol
release``) makes every resize the released SR3/DREAM code's instead: PIL's bicubic on the 8-bit image
(:func:`dreamsr.images.resize_pil_bicubic`), the faces' 128 px HR and 16 px LR each from the file (the release's
``prepare_data.py``), and consistency downsamples the SR image the same way (DREAM's ``calculate_consistency``).
The ``div2k`` and ``celebahq`` validation files are the ones :func:`dreamsr.data.resolve_layout` holds out of
training.

The model: ``model``/``weights``, else the registry's default for the scale, picked as ``dreamsr upscale`` picks
it (:meth:`EvalConfig.resolved`); ``bicubic`` and ``nearest`` are the reference upscalers (they ignore tiling).
Sampling: exactly what ``dreamsr upscale`` uses (:meth:`dreamsr.jobs.pipeline.Upscaler.options`: the defaults,
the model's recommendation, then the fields given). Protocols: ``div2k`` -- HR files as they are; ``faces`` --
HR resized to 128x128 (16x16 LR at x8). The paper (Sec. 6.2) sampled ``div2k`` in 40x40 LR tiles with 5 px
overlap, tiles sampled independently and merged at the end (``merge="end"``), and ``faces`` whole (``tile=0``);
give those fields to sample its way (the summary records both, ``protocol.paper_sampling`` and what ran).

Metrics: SR outputs are rounded to 8 bits before any metric (as the SR3/DREAM and BasicSR code measure saved
images). Conventions: ``rgb`` = RGB on the whole image; ``y`` = BT.601 Y with ``crop_border`` (default = scale)
cropped first (:mod:`dreamsr.metrics`). VIF follows both conventions; HaarPSI, GMSD and MDSI (piq) always take the
RGB image whole; the HF ratio always takes the ``y`` convention's luma and border. Every summary entry states its
``direction`` (higher / lower is better; the HF ratio: 1 = as much texture as HR). With ``samples`` K > 1 every image is super-resolved with seeds
``seed .. seed+K-1``; the summary ``mean`` is over all images and seeds and ``std`` is the standard deviation of
the K per-seed set means (with K = 1, ``std`` is over images).

Output folder: ``metrics.csv`` (one row per image and seed, failed files included with their error),
``summary.json``, ``summary.md`` and ``grids/*.png`` (LR | bicubic | SR | HR with a zoomed crop) for the first
images. The library never prints; ``progress`` receives :class:`Progress` events.

Modules: :mod:`~dreamsr.jobs.evaluate.sets` (the sets and their listing, through :mod:`dreamsr.data`),
:mod:`~dreamsr.jobs.evaluate.run` (:class:`EvalConfig`, :func:`evaluate`, reuse of a finished evaluation),
:mod:`~dreamsr.jobs.evaluate.reports` (the files written, ``--compare``).
"""

from __future__ import annotations

from dreamsr.jobs.evaluate.reports import (METRICS, compare, compare_markdown, format_metric, load_summary,
                                      metric_label)
from dreamsr.jobs.evaluate.run import (REFERENCE_MODELS, EvalConfig, EvalReport, Progress, ProgressFn, evaluate,
                                  evaluate_cached, finished_summary)
from dreamsr.jobs.evaluate.sets import IMAGE_EXTENSIONS, PROTOCOLS, SETS, EvalItem, Protocol, SetSpec, resolve_set

__all__ = [
    "SETS", "SetSpec", "Protocol", "PROTOCOLS", "EvalItem", "EvalConfig", "Progress", "ProgressFn", "EvalReport",
    "METRICS", "REFERENCE_MODELS", "resolve_set", "evaluate", "evaluate_cached", "finished_summary", "compare",
    "compare_markdown", "load_summary", "format_metric", "metric_label", "IMAGE_EXTENSIONS",
]
