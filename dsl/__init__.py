"""normgen's generator: spec files in, Triton kernels and their launchers out.

One module per pipeline stage, in order:

    parse    text -> syntax tree (Lark, ``grammar.lark``)
    resolve  syntax tree -> NormSpec (frozen model, see ``model``)
    check    NormSpec -> errors for contradictions
    plan     NormSpec x target -> KernelPlan (kernels, their ``abi``, the dispatch table
             from the target's rules in ``targets/``); ``op_view`` for the op module
    render   KernelPlan -> text (Jinja2 templates under ``dsl/templates/``)
    emit     text -> files under ``generated/`` (the only stage that writes)

``pipeline`` strings the stages together and reads the tuning file; ``surface``
(the op surface an op module's descriptor drives, with ``modules``, ``fast_path``
and ``custom_ops``), ``checks`` (input checks), ``backward`` and ``compiled``,
``runtime`` (the launcher, with ``dispatch`` and ``launch_layout``), ``abi`` (the
kernels' parameters) and ``device`` (shared ``@triton.jit`` helpers) are what the
generated code imports at run time (none of them imports the generator);
``hf`` swaps a model's norm layers (Hugging Face transformers or any nn.Module
tree) for the generated modules.
"""
