"""`dreamsr weights ...`: list, pull, info, verify, push and convert model weights.

All the work is in :mod:`dreamsr.jobs.weights`; this module parses options, prints, and picks exit codes
(0 ok, 1 a file failed / did not verify, 2 bad usage). Errors are one red line on stderr.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, TypeVar

import typer
from rich.table import Table
from rich.text import Text

from dreamsr.cli.common import EXIT_FAILED, EXIT_USAGE, console, error_line, exit_code_for, out
from dreamsr.errors import ConfigError, DreamSRError
from dreamsr.threads import setup as setup_threads

app = typer.Typer(help="List, fetch, inspect, verify, publish and convert model weights.", no_args_is_help=True)

F = TypeVar("F", bound=Callable[..., Any])


_error_line = error_line  # paths and ``[models.x]`` keep their brackets (printed literally)


def _fail(message: str, code: int) -> NoReturn:
    _error_line(message)
    raise typer.Exit(code)


def _errors(fn: F) -> F:
    """Turn a DreamSRError raised by the library into one red line and the matching exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DreamSRError as err:
            _fail(str(err), exit_code_for(err))
        except OSError as err:  # an operating-system error no library call mapped: still one line naming the path
            where = err.filename if err.filename is not None else "a file"
            _fail(f"{where}: {err.strerror or err}", EXIT_FAILED)

    return wrapper  # type: ignore[return-value]


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # unreachable


def _human_params(n: int | None) -> str:
    if n is None:  # not stated in the registry and the file is not here
        return "?"
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def _print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True))


