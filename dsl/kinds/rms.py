"""RMS norm: y = x / sqrt(mean(x^2) + eps). Its macros are in rms.jinja."""

from . import Kind, Refusal

KIND = Kind(
    name="rms",
    noun="an RMS norm",
    default_eps=1e-6,
    has_mean=False,
    formula="{v} / sqrt(mean({v}^2) + eps)",
    eps_added_to="mean square",
    first_pass_sums="the sums of squares",
    statistics_passes=1,
    refusals=(
        Refusal(
            "bias",
            lambda spec: spec.has_bias,
            "bias = shift needs norm = layer",
            "an RMS norm subtracts no mean; write `bias = none`",
        ),
    ),
)
