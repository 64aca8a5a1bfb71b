"""Reward fine-tuning algorithms as Lightning modules, registered by name (``registry``): the
shared module (``base``) and config sections (``config``), DDPO and AlignProp, their pure losses,
checkpointing, logging and the ``train`` runner."""
