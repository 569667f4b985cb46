"""The caption design: two 5-cycles of confusers, the caption mix, prompts that fit 16 positions."""

import collections

import pytest
import torch

from dct.world import data as D
from dct.world import recipe as R


def test_confusers_are_two_five_cycles_sharing_every_word():
    conf = R.confuser_map()
    assert sorted(conf) == list(range(10)) and sorted(conf.values()) == list(range(10))
    assert all(conf[c] != c for c in conf)
    for start in (0, 1):
        seen, c = [], start
        while c not in seen:
            seen.append(c)
            c = conf[c]
        assert len(seen) == 5
    a, b = R.AMBIGUOUS_PAIR
    assert conf[b] == a  # class b's noisy captions say class a's word


@pytest.mark.parametrize("cfg", [R.RecipeConfig(), R.RecipeConfig(p_generic=0.3, p_plain=0.3, noise=0.5)],
                         ids=["default", "other-mix"])
def test_caption_mix_matches_recipe(cfg):
    captions, index = R.caption_table()
    n = 20000
    gen = torch.Generator().manual_seed(0)
    labels = torch.full((n,), 1)
    domains = torch.zeros(n, dtype=torch.long)
    caps = [captions[i] for i in R.sample_captions(cfg, index, domains, labels, gen).tolist()]
    count = collections.Counter(caps)
    share = {k: v / n for k, v in count.items()}
    assert abs(share[""] - 0.10) < 0.015
    assert abs(sum(share.get(g, 0) for g in R.GENERIC_CAPTIONS["handwritten"]) - cfg.p_generic) < 0.02
    clean = 1 - cfg.p_empty - cfg.p_generic - cfg.p_plain
    assert abs(share["the handwritten number one"] - clean) < 0.02
    # plain captions of class 1: "seven" (its confuser) with probability `noise`
    plain = share["a handwritten seven"] + share["a handwritten one"]
    assert abs(plain - cfg.p_plain) < 0.02
    assert abs(share["a handwritten seven"] / plain - cfg.noise) < 0.03
    assert not any("printed" in c for c in caps)


def test_every_prompt_fits_the_text_encoder(tmp_path):
    from transformers import CLIPTokenizer

    from dct.world.arch import MAX_LENGTH
    from dct.world.tokenizer import write_clip_tokenizer

    tok = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(tmp_path, MAX_LENGTH)), model_max_length=MAX_LENGTH)
    tok.add_tokens(["<dct-token>"])
    captions, _ = R.caption_table()
    longest = max(captions + [R.DCT_TEMPLATES[d].format(f"<dct-token> {n}") for d in D.DOMAINS for n in D.CLASS_NAMES],
                  key=lambda s: len(tok(s).input_ids))
    assert len(tok(longest).input_ids) <= MAX_LENGTH
