"""The torch layer: the compiler of eq. 5–6, generators, adaptive λ, training and diagnostics."""
