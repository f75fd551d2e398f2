"""The demo MLP's step composed from the registered kernel "demo.mlp_step".

The buffers are those of stepgraph::demo::mlp_step_spec (the kernel checks
their sizes against it when the launch is added).
"""

from ._stepgraph import Step, demo


def mlp_step(batch=64, inputs=16, hidden=32):
    """A Step training the demo MLP: inputs x (batch, inputs) and y (batch,),
    output loss (1,), state params, scratch for activations and gradients."""
    n = demo.param_count(batch, inputs, hidden)
    step = Step()
    step.input("x", (batch, inputs))
    step.input("y", (batch,))
    step.output("loss", (1,))
    step.state("params", (n,))
    step.scratch("grads", (n,))
    step.scratch("act", (batch, hidden))
    step.scratch("dact", (batch, hidden))
    step.scratch("out", (batch,))
    step.scratch("dout", (batch,))
    names = ["x", "y", "loss", "params", "grads", "act", "dact", "out", "dout"]
    step.launch("demo.mlp_step", {name: name for name in names},
                {"batch": batch, "inputs": inputs, "hidden": hidden}, node="mlp")
    return step
