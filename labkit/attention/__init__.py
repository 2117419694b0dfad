"""Attention: the derivation by hand (hand), extraction from models (extract), the check (check), figures, explorer."""
