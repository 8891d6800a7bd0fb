"""Neural-network building blocks for plugins: the conv contract and the small layers convs and heads share."""

from hydradgl.nn.contract import Conv, ConvTraits, Edges, FeatureType, NodeState, ScalarConv

__all__ = ["Conv", "ConvTraits", "Edges", "FeatureType", "NodeState", "ScalarConv"]
