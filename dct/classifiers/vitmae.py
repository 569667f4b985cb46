"""The ViT-MAE classifiers of the DCT paper's CUB and iNat experiments (vesteinn/vit-mae-cub,
vesteinn/vit-mae-inat21): a ViT-MAE encoder fine-tuned with a mean-pool head.

Their checkpoints hold a ViT encoder (`vit.embeddings.*`, `vit.encoder.layer.*`, `vit.layernorm.*`) and a
`classifier` Linear, exactly the key set of transformers' ViTForImageClassification, but the head is
different: the final hidden states of the patch tokens are averaged (the CLS token excluded), then
`vit.layernorm`, then `classifier`. A stock CLS-token head applies the same LayerNorm to the CLS token
instead and predicts something else. The reference code (idansc/discriminative_class_tokens, vitmae.py)
loads them the same way.

Why a ViT and not transformers' ViTMAEModel with mask_ratio=0: ViTMAE still draws random noise to shuffle
the patches (consuming the global RNG that seeds DCT's latents), and since self-attention without
positional terms is permutation-equivariant, the mean over shuffled patches equals the unshuffled mean; the
weights (including MAE's fixed sin-cos position table, stored in the checkpoint) load unchanged.
"""

from __future__ import annotations

import torch
from transformers import ViTForImageClassification
from transformers.modeling_outputs import ImageClassifierOutput


class MeanPoolViTForImageClassification(ViTForImageClassification):
    """ViTForImageClassification's modules and checkpoint keys, with the mean-pool head."""

    def pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # hidden_states[-1] is the last block's output before the final LayerNorm
        hidden = self.vit(pixel_values, output_hidden_states=True).hidden_states[-1]
        return self.vit.layernorm(hidden[:, 1:].mean(dim=1))

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> ImageClassifierOutput:
        return ImageClassifierOutput(logits=self.classifier(self.pooled(pixel_values)))
