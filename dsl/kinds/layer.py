"""Layer norm: y = (x - mean(x)) / sqrt(var(x) + eps). Its macros are in layer.jinja."""

from . import Kind

KIND = Kind(
    name="layer",
    noun="a layer norm",
    default_eps=1e-5,
    has_mean=True,
    formula="({v} - mean({v})) / sqrt(var({v}) + eps)",
    eps_added_to="variance",
    first_pass_sums="the row sums",
    statistics_passes=2,
)
