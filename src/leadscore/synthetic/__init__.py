"""A synthetic B2B funnel with known ground truth (see ``world`` for the story)."""

from leadscore.synthetic.generate import SynthConfig, generate
from leadscore.synthetic.truth import load_latent, true_probabilities

__all__ = ["SynthConfig", "generate", "load_latent", "true_probabilities"]
