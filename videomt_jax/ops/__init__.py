"""The ground floor: what every stage uses (resize kernels with torch parity, label conventions).

Nothing here imports the rest of `videomt_jax`.
"""
