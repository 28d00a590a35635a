"""Op-level profile of a TFLite model in LiteRT: where each op ran (XNNPACK or LiteRT's own kernels) and its time.

LiteRT's Python package (ai-edge-litert 2.x) exposes no op profiler (its C++ profiler and
the `benchmark_model --enable_op_profiling` tool are not on PyPI), so this is measured in
Python, in two parts:

- Placement, exact: the model is loaded as for inference (default XNNPACK delegate on).
  LiteRT lists every original op and, after them, one DELEGATE node per XNNPACK partition.
  Each partition's ops are found by walking the graph back from the DELEGATE node's output
  tensors to its input tensors; an op in no partition ran on LiteRT's builtin (reference or
  optimised) kernel. A partition boundary costs a hand-over between the two runtimes.
- Time, per op: each op is cut out of the flatbuffer into a one-op model (its constant
  inputs kept, its other inputs fed with random values of their type and quantisation) and
  timed alone in its own interpreter, with the same thread count and delegate; all one-op
  models are timed interleaved in rounds (see lightcnn.latency) and each op's figure is
  its median. A delegated op alone pays XNNPACK's per-call overhead that it shares with
  its partition in the whole graph, and every figure includes Python's invoke() call (a few
  microseconds), so the sum of the ops exceeds the whole graph's time; both are reported.
"""
from __future__ import annotations

import copy
import os
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from lightcnn.latency import cpu_info, litert_version, summarise

DELEGATE_OP = "DELEGATE"


def _read_bytes(tflite_model: str | os.PathLike | bytes) -> bytes:
    if isinstance(tflite_model, (bytes, bytearray)):
        data = bytes(tflite_model)
    else:
        if not Path(tflite_model).is_file():
            raise FileNotFoundError(f"TFLite model not found: {tflite_model}")
        data = Path(tflite_model).read_bytes()
    if data[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no 'TFL3' identifier); pass a .tflite file or its bytes")
    return data


def _interpreter(data: bytes, threads: int, delegate: bool = True):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=data, num_threads=threads, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


def placement(tflite_model: str | os.PathLike | bytes, threads: int = 1) -> dict:
    """Where each op of a TFLite model runs in LiteRT with its default XNNPACK delegate.

    Returns {"partitions": number of XNNPACK partitions, "ops": [{index, op, dtype (of its
    first output), output_shape, delegated, partition (0-based, None when not delegated)}]}
    in the model's op order.
    """
    interpreter = _interpreter(_read_bytes(tflite_model), threads)
    nodes = interpreter._get_ops_details()
    original = [node for node in nodes if node["op_name"] != DELEGATE_OP]
    delegates = [node for node in nodes if node["op_name"] == DELEGATE_OP]
    producer = {int(tensor): node["index"] for node in original for tensor in node["outputs"] if tensor >= 0}
    partition_of: dict[int, int] = {}
    for partition, delegate in enumerate(delegates):
        boundary = {int(tensor) for tensor in delegate["inputs"]}
        pending = [int(tensor) for tensor in delegate["outputs"]]
        while pending:
            tensor = pending.pop()
            if tensor in boundary or tensor not in producer or producer[tensor] in partition_of:
                continue
            node = producer[tensor]
            partition_of[node] = partition
            pending.extend(int(t) for t in nodes[node]["inputs"] if t >= 0)
    ops = []
    for node in original:
        first_output = next((int(t) for t in node["outputs"] if t >= 0), None)
        details = interpreter._get_tensor_details(first_output, 0) if first_output is not None else None
        ops.append({
            "index": node["index"], "op": node["op_name"],
            "dtype": np.dtype(details["dtype"]).name if details else None,
            "output_shape": [int(d) for d in details["shape"]] if details else [],
            "delegated": node["index"] in partition_of, "partition": partition_of.get(node["index"]),
        })
    return {"partitions": len(delegates), "ops": ops}


def _constant_ops(model) -> dict[int, int]:
    """{output tensor: op index} of ops whose inputs are all constants (float16 weights' DEQUANTIZE).

    XNNPACK reads such ops' outputs as static weights, computed once when the model loads;
    alone, without the op that uses them, they cannot run in XNNPACK at all.
    """
    subgraph = model.subgraphs[0]

    def constant(tensor: int) -> bool:
        data = model.buffers[subgraph.tensors[tensor].buffer].data
        return data is not None and len(data) > 0

    return {int(out): index for index, op in enumerate(subgraph.operators)
            if len(op.inputs) and all(t >= 0 and constant(int(t)) for t in op.inputs)
            for out in op.outputs if out >= 0}


