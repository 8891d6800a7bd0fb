"""PNA convolution (Corso et al., "Principal Neighbourhood Aggregation for Graph Nets", NeurIPS 2020).

Same function as a PNA tower (pre-transform M on [h_src, h_dst, e], aggregators x degree scalers,
post-transform U on [h, aggregates]), computed with the kernel layer's fused reductions. M is linear, so
the message splits into a receiver term and a sender(+edge) term: m_ij = A_i + u_ij with
u_ij = B_j (+ C_ij). Then mean/min/max shift by A_i and std does not depend on it, so only u is
reduced: sums of u and u^2, and max of [u, -u] (the min is minus the max of -u). Without edge features
u lives on the nodes (copy_u), so no per-edge tensor is ever materialized. With edge features
(C_ij = W_e e_ij, e_ij the trunk's radial basis computed once per batch) the sums form u per edge (one
addmm); min and max take B alone (the node path: on CPU a per-edge max is expensive next to the rest
of the layer). With ``edge_features_in_extrema`` the max of [u, -u] runs fused over [B, -B] on the
nodes and the basis projected by [W_e; -W_e] (pna_fused.u_add_e_linear, whose backward pass forms no
per-edge gradient). With ``envelope`` (ours) every message is weighted by the cosine cutoff of its
distance and neighbours are counted by the same weights, so that the layer's output is continuous as
neighbours cross the cutoff (MD needs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from hydradgl import hookimpl
from hydradgl.errors import ConfigError
from hydradgl.nn import ConvTraits, Edges, ScalarConv
from hydradgl.nn.layers import mlp
from hydradgl.ops.pna_fused import u_add_e_linear, u_add_e_moments
from hydradgl.plugins import ConvContext, ConvSpec

Aggregator = Literal["mean", "min", "max", "std", "sum"]
# "linear" scales by d / mean training degree (PyG's DegreeScalerAggregation, which HydraGNN's PNA uses).
Scaler = Literal["identity", "amplification", "attenuation", "linear"]
STD_EPS = 1e-5


class PNAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aggregators: list[Aggregator] = Field(
        ["mean", "min", "max", "std"], min_length=1,
        description="Aggregations of each atom's incoming messages. With min or max the forces of a symmetric "
                    "structure lose its symmetry (docs/api.md), and envelope is refused.")
    scalers: list[Scaler] = Field(
        ["identity", "amplification", "attenuation"], min_length=1,
        description="Functions of the in-degree d each aggregate is scaled by: identity, amplification "
                    "log(d+1)/delta, attenuation delta/log(d+1) (delta: the mean of log(d+1) over the training "
                    "graphs), linear d / the mean training degree (as in PyG's DegreeScalerAggregation, which "
                    "HydraGNN's PNA uses).")
    towers: int = Field(1, ge=1, description="Independent towers over slices of the features.")
    use_edge_features: bool | None = Field(
        None, description="Feed the trunk's edge features (the radial basis of the distance) into the messages. "
        "Default: on whenever model.edge_features is not 'none'. False: the paper's PNA, where distance enters only "
        "through the radius graph (fine on a fixed lattice, blind to strain and displacements). True with "
        "model.edge_features 'none' is refused.")
    edge_features_in_extrema: bool = Field(
        False, description="With edge features, let the min and max aggregators see them too (a per-edge max): "
        "markedly slower training on CPU (benchmarks/RESULTS.md). Default: only mean, std and sum see them; min and "
        "max take the neighbours' features alone.")
    mixing: bool = Field(True, description="A final linear layer mixing the towers' outputs.")
    pre_layers: int = Field(1, ge=1, description="Layers of the message transform M (1: linear, computed on nodes; "
                                                 ">1: ReLU MLP evaluated per edge, slower).")
    post_layers: int = Field(1, ge=1, description="Layers of the update transform U (ReLU between them).")
    envelope: bool = Field(False, description="Weight each message by the cosine cutoff of its distance and count "
                                              "neighbours by the same weights (soft degree), so the energy stays "
                                              "continuous as neighbours cross the cutoff, as MD needs (docs/api.md). "
                                              "Needs aggregators without min and max, e.g. [mean, std, sum].")
    divide_input: bool = Field(True, description="Each tower sees its own slice of the input features "
                                                 "(False: every tower sees all of them).")

    @model_validator(mode="after")
    def _unique(self) -> PNAOptions:
        for key in ("aggregators", "scalers"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"{key} has repeated entries: {values}")
        if self.envelope and {"min", "max"} & set(self.aggregators):
            raise ValueError("envelope needs aggregators without min and max (a neighbour entering at the cutoff "
                             f"can set a max at once); got {self.aggregators}, e.g. use [mean, std, sum]")
        return self


def delta_from_histogram(histogram) -> float:
    """PNA's delta: mean of log(d + 1) over the training nodes' in-degrees."""
    hist = torch.as_tensor(histogram, dtype=torch.float64)
    if hist.sum() <= 0:
        return 1.0
    degrees = torch.arange(len(hist), dtype=torch.float64)
    return float((hist * torch.log(degrees + 1)).sum() / hist.sum())


def mean_degree(histogram) -> float:
    """Mean in-degree of the training nodes (the ``linear`` scaler's normalizer; 1 without statistics)."""
    hist = torch.as_tensor(histogram, dtype=torch.float64)
    return float((hist * torch.arange(len(hist))).sum() / hist.sum()) if hist.sum() > 0 and len(hist) > 1 else 1.0


class PNATower(nn.Module):
    """One tower: ``in_dim`` features in, ``out_dim`` out."""

    def __init__(self, in_dim: int, out_dim: int, edge_dim: int, aggregators: Sequence[str], scalers: Sequence[str],
                 pre_layers: int = 1, post_layers: int = 1, mean_degree: float = 1.0,
                 edge_features_in_extrema: bool = False):
        super().__init__()
        self.aggregators, self.scalers, self.mean_degree = aggregators, scalers, mean_degree
        self.edge_features_in_extrema = edge_features_in_extrema
        self.pre_dst = nn.Linear(in_dim, in_dim)  # M's block acting on the receiver (carries M's bias)
        self.pre_src = nn.Linear(in_dim, in_dim, bias=False)
        self.pre_edge = nn.Linear(edge_dim, in_dim, bias=False) if edge_dim else None
        # Layers of M after the first: nonlinear, so the message must then be formed on every edge.
        self.pre_rest = mlp(in_dim, [in_dim] * (pre_layers - 2), in_dim, "relu") if pre_layers > 1 else None
        post_in = (len(aggregators) * len(scalers) + 1) * in_dim
        self.post = mlp(post_in, [out_dim] * (post_layers - 1), out_dim, "relu") if post_layers > 1 \
            else nn.Linear(post_in, out_dim)
        self.need_sum = bool({"mean", "sum", "std"} & set(aggregators))
        self.need_max = bool({"min", "max"} & set(aggregators))

    @staticmethod
    def _node_max(graph, b: torch.Tensor) -> torch.Tensor:
        """Max of [B_j, -B_j] over neighbours (min = minus the second half): fused copy_u on the nodes."""
        return graph.copy_u(torch.cat([b, -b], dim=1), "max")

    def _reduce_nodes(self, graph, b: torch.Tensor, weights: torch.Tensor | None) -> dict:
        """Without edge features u_ij = B_j lives on the source nodes: fused copy_u, nothing per edge
        (with ``weights``, each edge's (E, 1) envelope, a fused u_mul_e)."""
        moments = torch.cat([b, b * b], dim=1)
        sums = graph.copy_u(moments, "sum") if weights is None else graph.u_mul_e(moments, weights, "sum")
        return {"sum": sums if self.need_sum else None, "max": self._node_max(graph, b) if self.need_max else None}

    def _reduce_edges(self, graph, b: torch.Tensor, edge_attr: torch.Tensor, weights: torch.Tensor | None) -> dict:
        """u_ij = B_j + W_e e_ij for the sums, formed per edge (one addmm; ``weights``: the edges' (E, 1)
        envelope, weighting the sums). The max of [u, -u] either
        sees B only (copy_u, nothing per edge) or, with ``edge_features_in_extrema``, runs fused on
        [B, -B] and the basis with weights [W_e; -W_e] (u_add_e_linear: no per-edge gradient)."""
        assert self.pre_edge is not None  # forward keeps edge_attr only with pre_edge
        w = self.pre_edge.weight
        max_in = None
        if self.need_max and self.edge_features_in_extrema:
            max_in = u_add_e_linear(graph, torch.cat([b, -b], dim=1), edge_attr, torch.cat([w, -w], dim=0), "max")
        elif self.need_max:
            max_in = self._node_max(graph, b)
        if not self.need_sum:
            return {"sum": None, "max": max_in}
        return {"sum": u_add_e_moments(graph, b, edge_attr, w, weights), "max": max_in}

    def _reduce_mlp(self, graph, b: torch.Tensor, a: torch.Tensor, edge_attr: torch.Tensor | None,
                    weights: torch.Tensor | None) -> dict:
        """pre_layers > 1: u_ij = pre_rest(relu(A_i + B_j (+ W_e e_ij))) is the whole message, per edge."""
        assert self.pre_rest is not None  # forward comes here only with pre_rest
        u = graph.u_add_v(b, a)
        if edge_attr is not None:
            assert self.pre_edge is not None  # forward keeps edge_attr only with pre_edge
            u = u + self.pre_edge(edge_attr)
        u = self.pre_rest(torch.relu(u))
        moments = torch.cat([u, u * u], dim=1)
        moments = moments if weights is None else moments * weights
        return {"sum": graph.reduce(moments, "sum") if self.need_sum else None,
                "max": graph.reduce(torch.cat([u, -u], dim=1), "max") if self.need_max else None}

    def forward(self, graph, h: torch.Tensor, edge_attr: torch.Tensor | None, degree: torch.Tensor,
                delta: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``degree`` (N,): in-degrees, or with ``weights`` (E, 1) (the envelope) the weighted ones."""
        a, b = self.pre_dst(h), self.pre_src(h)
        edge_attr = edge_attr if self.pre_edge is not None else None
        if self.pre_rest is not None:  # the receiver term is inside the per-edge message already
            reduced = self._reduce_mlp(graph, b, a, edge_attr, weights)
            a = torch.zeros_like(a)
        elif edge_attr is not None:
            reduced = self._reduce_edges(graph, b, edge_attr, weights)
        else:
            reduced = self._reduce_nodes(graph, b, weights)
        f = a.shape[1]
        deg = degree.clamp(min=1).unsqueeze(1)  # isolated atoms: zero aggregates (std: sqrt(eps)), finite scalers
        has_edges = (degree > 0).unsqueeze(1).to(h.dtype)
        # how much of the receiver term the mean keeps: all of it once an atom has neighbours; with weights
        # it fades with the weighted degree below 1, so that the mean goes to 0 smoothly as they leave
        presence = has_edges if weights is None else degree.unsqueeze(1).clamp(max=1)
        aggregates = []
        for name in self.aggregators:
            if name in ("mean", "std", "sum"):
                s, s2 = reduced["sum"][:, :f], reduced["sum"][:, f:]
                mean_u = s / deg
                if name == "mean":
                    aggregates.append(a * presence + mean_u)
                elif name == "sum":
                    aggregates.append(s + a * degree.unsqueeze(1))
                else:
                    aggregates.append(torch.sqrt(torch.relu(s2 / deg - mean_u * mean_u) + STD_EPS))
            elif name == "max":
                aggregates.append((a + reduced["max"][:, :f]) * has_edges)
            else:  # min
                aggregates.append((a - reduced["max"][:, f:]) * has_edges)
        agg = torch.cat(aggregates, dim=1)
        log_deg = torch.log(deg + 1)
        factors = {"identity": lambda: torch.ones_like(deg), "amplification": lambda: log_deg / delta,
                   "linear": lambda: deg / self.mean_degree, "attenuation": lambda: delta / log_deg}
        scales = [factors[name]() for name in self.scalers]  # each (N, 1); only the configured ones
        if isinstance(self.post, nn.Linear):
            return self._post_linear(self.post, h, agg, torch.cat(scales, dim=1))
        return self.post(torch.cat([h, *(agg * scale for scale in scales)], dim=1))

    @staticmethod
    def _post_linear(post: nn.Linear, h: torch.Tensor, agg: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """A linear U on [h, s_1 agg, ..., s_S agg] as U_h h + sum_s s (U_s agg): one product of agg with
        every U_s at once, then per-node weights s; no (N, (1 + S) * width) input is formed."""
        weight, width, n_scalers = post.weight, agg.shape[1], scales.shape[1]
        out_dim = weight.shape[0]
        per_scaler = weight[:, h.shape[1]:].reshape(out_dim, n_scalers, width).transpose(0, 1).reshape(-1, width)
        projected = (agg @ per_scaler.T).view(-1, n_scalers, out_dim)  # (N, S, out): U_s agg
        out = torch.addmm(post.bias, h, weight[:, :h.shape[1]].T)
        for k in range(n_scalers):  # in place, slice by slice: faster than a product and a sum over S
            out.addcmul_(projected[:, k], scales[:, k:k + 1])
        return out


class PNAConv(ScalarConv):
    r"""PNA layer: towers over feature slices, optionally mixed by a linear layer.

    Per tower, with messages :math:`m_{ij} = M [h_j, h_i, e_{ij}]` (:math:`e_{ij}` the trunk's edge
    features when ``use_edge_features``; :math:`M` linear, or an MLP with ``pre_layers`` > 1):

    .. math::
        h_i' = U\left[h_i,\ \bigoplus_{s \in S} \bigoplus_{a \in A} s(d_i)\, a_{j \in N(i)}(m_{ij})\right]

    with aggregators :math:`A` (mean, min, max, std, sum), degree scalers :math:`S` (identity,
    amplification :math:`\log(d+1)/\delta`, attenuation :math:`\delta/\log(d+1)`, :math:`\delta` the
    training set's mean of :math:`\log(d+1)`) and :math:`U` linear (or an MLP with ``post_layers`` > 1).
    An atom without neighbours aggregates 0. With edge features, a linear :math:`M` and
    ``edge_features_in_extrema`` off, min and max aggregate :math:`M [h_j, h_i, 0]`. With ``envelope``,
    sums, means and standard deviations are weighted by :math:`f_c(r_{ij})` (the cosine cutoff), the
    degree is :math:`d_i = \sum_j f_c(r_{ij})`, and the mean keeps :math:`\min(d_i, 1)` of the
    receiver term, so every aggregate goes to 0 smoothly as neighbours leave (min and max are refused).

    Args:
        in_dim: input node feature width.
        out_dim: output width.
        options: aggregators, scalers, towers, use_edge_features, edge_features_in_extrema, mixing,
            pre/post layers, divide_input, envelope.
        context: edge feature width, the training in-degree histogram, and the norm and activation
            applied to the layer's output (:class:`~hydradgl.nn.ScalarConv`).

    Shapes:
        node features (N, in_dim), edge features (E, edge_dim) or None [, envelope (E,)] -> (N, out_dim).
    """

    traits = ConvTraits(reads_edge_features=True, needs_geometry=True, smooth_at_cutoff=True, uses_extrema=True,
                        kernels=("dgl", "torch"))

    def __init__(self, in_dim: int, out_dim: int, options: PNAOptions, context: ConvContext):
        super().__init__(out_dim, context.norm, context.activation)
        towers = options.towers
        if (options.divide_input and in_dim % towers) or out_dim % towers:
            raise ConfigError(f"model.conv_options.towers = {towers} must divide the layer widths "
                              f"({in_dim}, {out_dim})")
        if options.use_edge_features and context.edge_dim <= 0:
            raise ConfigError("pna: model.conv_options.use_edge_features is true but model.edge_features is 'none'; "
                              "set model.edge_features to 'gaussian' or model.conv_options.use_edge_features to false")
        edge_dim = context.edge_dim if options.use_edge_features is not False else 0
        # with the envelope every message fades out at the cutoff; min/max pick one neighbour: at a
        # symmetric configuration, one of several equivalent ones
        self.traits = type(self).traits.narrowed(
            reads_edge_features=edge_dim > 0, needs_geometry=options.envelope, smooth_at_cutoff=options.envelope,
            uses_extrema=bool({"min", "max"} & set(options.aggregators)))
        self.divide_input = options.divide_input
        tower_in = in_dim // towers if options.divide_input else in_dim
        hist = context.degree_histogram if context.degree_histogram is not None else [0, 1]
        self.towers = nn.ModuleList(
            PNATower(tower_in, out_dim // towers, edge_dim, options.aggregators, options.scalers,
                     options.pre_layers, options.post_layers, mean_degree(hist), options.edge_features_in_extrema)
            for _ in range(towers))
        self.mixing = nn.Linear(out_dim, out_dim) if options.mixing else None
        # Saved with the model: the scalers must see the training set's delta after a restore.
        self.register_buffer("delta", torch.tensor(delta_from_histogram(hist)))

    def update(self, graph, h: torch.Tensor, edges: Edges) -> torch.Tensor:
        weights = None
        if self.traits.smooth_at_cutoff:
            weights = edges.envelope.to(h.dtype).unsqueeze(1)
            degree = graph.reduce(weights, "sum").squeeze(1)
        else:
            degree = graph.in_degrees().to(h.dtype)
        edge_attr = edges.attr if self.traits.reads_edge_features else None
        slices = h.chunk(len(self.towers), dim=1) if self.divide_input else [h] * len(self.towers)
        out = torch.cat([tower(graph, x, edge_attr, degree, self.delta, weights)
                         for tower, x in zip(self.towers, slices)], dim=1)
        return self.mixing(out) if self.mixing is not None else out


def make_pna(in_dim: int, out_dim: int, options: PNAOptions, context: ConvContext) -> PNAConv:
    return PNAConv(in_dim, out_dim, options, context)


@hookimpl
def register_convs(register):
    register(ConvSpec(name="pna", description="Principal Neighbourhood Aggregation on fused gather-reduce kernels",
                      options=PNAOptions, factory=make_pna, module=PNAConv))
