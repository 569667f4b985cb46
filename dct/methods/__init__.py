"""DCT's alternatives: other ways to get images of a class from the same text-to-image model, each on the
one rollout (dct.rollout), so that a comparison measures the method and not a second sampler.

    prompt_search.py       no training: pick each class's prompt from a small template list by the GUIDE's
                           accuracy on selection seeds
    textual_inversion.py   a token learned from k real labelled images with the denoising loss
    guidance.py            no training: the guide's log-probability of the class on the predicted clean
                           image steers every sampling step (universal-guidance style)
    dct_token.py           DCT itself (dct.train) for a set of classes, optionally inside per-class prompts
    cost.py                what each method consumes, and the cost of N class images

bench/cells/methods.py runs them side by side on the same evaluation seeds and judge.
"""
