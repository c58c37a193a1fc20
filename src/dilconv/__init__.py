"""dilconv: exact, fast and visible dilated (atrous) convolution for NumPy, in 1-D, 2-D and 3-D."""

from dilconv._config import (
    config_context,
    get_config,
    get_workspace_limit,
    set_config,
    set_workspace_limit,
    workspace_limit,
)
from dilconv._kernel import dilate_kernel, effective_kernel_size
from dilconv._methods import METHODS as _METHODS
from dilconv._version import __version__
from dilconv.conv import (
    atrous_conv2d,
    choose_method,
    conv2d,
    output_shape,
    same_padding,
)
from dilconv.convnd import conv1d, conv3d
from dilconv.grad import conv2d_grad_bias, conv2d_grad_input, conv2d_grad_weight
from dilconv.gradnd import (
    conv1d_grad_bias,
    conv1d_grad_input,
    conv1d_grad_weight,
    conv1d_transpose,
    conv3d_grad_bias,
    conv3d_grad_input,
    conv3d_grad_weight,
    conv3d_transpose,
)
from dilconv.receptive import ReceptiveField, coverage, receptive_field
from dilconv.transpose import atrous_conv2d_transpose, conv2d_transpose

#: Names of the algorithms ``conv2d(method=...)`` accepts besides ``"auto"``.
METHODS: tuple[str, ...] = tuple(_METHODS)

__all__ = [
    "METHODS",
    "ReceptiveField",
    "__version__",
    "atrous_conv2d",
    "atrous_conv2d_transpose",
    "choose_method",
    "config_context",
    "conv1d",
    "conv1d_grad_bias",
    "conv1d_grad_input",
    "conv1d_grad_weight",
    "conv1d_transpose",
    "conv2d",
    "conv3d",
    "conv3d_grad_bias",
    "conv3d_grad_input",
    "conv3d_grad_weight",
    "conv3d_transpose",
    "conv2d_grad_bias",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_transpose",
    "coverage",
    "dilate_kernel",
    "effective_kernel_size",
    "get_config",
    "get_workspace_limit",
    "output_shape",
    "receptive_field",
    "same_padding",
    "set_config",
    "set_workspace_limit",
    "workspace_limit",
]
