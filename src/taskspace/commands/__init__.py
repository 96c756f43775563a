"""Commands: one module each, a config dataclass and ``main(cfg)`` composing the capability
libraries, the run layer (:mod:`taskspace.runs`) and the report layer."""
