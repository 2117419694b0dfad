"""Attention: the derivation by hand (hand), extraction from models (extract), hand vs model (check), per-head
statistics (stats), figures, the explorer widget, and loading for notebook 05 (load)."""
