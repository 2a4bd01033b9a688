"""Factorization jobs: submit (validate and enqueue), spec (recipe from a request), runners (RQ or inline),
worker (`kf worker`), run (one job, by id), progress (the training callback) and register (the factor set).
"""
