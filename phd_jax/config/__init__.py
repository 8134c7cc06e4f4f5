"""A run's config: its defaults, their validation and the upgrade of configs saved earlier."""
from phd_jax.config.defaults import default_config
from phd_jax.config.upgrade import upgrade
from phd_jax.config.validate import (
                                     model_spec,
                                     phd_spec,
                                     resolve_vocab_size,
                                     validate_config,
)

__all__ = ["default_config", "model_spec", "phd_spec", "resolve_vocab_size", "upgrade",
           "validate_config"]
