"""Prompt search: no training. Each class gets the candidate template whose images its GUIDE classifies
best on a few SELECTION seeds; evaluation seeds are never generated here (`select_prompts` refuses any
overlap), so the choice cannot have looked at the images it is judged on.

Candidates (`candidate_templates`): the world's own templates (the plain "a handwritten {}" and the clean
"the handwritten number {}"), the paper's three training templates, and "a photo of a handwritten {}".
"{}" stands for the subject: the class name, or "<token> name" when a token is trained inside the
chosen prompt (dct+prompt). The guide is the same classifier DCT trains with: here it only chooses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..config import PAPER_TEMPLATES
from ..errors import ConfigError
from ..generate import generate_images


def candidate_templates(domain: str | None) -> list[str]:
    """Templates with one "{}" for the subject; with a world domain, the world's own come first."""
    if domain is None:
        return [*PAPER_TEMPLATES, "a photo of a {}"]
    from ..jobs import world_manifest

    t = world_manifest()["templates"]
    own = [t["dct"][domain], t["clean"].format(domain=domain, name="{}")]
    return list(dict.fromkeys([*own, *PAPER_TEMPLATES, f"a photo of a {domain} {{}}"]))


def select_prompts(parts, guide, classes: Sequence[int], subjects: Sequence[str], templates: Sequence[str],
                   seeds: Sequence[int], *, forbidden: Sequence[int] = (), **sampling) -> dict:
    """{"chosen": {class: template}, "scores": {class: [guide accuracy per template]}, "images": n}.

    Every class x template is generated on `seeds` (the selection seeds) and scored by `guide`; the best
    template per class wins, ties going to the earlier candidate. `forbidden` (the evaluation seeds) must
    not meet `seeds`."""
    from ..eval.accuracy import classify

    seeds = [int(s) for s in seeds]
    seen = sorted(set(seeds) & {int(s) for s in forbidden})
    if seen:
        raise ConfigError(f"prompt search would look at evaluation seeds {seen[:5]}: selection seeds must be "
                          "disjoint from the evaluation seeds")
    if not templates or not seeds:
        raise ConfigError("prompt search needs at least one template and one selection seed")
    scores = {c: [] for c in classes}
    targets = torch.tensor([c for c in classes for _ in seeds])
    for template in templates:
        prompts = [template.format(s) for s in subjects for _ in seeds]
        images = generate_images(parts, prompts, list(seeds) * len(classes), **sampling)
        correct = (classify(guide, images).argmax(-1) == targets).float().reshape(len(classes), len(seeds))
        for c, row in zip(classes, correct):
            scores[c].append(float(row.mean()))
    chosen = {c: templates[max(range(len(templates)), key=lambda i: (scores[c][i], -i))] for c in classes}
    return {"chosen": chosen, "scores": scores, "images": len(templates) * len(classes) * len(seeds)}
