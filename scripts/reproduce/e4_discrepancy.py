"""E4, the training-sampling discrepancy (paper Sec. 3.2, Fig. 3): MSE of x0_hat against y0 at each t when y_t is
built from the ground truth ("training", Alg. 1 line 3) and when it comes from the sampler ("sampling", Alg. 2
line 4), for p = 1 and p = inf; whether DREAM shrinks the gap."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from dreamsr.files import load_json, sha256_file

from .common import Timed, check, write_json
from .crops import held_out_crops
from .profiles import P1, PINF, Profile

__all__ = ["e4_train_noise", "e4_sample_generators", "discrepancy", "evaluate_discrepancy", "experiment_e4"]


def e4_train_noise(seed: int, k: int, index: int, shape: Sequence[int]) -> torch.Tensor:
    """The eps of the "training" y_t of image ``index`` at respaced step ``k`` (its own generator)."""
    from dreamsr.data import mix_seed

    g = torch.Generator().manual_seed(mix_seed(seed, 41, k, index))
    return torch.randn(tuple(shape), generator=g)


def e4_sample_generators(seed: int, n: int) -> list[torch.Generator]:
    """One generator per image for the "sampling" chain (noise independent of how many images share a batch)."""
    from dreamsr.data import mix_seed

    return [torch.Generator().manual_seed(mix_seed(seed, 42, i)) for i in range(n)]


def _image_mse(y0_hat: torch.Tensor, hr_m: torch.Tensor, x0: torch.Tensor, diffusion: Any) -> torch.Tensor:
    """Per-image MSE [N] between the HR image implied by y0_hat (target space) and the HR, both in [0, 1]."""
    img = diffusion.from_target(y0_hat.float(), x0)
    return ((img - hr_m) / 2).pow(2).flatten(1).mean(1).cpu().double()


@torch.no_grad()
def discrepancy(weights: str | os.PathLike, images: Sequence[torch.Tensor], *, steps: int, seed: int = 0,
                device: str = "cpu", precision: str = "auto") -> dict[str, Any]:
    """E4 (paper Sec. 3.2, Fig. 3): MSE of x0_hat against y0 at every step t of a respaced DDPM chain.

    ``images``: HR crops [3, H, W] in [0, 1]; their LR is the antialiased bicubic x4 downsample rounded to 8 bits
    and the condition x0 its bicubic upsample, as in evaluation. "sampling": x0_hat of
    :func:`dreamsr.samplers.ddpm_sample`'s own per-step callback (y_t from the previous sampler step, Alg. 2);
    "training": x0_hat = Eq. (8) applied to y_t = q_sample(y0, gamma_t, eps) (Alg. 1 line 3) with fresh eps.
    Both x0_hat are clipped to [-1, 1] as the sampler clips, and measured as images in [0, 1].
    Returns per t (ascending): mean and std over images of both MSEs, and summaries of the gap.
    """
    from dreamsr.checkpoint import load_checkpoint
    from dreamsr.diffusion import Schedule
    from dreamsr.images import downsample, to_model, upsample
    from dreamsr.runtime import autocast, resolve_device, resolve_precision
    from dreamsr.samplers import ddpm_sample, randn_like

    t0 = time.perf_counter()
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    model, info = load_checkpoint(weights, device=dev)
    schedule = Schedule(info.diffusion)
    diff = info.diffusion
    s = info.scale
    hr = torch.stack(list(images)).to(dev)  # [N, 3, H, W] in [0, 1]
    lr = downsample(hr, s).clamp(0, 1).mul(255).round().div(255)
    x0 = upsample(to_model(lr), s)  # the SR3 condition, as the pipeline builds it
    hr_m = to_model(hr)
    y0 = diff.to_target(hr_m, x0)
    n = hr.shape[0]

    def eps_fn(y_t: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        with autocast(dev, prec):
            return model(y_t, x0, gamma).float()

    sched = schedule.respace(steps)
    K = len(sched)
    sampling = torch.zeros(K, n, dtype=torch.float64)

    def on_step(i: int, total: int, y_t: torch.Tensor, y0_hat: torch.Tensor) -> None:
        sampling[total - 1 - i] = _image_mse(y0_hat, hr_m, x0, diff)  # step i works at respaced level K-1-i

    gens = e4_sample_generators(seed, n)
    noise = randn_like(y0, gens).to(dev)
    ddpm_sample(eps_fn, noise, schedule, steps, generator=gens, clip=True, callback=on_step)

    training = torch.zeros(K, n, dtype=torch.float64)
    for k in range(K):
        gamma = torch.full((n,), float(sched.alpha_bar[k]) ** 0.5, dtype=torch.float32, device=dev)
        eps = torch.stack([e4_train_noise(seed, k, i, y0.shape[1:]) for i in range(n)]).to(dev)
        y_t = Schedule.q_sample(y0, gamma, eps)  # Alg. 1 line 3
        y0_hat = Schedule.predict_y0(y_t, eps_fn(y_t, gamma), gamma).clamp(-1, 1)  # Eq. (8)
        training[k] = _image_mse(y0_hat, hr_m, x0, diff)

    def stats(m: torch.Tensor) -> tuple[list[float], list[float]]:
        mean = m.mean(1)
        std = m.std(1, unbiased=True) if n > 1 else torch.zeros(K, dtype=torch.float64)
        return mean.tolist(), std.tolist()

    tr_mean, tr_std = stats(training)
    sa_mean, sa_std = stats(sampling)
    gap = [a - b for a, b in zip(sa_mean, tr_mean)]
    return {"t": sched.timesteps.tolist(), "train_mean": tr_mean, "train_std": tr_std, "sample_mean": sa_mean,
            "sample_std": sa_std, "images": n, "steps": K,
            "summary": {"train_mean_over_t": statistics.fmean(tr_mean), "sample_mean_over_t": statistics.fmean(sa_mean),
                        "gap_mean_over_t": statistics.fmean(gap),
                        "gap_share": statistics.fmean(gap) / statistics.fmean(sa_mean),
                        "frac_t_sample_above_train": sum(g > 0 for g in gap) / K,
                        "train_final": tr_mean[0], "sample_final": sa_mean[0]},
            "seconds": time.perf_counter() - t0}


def evaluate_discrepancy(profile: Profile, out: Path, data: Path, trained: dict[str, dict], *, device: str,
                         precision: str, log: Callable[[str], None], timed: Timed) -> list[dict]:
    """Run :func:`discrepancy` for p = inf and p = 1 on the profile's E4 crops, each cached in
    ``out/evals/discrepancy/<run>.json`` under a key of the weights' sha256 and the settings."""
    e4_crops = [img for _, img in held_out_crops(data / "val", profile.e4_images, profile.e4_crop)]
    models: list[dict] = []
    for s in (PINF, P1):
        path = out / "evals" / "discrepancy" / f"{s.name}.json"
        weights = Path(trained[s.name]["weights"])
        key = {"weights_sha256": sha256_file(weights), "steps": profile.e4_steps, "images": profile.e4_images,
               "crop": profile.e4_crop, "seed": 0}
        if path.is_file() and load_json(path).get("key") == key:
            log(f"E4 {s.name}: finished earlier, skipped")
            res = load_json(path)
        else:
            log(f"E4 {s.name}: {profile.e4_steps}-step DDPM chain on {profile.e4_images} crops")
            res = timed(f"e4/{s.name}", lambda s=s, weights=weights: discrepancy(
                weights, e4_crops, steps=profile.e4_steps, seed=0, device=device, precision=precision))
            res.update({"key": key, "name": s.name, "p": s.p_label})
            write_json(path, res)
        models.append(res)
    return models


