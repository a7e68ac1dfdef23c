"""First-stage retrieval, NumPy/FAISS only: lexical (`bm25`), dense search over stored vectors (`dense`),
their fusion (`hybrid`), shards (`shards`), top-k (`topk`) and the late-interaction token store (`tokens`).

Import from the modules: this package imports nothing, so a light import (settings, the CLI's parser)
does not load BM25 or FAISS.
"""
