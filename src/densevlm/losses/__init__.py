"""Region-language alignment losses (:mod:`densevlm.losses.alignment`)."""

from densevlm.losses.alignment import METHODS, clipself_loss, decoupled_alignment_loss, kl_to_teacher, thing_mass_loss

__all__ = ["METHODS", "clipself_loss", "decoupled_alignment_loss", "kl_to_teacher", "thing_mass_loss"]
