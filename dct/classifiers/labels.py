"""Class names, and turning a user's class (index or name) into an index.

ImageNet-1k models get the full WordNet synonym strings ("tench, Tinca tinca") that timm ships offline, so
that timm, torchvision and transformers models agree on one label list and can be ensembled.
"""

from __future__ import annotations

import difflib
import functools
import operator
import re

from dct.errors import ClassNotFoundError

_HF_DEFAULT_LABEL = re.compile(r"LABEL_(\d+)")


def generic_labels(n: int) -> list[str]:
    return [f"class_{i}" for i in range(n)]


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...] | None:
    """The 1000 ImageNet-1k class descriptions in the standard index order, from files inside timm."""
    try:
        from timm.data import ImageNetInfo

        return tuple(ImageNetInfo("imagenet-1k").label_descriptions())
    except Exception:  # an old or trimmed timm: torchvision's short names are the next best offline source
        try:
            from torchvision.models._meta import _IMAGENET_CATEGORIES

            return tuple(_IMAGENET_CATEGORIES)
        except Exception:
            return None


def hf_labels(config) -> tuple[list[str], str]:
    """Names from a transformers config's id2label; its auto-generated LABEL_i become class_i."""
    n = int(config.num_labels)
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    names = [id2label.get(i, f"class_{i}") for i in range(n)]
    if all(_HF_DEFAULT_LABEL.fullmatch(name) for name in names):
        return generic_labels(n), "generic (config.id2label holds only LABEL_i placeholders)"
    return names, "config.id2label"


def _synonyms(label: str) -> list[str]:
    return [s.strip() for s in label.lower().split(",") if s.strip()]


def resolve_class(classifier, cls) -> int:
    """Index of `cls` in `classifier.labels`.

    An int (or digit string) must lie in 0..num_classes-1. A name is matched case-insensitively: the whole
    label, then one of its comma-separated synonyms, then a unique synonym prefix, then a unique substring.
    Ambiguous or unknown names raise ClassNotFoundError listing candidates.
    """
    labels = list(classifier.labels)
    n = len(labels)
    where = f"classifier {getattr(classifier, 'spec', '?')!r} ({n} classes, indices 0..{n - 1})"
    if isinstance(cls, bool):
        raise ClassNotFoundError(f"class {cls!r} is a bool, not an index or a name; {where}")
    if isinstance(cls, str) and re.fullmatch(r"\s*[+-]?\d+\s*", cls):
        cls = int(cls)
    if not isinstance(cls, str):
        try:
            index = operator.index(cls)  # int and integer-like numpy scalars
        except TypeError:
            raise ClassNotFoundError(f"class {cls!r} is neither an index nor a name; {where}") from None
        if not 0 <= index < n:
            raise ClassNotFoundError(f"class index {index} is out of range for {where}")
        return index

    query = cls.strip().lower()
    if not query:
        raise ClassNotFoundError(f"empty class name for {where}")
    synonyms = [_synonyms(label) for label in labels]
    matchers = (
        ("label", lambda i: labels[i].strip().lower() == query),
        ("synonym", lambda i: query in synonyms[i]),
        ("synonym prefix", lambda i: any(s.startswith(query) for s in synonyms[i])),
        ("substring", lambda i: any(query in s for s in synonyms[i])),
    )
    for kind, matches in matchers:
        hits = [i for i in range(n) if matches(i)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            shown = ", ".join(f"{i}: {labels[i]!r}" for i in hits[:10])
            more = f" and {len(hits) - 10} more" if len(hits) > 10 else ""
            raise ClassNotFoundError(f"class name {cls!r} is ambiguous ({kind} of {len(hits)} classes: "
                                     f"{shown}{more}); pass an index instead. {where}")
    pool = sorted({s for syn in synonyms for s in syn})
    close = difflib.get_close_matches(query, pool, n=5, cutoff=0.5)
    hint = f"; close names: {', '.join(repr(c) for c in close)}" if close else ""
    raise ClassNotFoundError(f"class name {cls!r} not found in {where}{hint}")
