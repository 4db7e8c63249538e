"""The names and the two published parameter tables."""

import pytest

from stabletrain.corruptions import CORRUPTIONS, HELD_OUT, PARAMETER_SETS, Corruption


def test_names_follow_the_paper_order():
    assert CORRUPTIONS == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                           "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                           "elastic_transform", "pixelate", "jpeg_compression")
    assert HELD_OUT == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert PARAMETER_SETS == ("imagenet", "cifar10")


PUBLISHED = {
    "imagenet": {
        "gaussian_noise": (.08, .12, .18, .26, .38), "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (.03, .06, .09, .17, .27), "speckle_noise": (.15, .2, .35, .45, .6),
        "gaussian_blur": (1, 2, 3, 4, 6), "contrast": (.4, .3, .2, .1, .05), "brightness": (.1, .2, .3, .4, .5),
        "jpeg_compression": (25, 18, 15, 10, 7), "pixelate": (.6, .5, .4, .3, .25),
    },
    "cifar10": {
        "gaussian_noise": (.04, .06, .08, .09, .10), "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (.01, .02, .03, .05, .07), "speckle_noise": (.06, .1, .12, .16, .2),
        "gaussian_blur": (.4, .6, .7, .8, 1), "contrast": (.75, .5, .4, .3, .15),
        "brightness": (.05, .1, .15, .2, .3), "jpeg_compression": (80, 65, 58, 50, 40),
        "pixelate": (.95, .9, .85, .75, .65),
    },
}


@pytest.mark.parametrize("parameter_set", PARAMETER_SETS)
def test_parameter_tables_hold_the_published_values(parameter_set):
    for name, values in PUBLISHED[parameter_set].items():
        assert tuple(Corruption(name, s, parameter_set).parameters for s in range(1, 6)) == pytest.approx(values)
    # zoom factors are the reference's np.arange, float quirks included (1.00 … 1.11 is 12 factors)
    counts = [len(Corruption("zoom_blur", s, parameter_set).parameters) for s in range(1, 6)]
    assert counts == ([12, 16, 11, 13, 11] if parameter_set == "imagenet" else [7, 12, 16, 21, 26])
    expected = (20, 15) if parameter_set == "imagenet" else (9, 2.5)
    assert Corruption("motion_blur", 5, parameter_set).parameters == expected
