"""The closed-form teachers of ``consistency.methods.components.teachers``: the widened-mixture oracle
(``teacher.oracle_std_scale``), an imperfect teacher whose error is known in closed form."""
from __future__ import annotations

import os

import numpy as np
import pytest

from consistency import config as config_lib
from consistency.core.errors import ConfigError
from consistency.methods.components import teachers
from consistency.run import train
from consistency.tools.recipes import load_config_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def toy_teacher_config(data: str = "toy:gaussian1d", oracle: str = "mixture", scale: float = 1.0):
    c = load_config_file(os.path.join(REPO, "configs/toy_mcm_ve.py"))
    c.data.name, c.data.toy_size = data, 1000
    c.teacher.oracle, c.teacher.oracle_std_scale = oracle, scale
    return c


@pytest.mark.parametrize("scale", [1.0, 2.0, 0.5])
def test_widened_single_gaussian_oracle_is_the_closed_form_posterior_mean(scale):
    # gaussian1d is N(0.7, 0.3²); its teacher with stds × s is the exact denoiser of N(0.7, (0.3 s)²):
    # D(x; σ) = μ + v / (v + σ²) (x − μ) with v = (0.3 s)²  (docs/methods.md §15 O2).
    c = toy_teacher_config(scale=scale)
    params, apply = teachers.load_teacher(c, train.build_dataset(c))
    x = np.linspace(-3.0, 3.0, 13, dtype=np.float32)[:, None]
    v = (0.3 * scale) ** 2
    for sigma in (0.01, 0.3, 2.0, 80.0):
        expected = 0.7 + v / (v + sigma ** 2) * (x - 0.7)
        got = np.asarray(apply(params, x, np.full((13,), sigma, np.float32)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_widened_mixture_scales_only_the_stds():
    c = toy_teacher_config(data="toy:8gaussians", scale=2.0)
    dataset = train.build_dataset(c)
    w, m, s = teachers.oracle_mixture(c, dataset)
    w0, m0, s0 = dataset.mixture
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(m, m0)
    np.testing.assert_allclose(s, 2.0 * np.asarray(s0))
    assert np.allclose(s0, 0.1)   # the data itself is untouched: the toy's own stds


@pytest.mark.parametrize("oracle,scale,match", [
    ("mixture", 0.0, r"^config\.teacher\.oracle_std_scale: 0\.0 is not a finite number > 0"),
    ("mixture", -1.0, r"^config\.teacher\.oracle_std_scale: -1\.0 is not a finite number > 0"),
    ("mixture", float("inf"), r"^config\.teacher\.oracle_std_scale: inf is not a finite number > 0"),
    ("empirical", 2.0, r"^config\.teacher\.oracle_std_scale: 2\.0 widens the 'mixture' oracle"),
])
def test_bad_std_scale_is_one_config_error_line(oracle, scale, match):
    c = toy_teacher_config(data="toy:8gaussians", oracle=oracle, scale=scale)
    with pytest.raises(ConfigError, match=match) as error:
        config_lib.validate(c)
    assert "\n" not in str(error.value)
