"""Evaluation: quality (perplexity, QA EM/F1, retrieval recall/MRR) and end-to-end RAG latency under load,
written as JSON reports (``toolkit eval``) and compared side by side with release gates (``toolkit compare``).
"""