@app.command("list")
@_errors
def list_models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the models of the registry (shipped weights.toml plus the user's), and whether they are here."""
    from dreamsr.jobs import weights as W

    rows = [W.entry_dict(e) for e in W.registry_entries().values()]
    if as_json:
        return _print_json(rows)
    if not rows:
        user = W.user_registry_path()
        out.print(f"no models registered yet (registry: {W.SHIPPED_REGISTRY}" + (f", {user}" if user else "")
                  + "); use --weights PATH or hf://org/repo/file.safetensors", soft_wrap=True, markup=False)
        return
    table = Table("name", "scale", "task", "params", "size", "here", "default", box=None)
    for r in rows:
        size = r["bytes"] if r["bytes"] is not None else (Path(r["local"]).stat().st_size if r["local"] else None)
        here = ("shipped" if "path" in r else "cached") if r["local"] else "no"
        table.add_row(r["name"], f"x{r['scale']}", r["task"], _human_params(r["params"]), _human_bytes(size), here,
                      "yes" if r["default"] else "")
    out.print(table)


@app.command("pull")
@_errors
def pull(names: list[str] = typer.Argument(..., metavar="NAME...", help="Registry names or hf://org/repo/file URLs."),
         force: bool = typer.Option(False, "--force", help="Download again even if cached (replaces a bad copy)."),
         ) -> None:
    """Download models into the Hugging Face cache and check their sha256.

    Example: dreamsr weights pull NAME   (then `dreamsr upscale --model NAME` works offline)
    """
    from dreamsr.jobs import weights as W

    failed = 0
    for name in names:
        try:
            if name.startswith("hf://"):
                path = W.download(W.parse_hf_url(name), force=force)
                out.print(f"{name}: {path}", soft_wrap=True)
            else:
                path = W.fetch(W.get_entry(name), force=force)
                out.print(f"{name}: {path} (sha256 ok)", soft_wrap=True)
        except DreamSRError as err:
            _error_line(str(err))
            failed += 1
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command("info")
@_errors
def info(target: str = typer.Argument(..., metavar="FILE_OR_NAME",
                                     help="A checkpoint file, registry name or hf:// URL."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
         ) -> None:
    """Print a checkpoint's metadata (configs, scale, training) and, for a registry name, its entry."""
    from dreamsr.jobs import weights as W

    d = W.describe(target)
    if as_json:
        return _print_json(d)
    if "entry" in d:
        e = d["entry"]
        out.print(Text.assemble((e["name"], "bold"), f": {e['description']}"), soft_wrap=True)
        for key in ("url", "path", "scale", "task", "params", "license", "sha256", "default", "registry", "local"):
            if key in e:
                note = " (network parameters)" if key == "params" and e[key] is not None else ""
                out.print(f"  {key}: {e[key]}{note}", soft_wrap=True, markup=False)
    if "url" in d:
        out.print(f"{d['url']}", markup=False)
    ck = d["checkpoint"]
    if ck is None:
        hint = d["entry"]["name"] if "entry" in d else d["url"]
        out.print(f"  not downloaded: run `dreamsr weights pull {hint}` to see its metadata", markup=False)
        return
    notes = {"params": " (network parameters)",
             "tensor_values": " (every stored value: the parameters and buffers such as attention masks)"}
    for key in ("file", "sha256", "bytes", "tensors", "params", "tensor_values", "dtypes", "family", "process",
                "scale", "color", "dreamsr_version"):
        out.print(f"{key.replace('_', ' ')}: {ck[key]}{notes.get(key, '')}", soft_wrap=True, markup=False)
    for key in ("network", "diffusion", "training", "sampling"):  # sampling: the recommended sampling
        out.print(f"{key}: {json.dumps(ck[key], sort_keys=True)}", soft_wrap=True, markup=False)
    for name, rec in (ck.get("profiles") or {}).items():  # named profiles: --profile NAME
        out.print(f"profile {name} (--profile {name}): {json.dumps(rec, sort_keys=True)}", soft_wrap=True,
                  markup=False)


@app.command("verify")
@_errors
def verify(names: Optional[list[str]] = typer.Argument(None, metavar="[NAME...]",
                                                       help="Registry names (default: all of them)."),
           ) -> None:
    """Check the sha256 of downloaded/shipped model files against the registry. Never downloads or deletes.

    Exit 1 if a file does not match, or a model named on the command line is not here.
    """
    from dreamsr.jobs import weights as W

    results = W.verify(names or None)
    bad = 0
    for r in results:
        if r.status == "ok":
            out.print(f"{r.name}: ok ({r.path})", soft_wrap=True, markup=False)
        elif r.status == "missing":
            out.print(f"{r.name}: not downloaded", markup=False)
            bad += bool(names)
        else:
            _error_line(f"{r.name}: sha256 mismatch for {r.path} (file {r.actual}, registry {r.expected}); nothing was "
                        f"deleted; re-download with `dreamsr weights pull {r.name} --force`")
            bad += 1
    if not results:
        out.print("no models registered yet")
    if bad:
        raise typer.Exit(EXIT_FAILED)


@app.command("push")
@_errors
def push(file: Path = typer.Argument(..., help="A dreamsr .safetensors checkpoint."),
         repo: str = typer.Option(..., "--repo", help="Hub model repository 'org/name' (created if absent)."),
         name: Optional[str] = typer.Option(None, help="Registry name for the printed entry [default: file stem]."),
         filename: Optional[str] = typer.Option(None, help="File name inside the repo [default: FILE's name]."),
         task: str = typer.Option("general", help="general or face."),
         license: str = typer.Option("MIT", "--license", help="Licence of the weights."),
         description: str = typer.Option("", help="One line for `dreamsr weights list`."),
         private: bool = typer.Option(False, "--private", help="Create the repo as private."),
         ) -> None:
    """Upload a checkpoint you trained to the Hugging Face Hub and print its weights.toml entry.

    Uses HF_TOKEN (or `hf auth login`) and HF_ENDPOINT. Paste the printed table into ~/.config/dreamsr/weights.toml.
    """
    from dreamsr.jobs import weights as W

    result = W.push_checkpoint(file, repo, name=name, filename=filename, task=task, license=license,
                               description=description, private=private)
    console.print(f"uploaded {file} to {repo} at commit {result.commit}; add this entry to weights.toml:",
                  soft_wrap=True, markup=False)
    typer.echo(result.toml, nl=False)


# the options each --from layout takes (the rest are refused with one line; dtype applies to all)
_CONVERT_OPTIONS: dict[str, tuple[str, ...]] = {
    "dreamsr": ("--preset", "--config", "--scale", "--diffusion", "--key"),
    "sr3": ("--scale", "--norm-groups", "--task"),
    "idm": ("--preset", "--config", "--scale", "--task"),
    "resshift": ("--autoencoder", "--steps", "--task"),
}
_FROM_SHAPES = " (the configuration is read from the tensor shapes)"


@app.command("convert")
@_errors
def convert(src: Path = typer.Argument(..., metavar="IN.pth", help="A PyTorch state dict (see --from)."),
            dst: Path = typer.Argument(..., metavar="OUT.safetensors", help="Checkpoint to write."),
            layout: str = typer.Option("dreamsr", "--from", help="Layout of IN.pth: dreamsr (this UNet's keys), "
                                       "sr3 (a released SR3/DREAM *_gen.pth), idm (a released IDM *_gen.pth) or "
                                       "resshift (a released ResShift UNet, with --autoencoder)."),
            preset: Optional[str] = typer.Option(None, help="Preset the weights were trained with (--from dreamsr: "
                                                 "a UNet preset; --from idm: an IDM preset, default face)."),
            config: Optional[Path] = typer.Option(None, help="Network config as a JSON file (instead of --preset)."),
            scale: Optional[int] = typer.Option(None, min=1, help="Native upscaling factor of the model (--from sr3: "
                                                "default the released configuration's, x8; --from idm: default x8, "
                                                "the face release's output).", show_default=False),
            diffusion: Optional[Path] = typer.Option(None, help="DiffusionConfig JSON file (default: the standard one)."),
            key: Optional[str] = typer.Option(None, help="Nested dict to take, e.g. ema (default: the top level)."),
            norm_groups: Optional[int] = typer.Option(None, "--norm-groups", min=1, help="--from sr3: GroupNorm "
                                                      "groups, for an SR3 configuration no release has."),
            task: Optional[str] = typer.Option(None, help="face or general (default: the release's)."),
            autoencoder: Optional[Path] = typer.Option(None, "--autoencoder", metavar="AE.pth", help="--from "
                                                       "resshift: the release's autoencoder_vq_f4.pth (required)."),
            steps: Optional[int] = typer.Option(None, "--steps", help="--from resshift: T of the model, 15 (v1 "
                                                "kernel) or 4 (v3 kernel) (default: the file name's _s15 / _s4)."),
            dtype: str = typer.Option("fp32", help="Storage precision: fp32, fp16 or bf16."),
            overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT (never an input)."),
            threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for PyTorch (0: the cores other "
                                        "programs leave free; OMP_NUM_THREADS is respected)."),
            ) -> None:
    """Convert a .pth state dict into a self-describing .safetensors checkpoint.

    The input is read with torch.load(weights_only=True): nothing is unpickled.
    Example: dreamsr weights convert model.pth model.safetensors --preset small --scale 4
    Example: dreamsr weights convert --from sr3 I640000_E37_gen.pth sr3-face.safetensors
    Example: dreamsr weights convert --from idm best_psnr_gen.pth idm-face.safetensors
    Example: dreamsr weights convert --from resshift resshift_realsrx4_s15.pth --autoencoder autoencoder_vq_f4.pth
    resshift-x4.safetensors
    """
    setup_threads(threads or None)  # before torch loads (OpenMP reads its waiting behaviour then)
    if layout not in _CONVERT_OPTIONS:
        _fail(f"--from must be one of {', '.join(_CONVERT_OPTIONS)}, got {layout!r}", EXIT_USAGE)
    for option, given_path in (("--config", config), ("--diffusion", diffusion)):
        if given_path is not None and dst.exists() and given_path.exists() and os.path.samefile(dst, given_path):
            _fail(f"output and input are the same file: {dst} is the {option} file (an input is never written "
                  "over)", EXIT_USAGE)
    given = {"--preset": preset, "--config": config, "--scale": scale, "--diffusion": diffusion, "--key": key,
             "--norm-groups": norm_groups, "--task": task, "--autoencoder": autoencoder, "--steps": steps}
    for option, value in given.items():
        if value is not None and option not in _CONVERT_OPTIONS[layout]:
            why = _FROM_SHAPES if option in ("--preset", "--config") and layout in ("sr3", "resshift") else ""
            _fail(f"{option} does not apply to --from {layout}{why}", EXIT_USAGE)

    if layout == "sr3":
        from dreamsr.converters.sr3 import convert_released

        path = convert_released(src, dst, norm_groups=norm_groups, scale=scale, task=task, dtype=dtype,
                                overwrite=overwrite)
        out.print(f"wrote {path}", soft_wrap=True, markup=False)
        return
    if layout == "idm":
        return _convert_idm(src, dst, preset, config, scale, task, dtype, overwrite)
    if layout == "resshift":
        return _convert_resshift(src, dst, autoencoder, steps, task, dtype, overwrite)

    from dreamsr.jobs import weights as W
    from dreamsr.diffusion import DiffusionConfig
    from dreamsr.families.sr3.unet import UNetConfig, preset as get_preset

    if scale is None:
        _fail("give --scale N (the model's native upscaling factor)", EXIT_USAGE)
    if (preset is None) == (config is None):
        _fail("give exactly one of --preset NAME or --config FILE.json", EXIT_USAGE)
    unet = get_preset(preset) if preset is not None else UNetConfig.from_dict(_read_json(config, "--config"))
    diff = DiffusionConfig.from_dict(_read_json(diffusion, "--diffusion")) if diffusion else None
    path = W.convert_pth(src, dst, unet, scale=scale, diffusion=diff, key=key, dtype=dtype, overwrite=overwrite)
    out.print(f"wrote {path}", soft_wrap=True, markup=False)


def _convert_idm(src: Path, dst: Path, preset: str | None, config: Path | None, scale: int | None,
                 task: str | None, dtype: str, overwrite: bool) -> None:
    from dreamsr.families.idm.network import IDMConfig, preset as idm_preset
    from dreamsr.converters.idm import write_release

    if preset is not None and config is not None:
        _fail("give at most one of --preset NAME or --config FILE.json", EXIT_USAGE)
    network = (IDMConfig.from_dict(_read_json(config, "--config")) if config is not None
               else idm_preset(preset or "face"))
    done = write_release(src, dst, config=network, scale=scale, task=task, dtype=dtype, overwrite=overwrite)
    sched = done.schedule
    out.print(f"wrote {done.path}: idm, x{done.scale} (trained x{network.min_scale:g} to x{network.max_scale:g}), "
              f"{_human_params(done.parameters)} parameters, linear schedule of {sched['num_steps']} steps "
              f"(beta {sched['beta_start']:g} to {sched['beta_end']:g})", soft_wrap=True, markup=False)
    out.print(f"dropped {len(done.dropped)} unused modules ({_human_params(done.dropped_parameters)} parameters; "
              "listed in the checkpoint's training.dropped):", soft_wrap=True, markup=False)
    for name, (why, count) in done.dropped.items():
        out.print(f"  {name} ({count} tensor{'s' if count != 1 else ''}): {why}", soft_wrap=True, markup=False)
    _print_recommended(done.sampling)


def _convert_resshift(src: Path, dst: Path, autoencoder: Path | None, steps: int | None, task: str | None,
                      dtype: str, overwrite: bool) -> None:
    from dreamsr.converters.resshift import write_release

    done = write_release(src, dst, autoencoder_path=autoencoder, steps=steps, task=task, dtype=dtype,
                         overwrite=overwrite)
    out.print(f"wrote {done.path}: resshift, x4 in the VQ-f4 latent, UNet {_human_params(done.unet_parameters)} + "
              f"autoencoder {_human_params(done.autoencoder_parameters)} parameters", soft_wrap=True, markup=False)
    out.print(f"schedule: {done.schedule_rule}", soft_wrap=True, markup=False)
    _print_recommended(done.sampling)


def _print_recommended(sampling: dict[str, Any]) -> None:
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sampling.items())
    out.print(f"recommended sampling (dreamsr upscale uses it unless you give the option; its provenance is in "
              f"the checkpoint's training.sampling_provenance): {flags}", soft_wrap=True, markup=False)


@app.command("export")
@_errors
def export(src: Path = typer.Argument(..., metavar="IN.safetensors", help="A dreamsr SR3 checkpoint."),
           dst: Path = typer.Argument(..., metavar="OUT.pth", help="Released-layout state dict to write."),
           layout: str = typer.Option(..., "--to", help="Layout to write: sr3 (SR3's / DREAM's GaussianDiffusion "
                                      "state dict, loadable by their code with strict=True)."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT.pth (never IN)."),
           threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for PyTorch (0: the cores other "
                                       "programs leave free; OMP_NUM_THREADS is respected)."),
           ) -> None:
    """Write a dreamsr SR3 checkpoint as a released-layout .pth, to compare it inside the original code.

    Prints the "model" section of SR3's JSON config that builds the matching network.
    Example: dreamsr weights export --to sr3 sr3-face.safetensors I0_gen.pth
    """
    setup_threads(threads or None)  # before torch loads
    if layout != "sr3":
        _fail(f"--to must be sr3, got {layout!r}", EXIT_USAGE)
    from dreamsr.converters.sr3 import export_released

    path, options = export_released(src, dst, overwrite=overwrite)
    console.print(f"wrote {path}; SR3 config \"model\" section:", soft_wrap=True, markup=False)
    typer.echo(json.dumps(options, indent=2))


def _read_json(path: Path | None, option: str) -> dict:
    assert path is not None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{option}: cannot read {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{option}: {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{option}: {path} must hold a JSON object")
    return data
