"""Hand computation vs the model: attention weights, attention output and layer output, per layer."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from labkit.attention.extract import adapter_state, run_with_hooks
from labkit.attention.hand import HandLayer, hand_layer


def _diffs(hand: HandLayer, cap, layer: int) -> dict[str, float]:
    return {
        "attn_weights": (hand.attn_weights - cap.attn_weights[layer][0]).abs().max().item(),
        "attn_out": (hand.attn_out - cap.attn_out[layer][0]).abs().max().item(),
        "layer_out": (hand.layer_out - cap.layer_out[layer][0]).abs().max().item(),
    }


def compare_layer(model: nn.Module, input_ids: torch.Tensor, layer: int,
                  adapter: bool | None = None) -> tuple[HandLayer, dict[str, float]]:
    """Run the model (eager) and the hand computation on the same layer input; max |hand - model| per quantity."""
    input_ids = torch.as_tensor(input_ids).reshape(1, -1)
    with adapter_state(model, adapter):
        cap = run_with_hooks(model, input_ids, [layer])
        hand = hand_layer(model, layer, cap.layer_in[layer])
    return hand, _diffs(hand, cap, layer)


def compare_model(model: nn.Module, input_ids: torch.Tensor, layers=None,
                  adapters=(None,)) -> pd.DataFrame:
    """One row per (adapter state, layer) with the max abs differences; adapters e.g. (True, False) for PEFT.

    One forward pass per adapter state records every chosen layer; each layer is then computed by hand
    from its recorded input.
    """
    from labkit.attention.hand import decoder_layers

    layers = list(range(len(decoder_layers(model))) if layers is None else layers)
    input_ids = torch.as_tensor(input_ids).reshape(1, -1)
    rows = []
    for adapter in adapters:
        with adapter_state(model, adapter):
            cap = run_with_hooks(model, input_ids, layers)
            for layer in layers:
                diffs = _diffs(hand_layer(model, layer, cap.layer_in[layer]), cap, layer)
                label = {None: "as loaded", True: "on", False: "off"}[adapter]
                rows.append({"adapter": label, "layer": layer, **diffs})
    return pd.DataFrame(rows)
