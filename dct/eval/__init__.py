"""Evaluation of generated images: classifier accuracy with bootstrap intervals, and FID/KID.

    from dct.eval import accuracy_report, classify, compare, fid_kid
    from dct.generate import generate_images, evaluate_prompts

`dct eval` (dct/eval/cli.py) runs both for a learned token against its plain prompt on the same seeds.
"""

from .accuracy import accuracy_report, classify, compare, strip_images
from .fid import classifier_hash, fid_kid, register_classifier

__all__ = ["accuracy_report", "classify", "compare", "strip_images", "fid_kid", "register_classifier",
           "classifier_hash"]
