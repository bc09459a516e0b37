"""The typed experiment config (:mod:`~itransfer.config.schema`), the paper's selection
constants that are its defaults, and the experiment YAMLs shipped in the package
(:mod:`~itransfer.config.packaged`)."""
