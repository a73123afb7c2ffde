"""Adam's settings, the same in both experiments (torch's defaults): the toy models' hand-written batched Adam
(kdsae_core.toy.model) and the SAEs' torch.optim.Adam (kdsae_core.sae.model)."""

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
