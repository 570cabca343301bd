"""A canonical encoding of an ONNX graph: the same model gives the same bytes.

tf2onnx names the tensors its optimiser folds, orders some nodes and picks which of two equal loop
outputs an Identity copies from nondeterministically (measured: four exports of one Keras GRU gave
four different files). Renaming every internal value by definition order (constants by content),
sorting nodes topologically with ties broken by name, numbering symbolic dimensions by first
appearance, and one tie rule for equal outputs makes
the file a function of the model, so DVC sees an unchanged export as unchanged. Graph inputs and
outputs keep their names; the computation is untouched.
"""
from __future__ import annotations

import hashlib
import heapq

import onnx


def _subgraphs(node: onnx.NodeProto):
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        yield from attribute.graphs


def _referenced(node):
    """Names a node's subgraphs read, outer-scope values included."""
    for sub in _subgraphs(node):
        for inner in sub.node:
            yield from inner.input
            yield from _referenced(inner)


def _lowest_output_first(graph):
    """An Identity copying one graph output to another: the producer writes the lower-indexed one
    (exporters pick either at random; the values are equal)."""
    position = {value.name: i for i, value in enumerate(graph.output)}
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in position and node.output[0] in position \
                and position[node.output[0]] < position[node.input[0]]:
            source, copy = node.input[0], node.output[0]
            swap = {source: copy, copy: source}
            for other in graph.node:
                other.input[:] = [swap.get(n, n) for n in other.input]
                other.output[:] = [swap.get(n, n) for n in other.output]


def canonical_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rename, reorder and tie-break ``model`` in place (see the module docstring); returns it."""
    top = model.graph
    keep = {v.name for v in (*top.input, *top.output)}
    names: dict[str, str] = {}
    counter = [0]

    def define(name: str, new: str) -> None:
        if name and name not in keep and name not in names:
            names[name] = new

    def fresh(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}v{counter[0]}"

    def walk(graph: onnx.GraphProto, scope: str) -> None:
        _lowest_output_first(graph)
        seen: dict[str, int] = {}
        for init in sorted(graph.initializer, key=lambda t: t.SerializeToString().replace(t.name.encode(), b"")):
            digest = hashlib.sha256(onnx.numpy_helper.to_array(init).tobytes() + str(init.data_type).encode()).hexdigest()[:16]
            seen[digest] = seen.get(digest, -1) + 1
            define(init.name, f"{scope}const_{digest}_{seen[digest]}")
        for i, value in enumerate(graph.input):
            define(value.name, f"{scope}in{i}")
        for i, value in enumerate(graph.output):
            define(value.name, f"{scope}out{i}")
        for node in graph.node:
            for sub in _subgraphs(node):
                counter[0] += 1
                walk(sub, f"{scope}g{counter[0]}_")
            for output in node.output:
                if output and output not in keep and output not in names:
                    define(output, fresh(scope))

    def rename(graph: onnx.GraphProto, scope: str) -> None:
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            value.name = names.get(value.name, value.name)
        graph.initializer.sort(key=lambda t: t.name)
        if scope:
            graph.name = scope.rstrip("_")
        for node in graph.node:
            node.input[:] = [names.get(n, n) for n in node.input]
            node.output[:] = [names.get(n, n) for n in node.output]
            node.name = f"{node.op_type}_{node.output[0]}" if node.output else node.op_type
            if not node.domain:
                node.ClearField("domain")
            for i, sub in enumerate(_subgraphs(node)):
                rename(sub, f"{node.name}_body{i}_")
        # A stable topological order: ties broken by the (canonical) node name.
        nodes = list(graph.node)
        produced = {out: i for i, n in enumerate(nodes) for out in n.output}
        deps = [{produced[x] for x in (*n.input, *_referenced(n)) if x in produced} for n in nodes]
        users = [[] for _ in nodes]
        for i, d in enumerate(deps):
            for j in d:
                users[j].append(i)
        waiting = [len(d) for d in deps]
        ready = [(nodes[i].name, i) for i in range(len(nodes)) if not waiting[i]]
        heapq.heapify(ready)
        order = []
        while ready:
            _, i = heapq.heappop(ready)
            order.append(nodes[i])
            for j in users[i]:
                waiting[j] -= 1
                if not waiting[j]:
                    heapq.heappush(ready, (nodes[j].name, j))
        copies = [onnx.NodeProto() for _ in order]
        for copy, node in zip(copies, order):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)

    walk(top, "")
    rename(top, "")
    _number_symbolic_dims(top, {})
    return model


def _number_symbolic_dims(graph: onnx.GraphProto, symbols: dict[str, str]) -> None:
    """tf2onnx names unknown dimensions from a process-wide counter (``unk__686``): number them by
    first appearance instead (``dim0``...), keeping equal names equal."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = symbols.setdefault(dim.dim_param, f"dim{len(symbols)}")
    for node in graph.node:
        for sub in _subgraphs(node):
            _number_symbolic_dims(sub, symbols)
