"""kf_core: knowledge factorization engine (placeholder public API; filled in below)."""
