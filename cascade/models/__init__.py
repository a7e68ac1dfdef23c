"""Every model Cascade runs, and where its weights come from.

`hub` resolves a name to weights (local folder, bundled copy, HF cache, hub); `runtime` is the one helper
that loads and runs any transformer (device, precision, per-item padding); `bi_encoder` and
`token_encoder` are the first stage's and late interaction's encoders. The cross-encoder, a reranker with
`predict`/`rank`, lives in `cascade.rerank` and loads through `runtime` too.
"""
