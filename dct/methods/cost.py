"""What a method costs, in the units a user pays: images generated before the first useful image
(selection or training rollouts), labelled real images, one-time seconds, seconds per generated image,
and the total for N images of one class,

    cost(N) = one_time_seconds_per_class + N * seconds_per_image.

A trained or selected method pays its one-time cost once per class and then samples at the plain
prompt's speed (plus its token, which costs nothing); classifier guidance pays at every image.
"""

from __future__ import annotations

COST_N = (100, 10_000)


def cost_of_n(one_time_s: float, s_per_image: float, n: int) -> float:
    return float(one_time_s) + n * float(s_per_image)


def cost_columns(*, one_time_s: float, s_per_image: float, images_consumed: float, labelled_images: float,
                 ns=COST_N) -> dict:
    """Per class: the cost metrics a methods cell stores (cost_<N>_s for every N in `ns`)."""
    out = {"one_time_s_per_class": float(one_time_s), "s_per_image": float(s_per_image),
           "images_consumed_per_class": float(images_consumed), "labelled_images_per_class": float(labelled_images)}
    out.update({f"cost_{n}_s": cost_of_n(one_time_s, s_per_image, n) for n in ns})
    return out

