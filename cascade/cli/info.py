"""`cascade info`: the machine as Cascade sees it and what it chooses to run there.

What to paste into a bug report or beside a benchmark figure: the CPU and its fast-math flags, the runtimes,
the device and precision models will run in (and why), the cross-encoder backend measured here for each model
(`cascade.models.backends`), and where each default model's weights come from.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import asdict

from cascade.cli.format import print_json


def precision_choice() -> dict:
    """Device, compute precision and threads a model loaded with the defaults gets, with the reason."""
    import torch

    from cascade.models.runtime import PRECISION_ENV, autocast_dtype, cpu_has_fast_bf16, pick_device

    device = pick_device(None)
    dtype = autocast_dtype(device)
    if os.environ.get(PRECISION_ENV, "auto") != "auto":
        why = f"{PRECISION_ENV}={os.environ[PRECISION_ENV]}"
    elif device.type == "cuda":
        why = "CUDA"
    elif cpu_has_fast_bf16():
        from cascade.models.verdicts import precision_verdict

        why = f"the CPU has bf16 matmul units (AMX or AVX512-BF16); measured here: {precision_verdict().why}"
    else:
        why = "no bf16 matmul units on this CPU: bf16 would be slower than fp32"
    return {"device": str(device), "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
            "why": why, "threads": torch.get_num_threads()}


def model_sources() -> dict[str, str]:
    """Each default model's local folder, or what loading it would do."""
    from cascade.models.hub import BUNDLED_RERANKERS, DEFAULT_ENCODER, bundled_path

    return {name: str(bundled_path(name) or "not installed (would be fetched from the hub by id)")
            for name in (*BUNDLED_RERANKERS, DEFAULT_ENCODER)}


def cmd_info(args: argparse.Namespace) -> None:
    from cascade._version import __version__
    from cascade.machine import describe

    machine = describe()
    from cascade.models.backends import BACKEND_ENV
    from cascade.models.verdicts import PRECISION, forget, here

    if args.remeasure:
        print(f"forgot {forget()} measured verdict(s) for this machine: the next model load measures again",
              file=sys.stderr)
    compute = precision_choice()  # measures the precision first where --remeasure forgot it
    measured = {model: asdict(verdict) for model, verdict in here().items()}
    report = {"cascade": __version__, "machine": machine, "compute": compute, "models": model_sources(),
              "backends": {"forced": os.environ.get(BACKEND_ENV) or None, "measured": measured}}
    if args.json:
        print_json(report)
        return
    skip = ("cpu", "cores", "flags", "isa_cap", "python")
    runtimes = {k: v for k, v in machine.items() if k not in skip}
    print(f"cascade {__version__} (Python {machine['python']})")
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores")
    capped = f" (capped at {machine['isa_cap']} by ONEDNN_MAX_CPU_ISA)" if machine["isa_cap"] else ""
    print(f"speed flags: {' '.join(machine['flags']) or 'none found'}{capped}")
    print(f"models run on: {compute['device']}, {compute['precision']}, {compute['threads']} threads "
          f"({compute['why']})")
    print("runtimes: " + "; ".join(f"{name} {version or 'not installed'}" for name, version in runtimes.items()))
    for name, source in report["models"].items():
        print(f"{name}: {source}")
    backends = report["backends"]
    if backends["forced"]:
        print(f"model backend: {backends['forced']} ({BACKEND_ENV})")
    for model, verdict in backends["measured"].items():
        if model == PRECISION:
            continue  # shown with the compute line above
        what = "bi-encoder passages" if model.startswith("encoder:") else "cross-encoder"
        print(f"{what} backend for {model.removeprefix('encoder:')}: {verdict['choice']} ({verdict.get('why')})")
    if not set(backends["measured"]) - {PRECISION}:
        print("model backends: chosen by a short measurement the first time a model loads (none yet here)")
