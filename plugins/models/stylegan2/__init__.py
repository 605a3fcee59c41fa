"""StyleGAN2 (Karras et al. 2020), ``model.name = "stylegan2"``: :mod:`.family` registers it."""
