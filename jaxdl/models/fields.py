"""The kinds of constructor field the model files declare in their `FIELDS`.

A registered model lists every field a config may set in a class attribute
`FIELDS = {name: Field}` (`jaxdl.schema.Field`: type, choices, range), and config
validation checks each value against it before anything is written, so a bad activation
or dropout rate is one line instead of a traceback at the first step. The fields jaxdl
itself fills (`axis_name`, `dtype`) and `param_dtype` are not declared.
"""

from __future__ import annotations

from jaxdl.models.layers import ACTIVATIONS, POOLS
from jaxdl.schema import Field, fraction, non_negative, optional, positive

COUNT = Field(int, check=positive, help="a width, size or count: an int > 0")
COUNTS = Field(tuple, items=int, check=positive, help="one int > 0 per layer or axis")
OPTIONAL_COUNT = Field((int, type(None)), check=optional(positive), help="an int > 0 or None")
RATE = Field(float, check=fraction, help="a dropout rate, in [0, 1)")
BN_MOMENTUM = Field(float, check=fraction, help="Flax's convention: the weight of the old "
                                                "running average, in [0, 1)")
ACTIVATION = Field(str, choices=tuple(sorted(ACTIVATIONS)),
                   help="the nonlinearity after each hidden layer")
POOLING = Field(str, choices=tuple(sorted(POOLS)), help="the downsampling after each conv block")
BATCH_NORM = Field(bool, help="BatchNorm after each convolution (statistics synced over the "
                              "devices)")
BN_EPSILON = Field(float, check=positive, help="BatchNorm's epsilon, added to the variance "
                                               "(torchvision's: 1e-5)")
LEAKY_RELU_SLOPE = Field(float, check=non_negative,
                         help="the LeakyReLU's slope for negative inputs (DCGAN's: 0.2)")
SE_RATIO = Field(float, check=non_negative, help="squeeze-and-excitation: the bottleneck width "
                                                 "as a fraction of the channels; 0 = no SE")
ZERO_INIT_LAST_BN = Field(bool, help="start each residual branch's last BatchNorm scale at 0, "
                                     "so every block begins as the identity (Goyal et al. 2017)")
