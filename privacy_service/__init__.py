"""privacy-service: keeps a digital wallet's privacy promises in practice."""

__version__ = "0.1.0"
