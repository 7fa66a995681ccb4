"""facefactors: learn, measure, compose and edit disentangled face representations."""

__version__ = "0.1.0"
