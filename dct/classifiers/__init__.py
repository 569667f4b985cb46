"""Frozen image classifiers for DCT guidance and evaluation, loaded from one spec string.

    from dct.classifiers import load_classifier, resolve_class
    clf = load_classifier("timm:/models/resnet50_folder", device="cuda")
    logits = clf(images)                 # images: (B, 3, H, W) in [0, 1], any size; differentiable
    target = resolve_class(clf, "goldfinch")

Spec grammar (`<family>:<target>`; the family prefix is case-insensitive):

    timm:<name>                 timm registry model with its pretrained weights, from the local hub / torch
                                cache (or a download when online); offline and uncached -> ModelNotFoundError
    timm:<name>@<weights file>  timm architecture <name> (optionally <name>.<tag>, whose pretrained_cfg gives
                                the preprocessing) with local weights: .safetensors, or .pth/.pt/.bin read
                                with torch.load(weights_only=True); the class count is read from the file
    timm:<folder>               timm local-dir folder: config.json (with 'architecture') + model.safetensors,
    timm:local-dir:<folder>     as written by timm.models.save_for_hf
    hf:<hub id or folder>       transformers AutoModelForImageClassification + its AutoImageProcessor config
    hf-vitmae:<hub id or folder>  ViT-MAE encoder with the mean-pool head (patch tokens, CLS excluded ->
                                LayerNorm -> Linear) of the DCT paper's CUB / iNat classifiers
                                (vesteinn/vit-mae-cub, vesteinn/vit-mae-inat21)
    torchvision:<name>          torchvision classification model with its DEFAULT weights (torch hub cache or
                                a download when online)
    torchvision:<name>@<weights file>  the architecture with a local state dict
    file:<path>                 a whole model in one file: a TorchScript archive, or a pickled nn.Module
                                (refused with UnsafeWeightsError unless trust_pickle=True: unpickling runs
                                arbitrary code); optional sidecar <path>.json gives preprocessing and labels
    ensemble:<spec>,<spec>[,...]  mean of the members' log-softmax over a shared label set
    world:<name>                a classifier of the embedded tiny world (dct.world.paths.classifier_dir)

A folder wins over a hub id of the same spelling. Weights files never run code: safetensors, or
torch.load(weights_only=True); a file that needs full unpickling raises UnsafeWeightsError unless
`trust_pickle=True`. Errors (dct.errors) name the bad value and what is accepted, and come before any model
is built. New families: `register_family(prefix, loader)`.
"""

from .base import Classifier
from .ensemble import EnsembleClassifier
from .labels import resolve_class
from .preprocess import Preprocess, Preprocessing
from .registry import CLASSIFIER_FAMILIES, load_classifier, register_family

__all__ = [
    "CLASSIFIER_FAMILIES",
    "Classifier",
    "EnsembleClassifier",
    "Preprocess",
    "Preprocessing",
    "load_classifier",
    "register_family",
    "resolve_class",
]