def _one_op_model(model, op_index: int, constant_ops: dict[int, int]) -> bytes:
    """A TFLite flatbuffer holding op `op_index` of subgraph 0 alone: its constant inputs kept,
    and the constant ops (see _constant_ops) that make its weights kept before it."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    subgraph = model.subgraphs[0]
    op = copy.copy(subgraph.operators[op_index])
    prelude = [copy.copy(subgraph.operators[constant_ops[int(t)]]) for t in op.inputs if int(t) in constant_ops]
    used = list(dict.fromkeys(int(t) for o in prelude for t in [*o.inputs, *o.outputs] if t >= 0))
    used += [t for t in dict.fromkeys(int(t) for t in [*op.inputs, *op.outputs, *(op.intermediates or [])]
                                      if t >= 0) if t not in used]
    made_inside = {int(t) for o in prelude for t in o.outputs}
    buffers, tensors, remap, graph_inputs = [schema.BufferT()], [], {}, []
    for old in used:
        tensor = copy.copy(subgraph.tensors[old])
        data = model.buffers[tensor.buffer].data
        if data is not None and len(data):
            buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(buffers) - 1
        else:
            buffers.append(schema.BufferT())  # each runtime tensor its own empty buffer, as the converter does
            tensor.buffer = len(buffers) - 1
            if old in op.inputs and old not in made_inside:
                graph_inputs.append(len(tensors))
        remap[old] = len(tensors)
        tensors.append(tensor)
    for each in [*prelude, op]:
        each.inputs = [remap[int(t)] if t >= 0 else -1 for t in each.inputs]
        each.outputs = [remap[int(t)] for t in each.outputs if t >= 0]
    if op.intermediates is not None:
        op.intermediates = [remap[int(t)] for t in op.intermediates if t >= 0]
    single = schema.SubGraphT()
    single.tensors, single.inputs, single.outputs = tensors, graph_inputs, op.outputs
    single.operators = [*prelude, op]
    single.name = f"op{op_index}"
    lone = schema.ModelT()
    lone.version, lone.operatorCodes, lone.description = model.version, model.operatorCodes, "one op"
    lone.subgraphs, lone.buffers = [single], buffers
    return bytes(flatbuffer_utils.convert_object_to_bytearray(lone))


def _fill_inputs(interpreter, rng: np.random.Generator) -> None:
    for detail in interpreter.get_input_details():
        dtype, shape = np.dtype(detail["dtype"]), detail["shape"]
        if dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            value = rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
        else:
            value = np.zeros(shape, dtype)
        interpreter.set_tensor(detail["index"], value)


def op_profile(tflite_model: str | os.PathLike | bytes, threads: int = 1, rounds: int = 20,
               runs_per_round: int = 5, warmup: int = 5, seed: int = 0) -> dict:
    """Per-op time and placement of a TFLite model in LiteRT (see the module docstring for the method).

    Returns {"context": {cpu, vector_extensions, litert_version, threads, rounds,
    runs_per_round, method}, "partitions", "whole_graph": {median_ms, p90_ms, ...} (the model
    timed as a whole, interleaved with its ops), "sum_of_ops_ms", "ops": [{index, op, dtype,
    output_shape, delegated, partition, median_us, p90_us}], "by_op": [{op, dtype, where,
    count, total_us, share}] sorted by total time}. Ops with constant inputs only (the
    DEQUANTIZE of float16 weights, which XNNPACK computes once at load) and any op that
    cannot run alone have median_us None and a "note" saying why.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    for name, value, smallest in (("threads", threads, 1), ("rounds", rounds, 2),
                                  ("runs_per_round", runs_per_round, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ValueError(f"{name} must be an integer >= {smallest}, got {value!r}")
    data = _read_bytes(tflite_model)
    placed = placement(data, threads)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    if len(model.subgraphs) != 1:
        raise ValueError(f"op_profile handles single-subgraph models, this one has {len(model.subgraphs)}")
    if len(model.subgraphs[0].operators) != len(placed["ops"]) or any(
            op["index"] != position for position, op in enumerate(placed["ops"])):
        raise RuntimeError("LiteRT's op list and the flatbuffer's differ in length; cannot match ops to times")

    rng = np.random.default_rng(seed)
    whole = _interpreter(data, threads)
    _fill_inputs(whole, rng)
    timed, notes = [("whole", whole)], {}
    constant_ops = _constant_ops(model)
    for op in placed["ops"]:
        if op["index"] in constant_ops.values():
            notes[op["index"]] = "constant: computed once when the model loads (not timed)"
            continue
        try:
            interpreter = _interpreter(_one_op_model(model, op["index"], constant_ops), threads)
            _fill_inputs(interpreter, rng)
            interpreter.invoke()
        except (RuntimeError, ValueError) as error:  # reported with the op, not fatal to the profile
            notes[op["index"]] = f"could not run alone: {error}"
            continue
        timed.append((op["index"], interpreter))
    times = {key: np.empty((rounds, runs_per_round)) for key, _ in timed}
    for _, interpreter in timed:
        for _ in range(warmup):
            interpreter.invoke()
    order, shuffler = list(range(len(timed))), random.Random(seed)
    for round_index in range(rounds):
        shuffler.shuffle(order)
        for position in order:
            key, interpreter = timed[position]
            row = times[key][round_index]
            for run in range(runs_per_round):
                start = time.perf_counter_ns()
                interpreter.invoke()
                row[run] = (time.perf_counter_ns() - start) / 1e6

    ops = []
    for op in placed["ops"]:
        if op["index"] in times:
            flat = times[op["index"]].ravel() * 1000
            ops.append({**op, "median_us": float(np.median(flat)), "p90_us": float(np.percentile(flat, 90))})
        else:
            ops.append({**op, "median_us": None, "p90_us": None, "note": notes[op["index"]]})
    groups: dict[tuple, dict] = defaultdict(lambda: {"count": 0, "total_us": 0.0})
    for op in ops:
        group = groups[(op["op"], op["dtype"], "XNNPACK" if op["delegated"] else "LiteRT builtin")]
        group["count"] += 1
        group["total_us"] += op["median_us"] or 0.0
    sum_us = sum(op["median_us"] or 0.0 for op in ops)
    by_op = sorted(({"op": op, "dtype": dtype, "where": where, "count": group["count"],
                     "total_us": group["total_us"], "share": group["total_us"] / sum_us if sum_us else 0.0}
                    for (op, dtype, where), group in groups.items()), key=lambda row: -row["total_us"])
    cpu = cpu_info()
    return {
        "context": {"cpu": cpu["model_name"], "vector_extensions": cpu["vector_extensions"],
                    "litert_version": litert_version(), "threads": threads, "rounds": rounds,
                    "runs_per_round": runs_per_round,
                    "method": "placement from LiteRT's DELEGATE nodes; each op timed alone as a one-op model "
                              "(same delegate and threads), interleaved with the whole model; medians"},
        "partitions": placed["partitions"],
        "whole_graph": summarise(times["whole"], seed),
        "sum_of_ops_ms": sum_us / 1000,
        "ops": ops,
        "by_op": by_op,
    }


def profile_markdown(profile: dict, title: str = "", top: int = 12) -> str:
    """A short Markdown summary of op_profile's result: placement, then time by op type."""
    ops = profile["ops"]
    fallback = [op for op in ops if not op["delegated"]]
    lines = [f"**{title}**" if title else "",
             f"{len(ops)} ops, {len(ops) - len(fallback)} in XNNPACK ({profile['partitions']} partition"
             f"{'s' if profile['partitions'] != 1 else ''}), {len(fallback)} on LiteRT's builtin kernels; "
             f"whole graph {profile['whole_graph']['median_ms']:.3f} ms (median), sum of ops timed alone "
             f"{profile['sum_of_ops_ms']:.3f} ms; {profile['context']['threads']} thread(s).", "",
             "| op | dtype | ran in | count | time (us, sum of medians) | share |",
             "|---|---|---|---:|---:|---:|"]
    for row in profile["by_op"][:top]:
        lines.append(f"| {row['op']} | {row['dtype']} | {row['where']} | {row['count']} | "
                     f"{row['total_us']:.1f} | {row['share']:.0%} |")
    if len(profile["by_op"]) > top:
        lines.append(f"| ({len(profile['by_op']) - top} more op types) | | | | | |")
    return "\n".join(line for line in lines if line is not None) + "\n"


def profiles_summary_markdown(profiles: dict[tuple[str, str, int], dict]) -> str:
    """One table over several op_profile results, keyed (model, variant, threads): op count,
    placement, whole-graph time, the sum of the ops timed alone and the median op's time.
    Beside each other, the thread counts show what a second thread buys each op."""
    lines = ["| model | variant | threads | ops | in XNNPACK | partitions | whole graph (ms) | "
             "sum of ops alone (ms) | median op (us) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (model, variant, threads), profile in profiles.items():
        ops = profile["ops"]
        timed = [op["median_us"] for op in ops if op["median_us"] is not None]
        median_op = f"{float(np.median(timed)):.1f}" if timed else "n/a"
        lines.append(f"| {model} | {variant} | {threads} | {len(ops)} | {sum(op['delegated'] for op in ops)} | "
                     f"{profile['partitions']} | {profile['whole_graph']['median_ms']:.3f} | "
                     f"{profile['sum_of_ops_ms']:.3f} | {median_op} |")
    return "\n".join(lines) + "\n"
