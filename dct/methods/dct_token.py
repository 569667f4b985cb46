"""DCT as one of the methods: `dct.train.train_tokens` for a set of classes (a token bank in shared
rollouts, as the dct cell trains it), optionally inside per-class prompts (dct+prompt: the token trained in
the template prompt search chose for its class). Classes that chose the same template train in one bank;
each class's token is the one it would get alone (dct.train's docstring)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..token import ClassTokens


def train_dct_tokens(parts, guide, classes: Sequence[int], subjects: Sequence[str], cfg, *,
                     templates: Mapping[int, tuple[str, ...]], placeholder: str = "newclas") -> list:
    """One trained token per class (dct.train.TrainResult, in the order of `classes`): class c trains with
    `templates[c]`, its placeholder `<placeholder><c>`."""
    from ..train import train_tokens

    groups: dict[tuple[str, ...], list[int]] = {}
    for i, c in enumerate(classes):
        groups.setdefault(tuple(templates[c]), []).append(i)
    results = [None] * len(classes)
    for group_templates, members in groups.items():
        targets = [classes[i] for i in members]
        placeholders = [f"{placeholder}{c}" for c in targets]
        bank = ClassTokens(parts.tokenizer, parts.text_encoder, placeholders, cfg.init_word)
        try:
            out = train_tokens(parts, guide, targets, [subjects[i] for i in members], cfg,
                               templates=group_templates, tokens=bank, placeholders=placeholders, progress=False)
        finally:
            bank.remove()
        for i, r in zip(members, out):
            results[i] = r
    return results
