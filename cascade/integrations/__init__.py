"""Cascade inside the RAG frameworks users already have: LangChain and LlamaIndex retrievers and rerankers.

Each module imports its framework lazily and names the extra to install when it is missing.
"""
