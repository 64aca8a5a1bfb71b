"""Sampling: the DDIM step with log-probabilities and the trajectory sampler shared by DDPO and AlignProp."""
