"""Put a replacement subgraph into a model graph in place of one attention site."""
from __future__ import annotations

import onnx_ir as ir


def splice(graph: ir.Graph, sub: ir.Graph, inputs: list[ir.Value], old_output: ir.Value, prefix: str) -> ir.Value:
    """Wire ``sub``'s inputs to ``inputs``, insert its nodes before ``old_output``'s producer, reroute
    every use of ``old_output`` to ``sub``'s output, and return that output. The old nodes become dead.

    Names of moved nodes, values and initializers get ``prefix`` so that sites never collide.
    """
    for sub_input, value in zip(sub.inputs, inputs):
        ir.convenience.replace_all_uses_with(sub_input, value)
    for name in list(sub.initializers):
        init = sub.initializers.pop(name)
        init.name = prefix + name
        graph.register_initializer(init)
    nodes = list(sub)
    for node in nodes:
        sub.remove(node)
        node.name = prefix + (node.name or node.op_type)
        for out in node.outputs:
            out.name = prefix + (out.name or "out")
    new_output = sub.outputs.pop()
    graph.insert_before(old_output.producer(), nodes)
    ir.convenience.replace_all_uses_with(old_output, new_output)
    for i, out in enumerate(graph.outputs):
        if out is old_output:  # a graph output keeps its public name
            name = old_output.name
            old_output.name = prefix + "replaced"
            new_output.name = name
            graph.outputs[i] = new_output
    return new_output
