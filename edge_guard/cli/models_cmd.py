"""`edge-guard models ...`: list, pull, verify, info, fit, add, rm, path, and synthetic models.

Model references everywhere: a manifest id (`gpt-oss-safeguard-20b:mxfp4`), a `.gguf`
path, `hf:REPO/FILE.gguf[@REVISION]`, or `synth:PRESET`. All logic lives in
`edge_guard.registry`; this module only parses options and prints.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from edge_guard.defaults import DEFAULT_CTX


@click.group()
def models() -> None:
    """Manage GGUF models: list, pull, verify, inspect, fit, and write synthetic test models."""


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _size(n: int | None, exact: bool = True) -> str:
    from edge_guard.registry.store import fmt_size

    return ("" if exact or n is None else "~") + fmt_size(n)


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "B" else f"{n / scale:.1f}{unit}"
    return str(n)


def _home(path: str | None) -> str:
    import os

    if not path:
        return "-"
    home = os.path.expanduser("~")
    return "~" + path[len(home) :] if path.startswith(home + os.sep) else path


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(as_json: bool) -> None:
    """Available builds (manifests), registered and downloaded models.

    TRUST: pinned (manifest sha256), tofu (hash recorded on first download), unverified
    (no hash yet), registered (`models add`). `*` marks the default model.
    """
    from edge_guard.registry.manage import list_models

    rows = list_models()
    if as_json:
        _dump(rows)
        return
    table = [("", "ID", "FAMILY", "QUANT", "SIZE", "STATUS", "TRUST", "LOCATION")]
    for r in rows:
        status = "installed" if r["installed"] else "partial" if r["partial"] else "-"
        table.append(
            (
                "*" if r["default"] else "",
                r["id"],
                r["family"] or r["kind"],
                r["quant"] or "-",
                _size(r["size"], r["size_exact"]),
                status,
                r["trust"],
                _home(r["path"]),
            )
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@models.command("pull")
@click.argument("model")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before downloading.")
@click.option(
    "--retrust",
    is_flag=True,
    help="Forget the trust-on-first-use hash (the upstream file changed on purpose).",
)
@click.option("--force", is_flag=True, help="Download again even if a local copy exists.")
def pull_cmd(model: str, yes: bool, retrust: bool, force: bool) -> None:
    """Download MODEL (a model id or hf:REPO/FILE.gguf[@REV]) and verify its sha256.

    Interrupted pulls resume where they stopped. Afterwards the model works offline.
    """
    from edge_guard.registry import lookup
    from edge_guard.registry.download import pull
    from edge_guard.registry.store import fmt_size

    target = lookup(model)
    if (
        not yes
        and sys.stdin.isatty()
        and target.source is not None
        and (target.path is None or force)
    ):
        size = fmt_size(target.source.size) if target.source.size else "size unknown"
        click.confirm(
            f"pull {target.id} ({size}) from {target.source.repo}?", default=True, abort=True
        )
    pull(model, echo=click.echo, retrust=retrust, force=force)


@models.command("verify")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify_cmd(model: str, as_json: bool) -> None:
    """Check MODEL's GGUF structure and its sha256 against the manifest / first-use record."""
    from edge_guard.registry.info import verify_model

    res = verify_model(model, echo=lambda s: click.echo(s, err=True))
    if as_json:
        _dump(res)
        return
    against = {
        "pinned": "matches the manifest's pinned sha256",
        "tofu": "matches the sha256 recorded on first use",
        "tofu-recorded": "recorded now (trust on first use)",
        "registered": "matches the sha256 recorded by `models add`",
        "none": "no reference hash (a plain file)",
    }[res["trust"]]
    click.echo(f"ok: {res['path']} ({_size(res['size'])})")
    click.echo("  gguf    valid gpt-oss model")
    click.echo(f"  sha256  {res['sha256']} — {against}")