def experiment_e4(prof: Profile, models: list[dict]) -> dict:
    """E4 JSON: the discrepancy curves of p = 1 and p = ∞ and whether DREAM shrinks the gap."""
    by = {m["p"]: m["summary"] for m in models}
    inf_, one = by["inf"], by["1"]
    checks = [
        check("p = ∞: the \"sampling\" x̂0 is worse than the \"training\" one (mean over t)",
               inf_["gap_mean_over_t"] > 0,
               f"MSE {inf_['sample_mean_over_t']:.3e} vs {inf_['train_mean_over_t']:.3e}; sampling worse at "
               f"{100 * inf_['frac_t_sample_above_train']:.0f}% of t", "yes (Fig. 3a)"),
        check("DREAM (p = 1) has a smaller gap than p = ∞ (mean over t of sampling − training MSE)",
               one["gap_mean_over_t"] < inf_["gap_mean_over_t"],
               f"{one['gap_mean_over_t']:.3e} vs {inf_['gap_mean_over_t']:.3e}", "yes (Fig. 3b)"),
        check("… and a smaller share of the sampling error (gap / sampling MSE, both averaged over t)",
               one["gap_share"] < inf_["gap_share"], f"{one['gap_share']:.3f} vs {inf_['gap_share']:.3f}",
               "yes (Fig. 3b)"),
        check("DREAM's final sample is closer to y0 (\"sampling\" MSE at the last step)",
               one["sample_final"] < inf_["sample_final"],
               f"{one['sample_final']:.3e} vs {inf_['sample_final']:.3e}", "yes (Fig. 3, t → 0)"),
    ]
    return {"experiment": "E4", "title": "training-sampling discrepancy", "profile": prof.to_dict(),
            "setup": {"images": prof.e4_images, "crop": prof.e4_crop, "steps": prof.e4_steps, "sampler": "ddpm",
                      "mse": "per image, HR in [0, 1], x̂0 clipped to [-1, 1] as the sampler does"},
            "models": models, "checks": checks}
