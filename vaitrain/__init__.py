"""vaitrain: train, evaluate and benchmark image networks; every lecture choice is a config switch."""
__version__ = "0.1.0"
