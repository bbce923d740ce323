"""SWIFT's matchness in an independent Hugging Face implementation, the
reference the in-engine scorer is checked against."""

import copy

import torch

from swift_vllm.skip_set import SkipSet


class HFMatchness:
    """The full model computes the K/V of each sequence up to its window;
    the skipped model then runs over the window on top of them, and the
    share of its argmaxes that equal the sequence's next token is the score."""

    def __init__(self, model_dir: str, windows: list[tuple[list[int], int]]) -> None:
        """``windows``: (token ids, first window position) per sequence; the
        window runs to the sequence's end."""
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.skip = SkipSet()
        for index, layer in enumerate(self.model.model.layers):
            layer.self_attn.register_forward_hook(self._zero_if(index, "attention"))
            layer.mlp.register_forward_hook(self._zero_if(index, "mlp"))
        self.windows = []  # (exact K/V of the context, window inputs, targets)
        with torch.no_grad():
            for sequence, start in windows:
                ids = torch.tensor([sequence])
                context = self.model(ids[:, :start], use_cache=True).past_key_values
                self.windows.append((context, ids[:, start:-1], ids[0, start + 1 :]))

    def _zero_if(self, index: int, kind: str):
        def hook(module, args, output):
            if index not in getattr(self.skip, kind):
                return output
            if isinstance(output, tuple):
                return (torch.zeros_like(output[0]), *output[1:])
            return torch.zeros_like(output)

        return hook

    @torch.no_grad()
    def __call__(self, skip: SkipSet) -> float:
        self.skip = skip
        hits = total = 0
        try:
            for context, inputs, targets in self.windows:
                logits = self.model(inputs, past_key_values=copy.deepcopy(context)).logits
                hits += int((logits[0].argmax(-1) == targets).sum())
                total += len(targets)
        finally:
            self.skip = SkipSet()
        return hits / total