@models.command("info")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info_cmd(model: str, as_json: bool) -> None:
    """GGUF metadata of MODEL: architecture, parameters, tensor types, context, experts, vocab."""
    from edge_guard.registry import lookup, resolve
    from edge_guard.registry.info import model_info

    target = lookup(model)
    info = {"id": target.id, **model_info(resolve(model).path)}
    if target.manifest is not None:
        m = target.manifest
        info["manifest"] = {
            "family": m.family,
            "quant": m.quant,
            "repo": m.source.repo,
            "filename": m.source.filename,
            "revision": m.source.revision,
            "verified": m.verified,
            "license": m.license,
        }
    if as_json:
        _dump(info)
        return
    hd = info["head_dim"]
    rows = [
        ("model", info["id"]),
        ("file", f"{info['path']} ({_size(info['file_size'])}, GGUF v{info['gguf_version']})"),
        (
            "architecture",
            f"{info['architecture']} ({info['name'] or 'unnamed'}, file type {info['file_type']})",
        ),
        ("parameters", f"{_count(info['parameters'])} ({info['n_tensors']} tensors)"),
        ("context", f"{info['context_length']} tokens, sliding window {info['sliding_window']}"),
        (
            "layers",
            f"{info['block_count']} x {info['embedding_length']} wide, "
            f"{info['head_count']} heads / {info['head_count_kv']} KV heads x {hd}",
        ),
        (
            "experts",
            f"{info['expert_count']} ({info['expert_used_count']} active), "
            f"FFN {info['expert_feed_forward_length']}",
        ),
        (
            "vocab",
            f"{info['vocab_size']} tokens, chat template "
            f"{'present' if info['chat_template'] else 'absent'}",
        ),
    ]
    for group, types in info["tensor_types"].items():
        parts = [f"{t} {_count(v['params'])} params {_size(v['bytes'])}" for t, v in types.items()]
        rows.append((f"  {group}", "; ".join(parts)))
    rows.append(("check", info["check"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k.ljust(width)}  {v}")


@models.command("fit")
@click.argument("model")
@click.option(
    "--ctx",
    "n_ctx",
    type=int,
    default=None,
    help=f"Context size in tokens (default {DEFAULT_CTX}, 0 = the model's trained context).",
)
@click.option(
    "--n-gpu-layers",
    type=int,
    default=None,
    help="Evaluate this many GPU layers (-1 = all) instead of suggesting.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fit_cmd(model: str, n_ctx: int | None, n_gpu_layers: int | None, as_json: bool) -> None:
    """Will MODEL fit this machine's RAM/VRAM? Suggests n_gpu_layers and the context that fits."""
    from edge_guard.registry import resolve
    from edge_guard.registry.fit import fit_report

    rep = fit_report(resolve(model).path, n_ctx, n_gpu_layers=n_gpu_layers)
    if as_json:
        _dump(rep)
        return
    gpus = ", ".join(f"{g['name']} {_size(g['free'])} free" for g in rep["gpus"]) or "none found"
    click.echo(
        f"model      {rep['path']} ({_size(rep['weights_bytes'])} of weights, {rep['n_layer']} layers)"
    )
    click.echo(
        f"kv cache   {rep['kv_bytes_per_token'] / 1024:.1f} KiB/token -> {_size(rep['kv_bytes'])} "
        f"at n_ctx={rep['n_ctx']} (trained {rep['n_ctx_train']}, swa_full={rep['swa_full']})"
    )
    click.echo(
        f"ram        {_size(rep['ram_needed'])} needed, {_size(rep['ram_available'])} available ({rep['ram_source']})"
    )
    click.echo(f"vram       {_size(rep['vram_needed'])} needed; GPUs: {gpus}")
    click.echo(
        f"suggest    n_gpu_layers={rep['n_gpu_layers']} (offload {rep['offload']}), "
        f"largest context that fits: {rep['max_ctx']}"
    )
    click.echo("fits       yes" if rep["fits"] else f"fits       NO: {rep['reason']}")


@models.command("add")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--id", "model_id", required=True, help="Id to register it under (name:tag).")
@click.option("--force", is_flag=True, help="Replace an existing registration with this id.")
def add_cmd(path: str, model_id: str, force: bool) -> None:
    """Register a local GGUF file under an id (the file stays where it is)."""
    from edge_guard.registry.manage import add_local

    rec = add_local(path, model_id, force=force)
    click.echo(f"registered {model_id} -> {rec['path']} (sha256 {rec['sha256'][:16]}…)")


@models.command("rm")
@click.argument("model")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm_cmd(model: str, yes: bool) -> None:
    """Remove a downloaded model's file, or a `models add` registration (its file is kept)."""
    from edge_guard.registry.manage import removal_plan, remove_model

    plan = removal_plan(model)
    if not yes:
        if not sys.stdin.isatty():
            from edge_guard.errors import EdgeGuardError

            raise EdgeGuardError(f"{plan['question']} — pass --yes to confirm")
        click.confirm(plan["question"], default=False, abort=True)
    click.echo(remove_model(plan))


@models.command("path")
@click.argument("model")
def path_cmd(model: str) -> None:
    """Print MODEL's local file path (fails if it is not on disk)."""
    from edge_guard.registry import resolve

    click.echo(str(resolve(model).path))


@models.command("synth")
@click.argument("preset")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, help="Random seed for the weights.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def synth(preset: str, out: str, seed: int, force: bool) -> None:
    """Write a synthetic random-weight gpt-oss GGUF (presets: tiny, tiny-o200k, mini, 20b-shape)."""
    import os

    from edge_guard.errors import EdgeGuardError
    from edge_guard.registry.synth import PRESETS, write_synthetic_model

    if preset not in PRESETS:
        raise EdgeGuardError(f"unknown preset {preset!r} (choose {', '.join(PRESETS)})")
    if os.path.exists(out) and not force:
        raise EdgeGuardError(f"{out} exists (use --force to overwrite)")
    t0 = time.perf_counter()
    write_synthetic_model(out, preset, seed=seed)
    size = os.path.getsize(out)
    click.echo(
        f"wrote {out} ({preset}, seed {seed}, {size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s"
    )


from edge_guard.cli.quantize_cmd import quantize  # noqa: E402 - `models quantize`

models.add_command(quantize)
