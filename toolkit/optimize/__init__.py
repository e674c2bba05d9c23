"""``toolkit optimize``: the fastest RAG configuration within a latency SLO and a quality budget (issue 17)."""
