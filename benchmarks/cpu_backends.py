"""Which CPU backend runs the bundled cross-encoder fastest on this machine, at what quality (issue 19's probe).

    python benchmarks/cpu_backends.py [--queries 100] [--model cascade-reranker]

The same weights, the hybrid top 30 of each of --queries SciFact test queries, one call per query, measured in
one run: torch fp32 (the baseline), torch bf16 (Cascade's default where the CPU has AMX or AVX512-BF16), ONNX
Runtime fp32 and dynamic int8, OpenVINO (its default precision hint, which is bf16 on AMX CPUs), and OpenVINO
int8 quantised statically by NNCF, calibrated on SciFact *train* queries' pairs. Pairs are
tokenised once (max length 256, padded per call to the longest pair, as an exported graph takes them), so the
rows time the model alone. Quality: nDCG@10 of the reranked order (reranker alone) and the largest score change
against fp32. Needs `pip install onnxruntime openvino onnx nncf` (not dependencies of Cascade: this measures whether
they should become one). Writes benchmarks/results/cpu-backends.{json,md} and the README table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import DATA, machine, publish
from rerank_latency import ndcg_of, timed_calls

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export(model, path: Path) -> None:
    """The model as ONNX with dynamic batch and sequence axes (the TorchScript exporter: stable for BERT)."""
    import torch

    dummy = {k: torch.ones((2, 16), dtype=torch.long) for k in INPUTS}
    torch.onnx.export(model, (dummy["input_ids"], dummy["attention_mask"], dummy["token_type_ids"]), str(path),
                      input_names=list(INPUTS), output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={**{k: {0: "batch", 1: "tokens"} for k in INPUTS}, "logits": {0: "batch"}})


def tokenized(cascade, tokenizer, query: str, candidates) -> dict:
    """One query's pairs with its candidates, as the exported graph takes them (padded to the longest pair)."""
    batch = dict(tokenizer([query] * len(candidates), [cascade.index.passages[int(i)].content for i in candidates],
                           truncation="longest_first", max_length=256, padding=True, return_tensors="np"))
    batch.setdefault("token_type_ids", np.zeros_like(batch["input_ids"]))
    return batch


def top30(cascade, query: str):
    """The hybrid first stage's top 30 for `query` (retrieve 150): what the reranker is given."""
    return cascade.run_stages(query, retrieve=150, rerank_depth=0).fusion[0][:30]


def pairs_of(cascade, tokenizer, split, n: int) -> list[dict]:
    """Calibration inputs for static int8: the hybrid top 30 of the first `n` queries of a training split."""
    return [tokenized(cascade, tokenizer, split.queries[q], top30(cascade, split.queries[q]))
            for q in list(split.queries)[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100, help="SciFact test queries (100)")
    parser.add_argument("--model", default="cascade-reranker", help="cross-encoder (default: the bundled one)")
    parser.add_argument("--calibration", type=int, default=30,
                        help="SciFact train queries whose top-30 pairs calibrate static int8 (30)")
    args = parser.parse_args()

    import nncf
    import onnxruntime as ort
    import openvino as ov
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from cascade.evaluate.beir import load_split
    from cascade.evaluate.runner import open_cascade
    from cascade.models.hub import resolve

    data = DATA / "scifact"
    split = load_split(data, "test")
    qids = list(split.queries)[: args.queries]
    cascade = open_cascade(data, None, None, progress=False)
    candidates = [top30(cascade, split.queries[q]) for q in qids]
    path = resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    batches = [tokenized(cascade, tokenizer, split.queries[q], c) for q, c in zip(qids, candidates)]
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()

    def torch_run(dtype):
        def run(b):
            with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                return model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.float().reshape(-1).numpy()
        return run

    runners = {"torch fp32 (baseline)": torch_run(None), "torch bf16 autocast": torch_run(torch.bfloat16)}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        export(model, fp32)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
        options = ort.SessionOptions()
        for name, file in (("ONNX Runtime fp32", fp32), ("ONNX Runtime int8 (dynamic)", int8)):
            session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
            runners[name] = lambda b, s=session: s.run(["logits"], {k: v.astype(np.int64) for k, v in b.items()})[0]\
                .reshape(-1)
        core = ov.Core()
        compiled = core.compile_model(str(fp32), "CPU")
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # bf16 on AMX CPUs, else f32
        runners[f"OpenVINO ({hint})"] = lambda b, m=compiled: m({k: v.astype(np.int64) for k, v in b.items()})[0]\
            .reshape(-1)
        calibration = [{k: v.astype(np.int64) for k, v in b.items()} for b in pairs_of(
            cascade, tokenizer, load_split(data, "train"), args.calibration)]
        quantized = nncf.quantize(core.read_model(str(fp32)), nncf.Dataset(calibration),
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(calibration))
        int8_ov = core.compile_model(quantized, "CPU")
        runners["OpenVINO int8 (NNCF static, calibrated on SciFact train)"] = \
            lambda b, m=int8_ov: m({k: v.astype(np.int64) for k, v in b.items()})[0].reshape(-1)
        rows, reference = [], None
        for name, run in runners.items():
            ms, scores = timed_calls(run, batches)
            reference = reference or scores
            drift = max(float(np.abs(s - r).max()) for s, r in zip(scores, reference))
            row = {"backend": name, "p50_ms": round(float(np.percentile(ms, 50)), 1),
                   "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_score_change": round(drift, 4),
                   "ndcg@10": round(ndcg_of(cascade, split, qids, candidates, scores), 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = rows[0]["p50_ms"]
    for row in rows:
        row["speedup_vs_fp32"] = round(base / row["p50_ms"], 2)
    info = machine()
    lines = [f"Bundled cross-encoder, hybrid top 30 of {len(qids)} SciFact test queries, one call per query, pairs "
             f"pre-tokenised (max length 256); {info['cpu']} ({', '.join(info['flags'])}); onnxruntime "
             f"{info['onnxruntime']}, openvino {info['openvino']}, torch {info['torch']}.", "",
             "| backend | p50 ms / 30 pairs | p95 ms | speed-up over torch fp32 | nDCG@10 (reranker alone) | "
             "largest score change vs fp32 |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['backend']} | {r['p50_ms']} | {r['p95_ms']} | {r['speedup_vs_fp32']}x | {r['ndcg@10']:.4f} | "
              f"{r['max_score_change']} |" for r in rows]
    publish("cpu-backends", {"machine": info, "queries": len(qids), "rows": rows}, "\n".join(lines) + "\n",
            marker="cpu-backends")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
